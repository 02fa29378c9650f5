"""`--resume`: which checkpoint a run continues from, with which config, and what changed.

    resume = plan_resume(cfg, given)     # a ResumePlan; None: not a resume
    resume.cfg          the saved config, with the keys that may change between attempts applied
    resume.run_dir      the run folder that continues (or starts, for `--resume auto` with nothing in it)
    resume.checkpoint   the checkpoint continued from (None: start), resume.state its contents
    resume.changes      key -> (saved value, value now), for the metrics log's resume record
    resume.sources      key -> where resume.cfg's value came from (the saved config, a flag), for --print-config

`--resume auto` (with `--name NAME`): continue OUT/NAME from its newest checkpoint that
verifies, or start OUT/NAME when it has none, so re-running the same job script continues
the same run. `--resume RUN_DIR`: RUN_DIR's newest checkpoint that verifies. `--resume FILE`:
that checkpoint. A checkpoint that fails verification is named in one line and the next
older one is used.

The run continues with its saved config. A flag given on the resume command line that
differs from it is an error naming the key and both values, except the keys in MUTABLE
(epochs, intervals, workers, timeouts, paths, ...), which are applied and recorded.

Another number of processes (a requeue on fewer nodes after a node failure, or on more): the
recipe fixes the global batch, not the process count, so the per-process batch and
--accumulate are chosen again to keep it (the fewest accumulation passes whose per-process
batch is no larger than the saved one; --batch-size / --accumulate given on the command line
are used when they keep it), recorded as changes. Where no choice keeps it (the global batch
does not divide over the processes) the resume is refused in one line. The PIL loader's sample
order is a function of (seed, epoch, global position) (fastres.data.pil.ShardedSampler), so the
run continues at the same step with the same global batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastres.checkpoint.fileformat import CheckpointError, read_checkpoint_file
from fastres.checkpoint.state import saved_world_size
from fastres.checkpoint.store import CHECKPOINT_DIR, CheckpointStore
from fastres.config import ConfigError, TrainConfig, launch_world_size
from fastres.config.keys import FLAG, SAVED
from fastres.run.runlog import check_name, hand_edited_config

__all__ = ["MUTABLE", "ResumePlan", "batch_for", "plan_resume", "run_dir_of"]

# Keys that may change between attempts of one run: they change where and how fast it runs,
# how often it logs and saves, how long it trains, not what a step computes.
MUTABLE = frozenset({
    "data", "train_list", "val_list", "workers", "prefetch", "hw_decoder_load", "data_check", "skip_bad_files",
    "max_bad_samples", "epochs", "val_batch_size", "threads", "virtual_nodes", "allreduce", "bucket_cap_mb",
    "dist_timeout", "collective_timeout", "out", "name", "log_every", "progress", "resume", "checkpoint_every",
    "checkpoint_minutes", "keep_checkpoints", "progress_seconds", "max_skipped_steps", "tensorboard", "target_top1",
    "train_images", "compile",
})  # fmt: skip


@dataclass
class ResumePlan:
    cfg: TrainConfig
    run_dir: Path
    checkpoint: Path | None = None
    state: dict[str, Any] | None = None
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """The checkpoint is the end of the run: every epoch of the (possibly changed) config done."""
        if self.state is None or (self.state.get("extra") or {}).get("val_pending"):
            return False  # a validation still to be done is not the end
        return int(self.state["step"]) >= int(self.state["steps_per_epoch"]) * self.cfg.epochs


def processes(n: int) -> str:
    return f"{n} process" if n == 1 else f"{n} processes"


def run_dir_of(out: str, name: str) -> Path:
    """OUT/NAME, refusing a name that would leave OUT (a path, '..', '.')."""
    return Path(out).expanduser() / check_name(name)


def _saved_config(state: dict[str, Any], where: str) -> TrainConfig:
    saved = state.get("config")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    if not isinstance(saved, dict) or not set(saved) <= known:
        extra = sorted(set(saved) - known) if isinstance(saved, dict) else []
        raise CheckpointError(f"{where}: its config is not this fastres's (unknown keys {extra})")
    return TrainConfig(**{**TrainConfig().to_dict(), **saved})


def batch_for(global_batch: int, world: int, saved_batch: int, batch: int | None = None,
              accumulate: int | None = None) -> tuple[int, int]:  # fmt: skip
    """(per-process batch, --accumulate) that make `global_batch` on `world` processes: those given, or the
    fewest accumulation passes whose batch is at most `saved_batch`. Raises ConfigError when none does."""
    if batch is not None or accumulate is not None:
        asked = " and ".join(f"--{k} {v}" for k, v in (("batch-size", batch), ("accumulate", accumulate)) if v)
        b, a = batch or global_batch // (world * accumulate or 1), accumulate or global_batch // (world * batch or 1)
        if b >= 1 and a >= 1 and b * world * a == global_batch:
            return b, a
        raise ConfigError(f"--resume: {asked} on {world} process{'es' if world > 1 else ''} cannot keep the run's "
                          f"global batch of {global_batch} images per step (per-process batch x processes x "
                          "--accumulate); give values that do, or leave them out")  # fmt: skip
    for acc in range(1, global_batch // world + 1):
        if global_batch % (world * acc) == 0 and global_batch // (world * acc) <= saved_batch:
            return global_batch // (world * acc), acc
    raise ConfigError(f"--resume: the run's global batch of {global_batch} images per step cannot be split over "
                      f"{world} processes (it is not a multiple of {world}); resume it on a number of processes "
                      f"that divides {global_batch}")  # fmt: skip


def _refuse_hand_edits(run_dir: Path, values: dict[str, Any], checkpoint: Path) -> None:
    """A config.yaml edited by hand is refused where it differs from what the resume runs with: a run continues
    with the config saved in its checkpoint, and config.yaml (written again by every attempt) only records it."""
    edited = hand_edited_config(run_dir)
    if edited is None:
        return
    differ = [k for k in sorted(edited) if k in values and k != "resume" and edited[k] != values[k]]
    if differ:
        shown = ", ".join(f"{k}: {edited[k]!r} there, {values[k]!r} in the run" for k in differ[:3])
        raise ConfigError(
            f"{run_dir / 'config.yaml'} was edited by hand ({shown}{', ...' if len(differ) > 3 else ''}): a run "
            f"continues with the config saved in its checkpoint ({checkpoint}), which config.yaml only records; "
            "give a value a resume may change as a flag (--epochs, --checkpoint-every, ...), undo the edit, or start "
            "a new run"
        )


def plan_resume(
    cfg: TrainConfig, given: frozenset[str], say: Callable[[str], None] = print, world: int | None = None
) -> ResumePlan | None:
    """The resume `cfg.resume` asks for, or None when it asks for none. Raises FastresError (one line).

    world: the processes of this attempt (default: what the launcher says)."""
    if cfg.resume is None:
        return None
    if cfg.resume == "auto":
        if not cfg.name:
            raise ConfigError("--resume auto needs --name NAME: the run folder OUT/NAME to continue, or to start")
        run_dir = run_dir_of(cfg.out, cfg.name)
        found = CheckpointStore(run_dir).newest_valid(say) if run_dir.is_dir() else None
        if found is None:
            return ResumePlan(cfg.validate(), run_dir)  # nothing to continue: start OUT/NAME
    else:
        path = Path(cfg.resume).expanduser()
        if path.is_dir():
            run_dir, found = path, CheckpointStore(path).newest_valid(say)
            if found is None:
                raise CheckpointError(f"--resume {cfg.resume}: no checkpoint that verifies in {path / CHECKPOINT_DIR}")
        elif path.is_file():
            found = (path, read_checkpoint_file(path))
            run_dir = path.parent.parent if path.parent.name == CHECKPOINT_DIR else path.parent
        else:
            raise CheckpointError(f"--resume {cfg.resume}: no such checkpoint file or run folder")
    checkpoint, state = found
    saved = _saved_config(state, str(checkpoint))
    values, changes = saved.to_dict(), {}
    sources = {k: f"{SAVED} ({checkpoint}){': give the flag to change it' if k in MUTABLE else ''}" for k in values}
    now = cfg.to_dict()
    world = launch_world_size() if world is None else world
    saved_world = saved_world_size(state)
    if world != saved_world:  # the global batch is the recipe's; the process count is the cluster's
        global_batch = values["batch_size"] * saved_world * values["accumulate"]
        wants = [now[k] if k in given else None for k in ("batch_size", "accumulate")]
        batch, acc = batch_for(global_batch, world, values["batch_size"], *wants)
        for key, value in (("batch_size", batch), ("accumulate", acc)):
            if value != values[key]:
                changes[key] = (values[key], value)
            values[key] = value
            sources[key] = f"chosen to keep the run's global batch of {global_batch} on {processes(world)}"
        given = given - {"batch_size", "accumulate"}
        say(f"fastres: resumed on {processes(world)}, saved by {saved_world}: --batch-size "
            f"{batch} x --accumulate {acc} keeps the run's global batch of {global_batch} images per step")  # fmt: skip
    for key in sorted(given):
        if now[key] == values[key]:
            continue
        if key not in MUTABLE:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(
                f"--resume: {flag} is {now[key]!r} on this command line but the run was started with "
                f"{values[key]!r} ({checkpoint}); drop the flag to continue the run as it was, or start a new run"
            )
        if key not in ("resume",):
            changes[key] = (values[key], now[key])
        values[key] = now[key]
        sources[key] = FLAG
    values["resume"], sources["resume"] = cfg.resume, FLAG
    if cfg.resume == "auto":
        values["out"], values["name"] = cfg.out, cfg.name
    _refuse_hand_edits(run_dir, values, checkpoint)
    return ResumePlan(TrainConfig(**values).validate(sources), run_dir, checkpoint, state, changes, sources)
