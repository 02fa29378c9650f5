"""fastres: train ResNet-50 on ImageNet-style data as fast as the hardware allows.

Importing `fastres` is cheap and needs no GPU, driver or native extension: the native
kernels (`fastres._C`) are reached only through `fastres.ops`, which reports a missing
build when a kernel is first needed.
"""

__version__ = "0.1.0"


class FastresError(Exception):
    """A problem with the user's input (a flag, a file, a dataset) that fastres can name.

    The command-line entry points print it as one line and exit with status 2, without a
    traceback; everything else is a bug and keeps its traceback. `shared`: every rank of a
    job meets the same error (a flag, the dataset, a checkpoint), so only rank 0 prints it.
    """

    shared = False
