"""fastres's data layer: ImageNet-layout datasets, the built-in dataset, the check, and the loaders.

The data layer knows nothing of models or optimizers. A run opens its dataset once
(`open_dataset`: lists the files), checks it (`check_dataset`), then makes its loaders
(`make_loaders(..., dataset=)`) from the same listing.
"""

from fastres.data.dataset import CHECK_DEPTHS, Dataset, check_dataset, open_dataset, train_steps
from fastres.data.folder import DatasetError, FolderSplit, scan_imagenet, scan_split
from fastres.data.loader import BACKENDS, Loaders, make_loaders

__all__ = [
    "BACKENDS",
    "CHECK_DEPTHS",
    "Dataset",
    "DatasetError",
    "FolderSplit",
    "Loaders",
    "check_dataset",
    "make_loaders",
    "open_dataset",
    "scan_imagenet",
    "scan_split",
    "train_steps",
]
