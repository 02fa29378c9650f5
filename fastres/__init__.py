"""fastres: train ResNet-50 on ImageNet-style data as fast as the hardware allows.

The folder tree is the layer diagram (docs/design.md, "Layers"): at the top the commands
(`python -m fastres.train`, `.eval`, `.predict`, `.export`, `.doctor`, `.report`, `.plan`,
`.data`) and the config; below them one package per layer, each importing only the layers
below it (tests/test_layers.py).

Importing `fastres` is cheap and needs no GPU, driver or native extension: the native
kernels (`fastres._C`) are reached only through `fastres.kernels.ops`, which reports a
missing build when a kernel is first needed.
"""

import importlib
import importlib.abc
import importlib.util

__version__ = "0.1.0"


class FastresError(Exception):
    """A problem with the user's input (a flag, a file, a dataset) that fastres can name.

    The command-line entry points print it as one line and exit with status 2, without a
    traceback; everything else is a bug and keeps its traceback. `shared`: every rank of a
    job meets the same error (a flag, the dataset, a checkpoint), so only rank 0 prints it.
    """

    shared = False


# Import paths that earlier releases documented, kept working after their modules moved into
# the layer packages: `import fastres.flat` gives fastres.kernels.flat itself (the same module
# object, so isinstance checks and monkeypatching agree). fastres's own code uses the new paths.
MOVED = {
    "fastres.ops": "fastres.kernels.ops",
    "fastres.flat": "fastres.kernels.flat",
    "fastres.amp": "fastres.optim.amp",
    "fastres.bn": "fastres.model.bn",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])
        self.spec = module.__spec__  # importlib sets the alias's spec on it next: exec_module puts it back
        return module

    def exec_module(self, module):
        module.__spec__ = self.spec  # nothing to run: the module at its new place is already executed


import sys as _sys  # noqa: E402

if not any(isinstance(f, _MovedModules) for f in _sys.meta_path):
    _sys.meta_path.append(_MovedModules())
