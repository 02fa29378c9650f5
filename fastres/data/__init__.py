"""fastres's data layer: ImageNet-layout datasets, the built-in dataset, and the loaders.

The data layer knows nothing of models or optimizers; `make_loaders` is its entry point.
"""

from fastres.data.folder import DatasetError, FolderSplit, scan_imagenet, scan_split
from fastres.data.loader import BACKENDS, Loaders, make_loaders

__all__ = ["DatasetError", "FolderSplit", "scan_imagenet", "scan_split", "BACKENDS", "Loaders", "make_loaders"]
