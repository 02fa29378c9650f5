"""fastres: train ResNet-50 on ImageNet-style data as fast as the hardware allows.

The folder tree is the layer diagram (docs/design.md, "Layers"): at the top the commands
(`python -m fastres.train`, `.eval`, `.predict`, `.export`, `.doctor`, `.report`, `.plan`,
`.data`) and the config; below them one package per layer, each importing only the layers
below it (tests/test_layers.py).

Importing `fastres` is cheap and needs no GPU, driver or native extension: the native
kernels (`fastres._C`) are reached only through `fastres.kernels.ops`, which reports a
missing build when a kernel is first needed.
"""

import argparse
import difflib
import typing

__version__ = "0.1.0"

IMAGENET_TRAIN_IMAGES = 1_281_167  # ILSVRC-2012's training set: the images of an ImageNet epoch


class FastresError(Exception):
    """A problem with the user's input (a flag, a file, a dataset) that fastres can name.

    The command-line entry points print it as one line and exit with status 2, without a
    traceback; everything else is a bug and keeps its traceback. `shared`: every rank of a
    job meets the same error (a flag, the dataset, a checkpoint), so only rank 0 prints it.
    """

    shared = False


class ArgumentParser(argparse.ArgumentParser):
    """Every fastres command's flag parser: a usage error is one line naming the flag, with exit
    status 2; long flags are never abbreviated (`--epoch 3` is not taken for `--epochs`); an
    unknown flag gets the nearest known ones ("did you mean --epochs?")."""

    def __init__(self, *args, **kw):
        kw["allow_abbrev"] = False
        super().__init__(*args, **kw)

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_args(self, args=None, namespace=None):
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}{self.suggest(extras)}")
        return ns

    def suggest(self, extras: list[str]) -> str:
        """'; did you mean --epochs?' for the first unknown long flag close to a known one (subcommands' too)."""
        subs = [a.choices.values() for a in self._actions if isinstance(a, argparse._SubParsersAction)]
        parsers = [self, *(p for group in subs for p in group)]
        known = sorted({s for p in parsers for a in p._actions for s in a.option_strings if s.startswith("--")})
        for arg in extras:
            if arg.startswith("--"):
                close = difflib.get_close_matches(arg.split("=", 1)[0], known, n=2, cutoff=0.6)
                if close:
                    return f"; did you mean {' or '.join(close)}?"
        return ""
