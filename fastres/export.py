"""Export a trained model for other frameworks: `python -m fastres.export CHECKPOINT --format F OUT`.

    python -m fastres.export runs/resnet50-20261123-101500 --format torchvision resnet50.pth
    python -m fastres.export runs/resnet50-20261123-101500 --best --format onnx resnet50.onnx
    python -m fastres.export runs/r/checkpoints/step-000450450.pt --format torchscript resnet50.ts

Formats:
  torchvision  the model's state_dict alone (tensors only: torch.load(OUT, weights_only=True) reads it).
               fastres's keys are torchvision's, so
                   m = torchvision.models.resnet50(num_classes=N); m.load_state_dict(torch.load(OUT))
               gives the same outputs, bit for bit.
  torchscript  the model traced with torch.jit.trace (torch.jit.load(OUT) runs it without fastres).
               PyTorch has deprecated TorchScript; for new uses prefer torchvision or onnx.
  onnx         one ONNX file (torch.onnx's exporter), input `images` (N, 3, S, S) float32, output
               `logits` (N, classes), any batch size N. Needs the onnx and onnxscript packages
               (pip install fastres[onnx]).

Beside OUT goes OUT.json: the architecture, the class names in label order, and the input
the model expects (crop size S, resize, RGB mean and std), which another framework needs to
feed it. Every export is checked before the command returns: the written file is loaded
back and run on a batch, and its outputs are compared with PyTorch's (ONNX with onnxruntime
where it is installed, else with onnx's checker only; say which).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fastres import FastresError
from fastres.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from fastres.model import build_model
from fastres.tools.cli import ToolParser, run_tool
from fastres.tools.loading import Loaded, load_model

__all__ = ["FORMATS", "ExportResult", "export", "main"]

FORMATS = ("torchvision", "torchscript", "onnx")


@dataclass
class ExportResult:
    path: Path
    sidecar: Path  # OUT.json
    max_abs_diff: float | None  # largest |exported - PyTorch| over the check batch; None: outputs not compared
    checked: str  # how the export was checked, in words


def _atomic(out: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) into a temporary file beside `out`, then rename it over `out`: never half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; an export is meant to be shared
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_batch(size: int, n: int = 2) -> torch.Tensor:
    # normalised images are roughly N(0, 1); a fixed seed makes the check repeatable
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def _torchvision(loaded: Loaded, out: Path, check: torch.Tensor, ref: torch.Tensor) -> tuple[float, str]:
    weights = {k: v.detach().cpu().contiguous().clone() for k, v in loaded.model.state_dict().items()}
    _atomic(out, lambda tmp: torch.save(weights, tmp))
    fresh = build_model(loaded.arch, len(loaded.classes)).eval()
    fresh.load_state_dict(torch.load(out, map_location="cpu", weights_only=True))
    with torch.inference_mode():
        got = fresh(check)
    if not torch.equal(got, ref):
        raise FastresError(f"{out}: the reloaded weights give other outputs (max difference {_diff(got, ref):.3g})")
    return 0.0, "reloaded into a fresh model: identical outputs"


def _torchscript(loaded: Loaded, out: Path, check: torch.Tensor, ref: torch.Tensor) -> tuple[float, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript's deprecation, said in --help instead
        with torch.no_grad():
            traced = torch.jit.trace(loaded.model, check)
        _atomic(out, lambda tmp: traced.save(str(tmp)))
        reloaded = torch.jit.load(str(out), map_location="cpu")
        with torch.inference_mode():
            got = reloaded(_check_batch(check.shape[-1], 3))  # another batch size than the traced one
            want = loaded.model(_check_batch(check.shape[-1], 3))
    return _diff(got, want), "reloaded with torch.jit.load and run on a batch of 3"


@contextlib.contextmanager
def _quiet_onnx_exporter():
    """torch.onnx prints progress lines and warns about torchvision ops that ResNet does not use."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _onnx(loaded: Loaded, out: Path, check: torch.Tensor, ref: torch.Tensor) -> tuple[float | None, str]:
    missing = [name for name in ("onnx", "onnxscript") if not _importable(name)]
    if missing:
        raise FastresError(f"--format onnx needs the {' and '.join(missing)} package(s): pip install fastres[onnx]")
    import onnx

    def write(tmp: Path) -> None:
        with _quiet_onnx_exporter():
            torch.onnx.export(
                loaded.model,
                (check,),
                str(tmp),
                input_names=["images"],
                output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                external_data=False,  # one file (ResNet-152 is 240 MB, far below protobuf's 2 GB)
                dynamo=True,
                verbose=False,
            )

    _atomic(out, write)
    onnx.checker.check_model(str(out))
    if not _importable("onnxruntime"):
        return None, "passed onnx.checker; onnxruntime is not installed, so outputs were not compared"
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    batch = _check_batch(check.shape[-1], 3)  # another batch size than the exported one
    got = torch.from_numpy(session.run(["logits"], {"images": batch.numpy()})[0])
    with torch.inference_mode():
        want = loaded.model(batch)
    diff = _diff(got, want)
    tolerance = 1e-4 * max(1.0, want.abs().max().item())  # float32 kernels that sum in another order
    if diff > tolerance:
        raise FastresError(f"{out}: onnxruntime's outputs differ from PyTorch's by {diff:.3g} (> {tolerance:.3g})")
    return diff, "run with onnxruntime on a batch of 3 and compared with PyTorch"


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _metadata(loaded: Loaded, fmt: str) -> dict:
    size = loaded.image_size
    return {
        "format": fmt,
        "arch": loaded.arch,
        "num_classes": len(loaded.classes),
        "classes": list(loaded.classes),
        "input": {
            "layout": "NCHW float32, RGB",
            "crop": size,
            "resize_shorter_side": int(round(size * 256 / 224)),
            "mean": [round(m / 255, 6) for m in IMAGENET_MEAN],  # of pixel values scaled to [0, 1]
            "std": [round(s / 255, 6) for s in IMAGENET_STD],
        },
        "checkpoint": {"path": str(loaded.path), "step": loaded.step, "epoch": loaded.epoch, "val": loaded.val},
    }


