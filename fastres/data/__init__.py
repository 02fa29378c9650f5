"""fastres.data: ImageNet-layout datasets, the built-in dataset, the check, and the loaders (DALI, PIL,
synthetic); imports no other fastres package. `python -m fastres.data` is its command (check, shard).

A run opens its dataset once (`open_dataset`: lists the files), checks it (`check_dataset`),
then makes its loaders (`make_loaders(..., dataset=)`) from the same listing. Files that fail to
decode during training are substituted and reported (fastres/data/bad.py, `take_new_bad` on the
loaders).
"""

from fastres.data.bad import BAD_LIST, append_bad_list, max_bad_default, read_bad_list
from fastres.data.dataset import CHECK_DEPTHS, Dataset, check_dataset, open_dataset, train_steps
from fastres.data.folder import DatasetError, FolderSplit, scan_imagenet, scan_split
from fastres.data.loader import BACKENDS, Loaders, make_loaders

__all__ = [
    "BACKENDS",
    "BAD_LIST",
    "CHECK_DEPTHS",
    "Dataset",
    "DatasetError",
    "FolderSplit",
    "Loaders",
    "append_bad_list",
    "check_dataset",
    "make_loaders",
    "max_bad_default",
    "open_dataset",
    "read_bad_list",
    "scan_imagenet",
    "scan_split",
    "train_steps",
]
