"""A trained model from a checkpoint or a run folder, ready for inference (fastres.eval, predict, export).

    loaded = load_model("runs/resnet50-20261123-101500")   # the run's newest checkpoint that verifies
    loaded = load_model("runs/resnet50-20261123-101500", best=True)   # RUN/best.pt
    loaded = load_model("runs/r/checkpoints/step-000001234.pt", device=torch.device("cuda"))
    logits = loaded.model(preprocess([image], loaded.image_size))
    loaded.classes[logits.argmax(1)]

The checkpoint says everything inference needs: the architecture and image size (its
`config`), the class names in label order (`classes`), the weights (`model`, with
torchvision's state_dict keys), and where it was taken (`step`, `epoch`, `extra["val"]`).
Anything else (a torchvision .pth, a damaged file, a folder with no checkpoint) is refused
with a one-line FastresError naming the file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fastres import FastresError
from fastres.checkpoint import CheckpointError, CheckpointStore, read_checkpoint_file
from fastres.data.transforms import ResizeCenterCrop, normalize_batch
from fastres.model import ARCHS, ResNet, build_model

__all__ = ["BEST_NAME", "Loaded", "find_checkpoint", "load_model", "model_from_state", "preprocess", "tool_device"]

BEST_NAME = "best.pt"  # RUN/best.pt: the checkpoint of the best val top-1 so far


@dataclass
class Loaded:
    path: Path  # the checkpoint file read
    model: ResNet  # in eval mode, on the device asked for
    classes: tuple[str, ...]  # label order
    config: dict[str, Any]  # the run's resolved config (fastres.config.TrainConfig fields)
    step: int
    epoch: int  # epochs completed when the checkpoint was taken
    val: dict[str, Any] | None  # {"epoch", "top1", "top5"} of the last validation before it, if any

    @property
    def arch(self) -> str:
        return self.config["arch"]

    @property
    def image_size(self) -> int:
        """The side of the validation crop the run used."""
        return int(self.config.get("val_image_size") or self.config.get("image_size") or 224)

    def describe(self) -> str:
        return f"{self.path} ({self.arch}, {len(self.classes)} classes, step {self.step}, epoch {self.epoch})"


def find_checkpoint(
    target: str | Path, best: bool = False, say: Callable[[str], None] = print
) -> tuple[Path, dict[str, Any]]:
    """(path, state) of a checkpoint file, or of a run folder's newest checkpoint that verifies
    (`best`: its best.pt). Raises CheckpointError naming what is missing or wrong."""
    target = Path(target).expanduser()
    if not target.exists():
        raise CheckpointError(f"{target} does not exist")
    if target.is_file():
        if best:
            raise CheckpointError(f"{target} is a file: --best picks best.pt in a run folder")
        return target, read_checkpoint_file(target)
    if best:
        path = target / BEST_NAME
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist (no validation finished in that run yet?)")
        return path, read_checkpoint_file(path)
    found = CheckpointStore(target).newest_valid(say=say)
    if found is None:
        raise CheckpointError(
            f"{target} holds no checkpoint that verifies (looked for {target}/checkpoints/step-*.pt); "
            "pass a checkpoint file, or --best for best.pt"
        )
    return found


def _check_state(state: dict[str, Any], path: Path) -> None:
    if state.get("format") != "fastres-run":
        raise CheckpointError(f"{path}: not a fastres run checkpoint (format {state.get('format')!r})")
    for key, kind in (("model", dict), ("config", dict), ("classes", list)):
        if not isinstance(state.get(key), kind):
            raise CheckpointError(f"{path}: damaged fastres checkpoint (no {key!r} {kind.__name__})")
    arch = state["config"].get("arch")
    if arch not in ARCHS:
        raise CheckpointError(
            f"{path}: unknown arch {arch!r} in the checkpoint's config; fastres knows {', '.join(ARCHS)}"
        )


def model_from_state(state: dict[str, Any], path: Path) -> ResNet:
    """The checkpoint's model with its weights (CPU, eval mode). Raises CheckpointError."""
    _check_state(state, path)
    arch, classes = state["config"]["arch"], state["classes"]
    model = build_model(arch, len(classes))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path}: the weights do not fit {arch} with {len(classes)} classes ({first})") from None
    return model.eval()


def load_model(
    target: str | Path,
    device: torch.device | str = "cpu",
    best: bool = False,
    say: Callable[[str], None] = print,
) -> Loaded:
    """The model of a checkpoint file or run folder, on `device`, in eval mode (see `find_checkpoint`)."""
    path, state = find_checkpoint(target, best=best, say=say)
    model = model_from_state(state, path).to(device)
    val = (state.get("extra") or {}).get("val")
    return Loaded(
        path=path,
        model=model,
        classes=tuple(str(c) for c in state["classes"]),
        config=dict(state["config"]),
        step=int(state.get("step", 0)),
        epoch=int(state.get("epoch", 0)),
        val=dict(val) if isinstance(val, dict) else None,
    )


def tool_device(want: str) -> torch.device:
    """auto: the first GPU where torch sees one, else the CPU; or exactly `cpu` / `cuda` / `cuda:N`."""
    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(want)
    except RuntimeError:
        raise FastresError(f"--device {want!r}: not a device (auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FastresError(f"--device {want}: no CUDA device is available (torch.cuda.is_available() is False)")
    if device.type not in ("cpu", "cuda"):
        raise FastresError(f"--device {want}: fastres runs on cpu or cuda")
    return device


def preprocess(images: Sequence[Image.Image], size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """RGB images -> the normalised NCHW float batch validation feeds the model: shorter side to
    size*256/224, central size x size crop, ImageNet mean and std (fastres.data.transforms)."""
    crop = ResizeCenterCrop(size)
    batch = torch.from_numpy(np.stack([crop(img.convert("RGB")) for img in images]))
    return normalize_batch(batch.to(device))