def export(loaded: Loaded, fmt: str, out: str | Path) -> ExportResult:
    """Write `loaded`'s model to `out` in `fmt` (FORMATS), with OUT.json beside it; check it by running it."""
    if fmt not in FORMATS:
        raise FastresError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out).expanduser()
    if out.is_dir():
        raise FastresError(f"{out} is a folder: OUT is the file to write")
    if not out.parent.is_dir():
        raise FastresError(f"{out}: its folder {out.parent} does not exist")
    loaded.model.to("cpu").eval()
    check = _check_batch(loaded.image_size)
    with torch.inference_mode():
        ref = loaded.model(check)
    writer = {"torchvision": _torchvision, "torchscript": _torchscript, "onnx": _onnx}[fmt]
    try:
        diff, checked = writer(loaded, out, check, ref)
        sidecar = out.with_name(out.name + ".json")
        _atomic(sidecar, lambda tmp: tmp.write_text(json.dumps(_metadata(loaded, fmt), indent=2) + "\n"))
    except OSError as e:
        raise FastresError(f"cannot write {out}: {e.strerror or e}") from None
    return ExportResult(out, sidecar, diff, checked)


def build_parser() -> ToolParser:
    p = ToolParser("fastres.export", description=__doc__)
    p.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="a checkpoint file, or a run folder (its newest checkpoint that verifies; with --best its best.pt)",
    )
    p.add_argument("out", metavar="OUT", help="the file to write (replaced if it exists); OUT.json goes beside it")
    p.add_argument("--format", required=True, choices=FORMATS, help="what to write (see above)")
    p.add_argument("--best", action="store_true", help="with a run folder: export RUN/best.pt (the best val top-1)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        loaded = load_model(args.checkpoint, "cpu", best=args.best, say=lambda t: print(t, file=sys.stderr))
        result = export(loaded, args.format, args.out)
        diff = "" if result.max_abs_diff is None else f", max |difference| {result.max_abs_diff:.3g}"
        print(f"fastres export: wrote {result.path} ({args.format}) from {loaded.describe()}")
        print(f"  checked: {result.checked}{diff}")
        print(f"  classes and input size: {result.sidecar}")
        return 0

    return run_tool("fastres.export", body)


if __name__ == "__main__":
    sys.exit(main())
