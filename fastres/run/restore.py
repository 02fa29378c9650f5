"""A resumed attempt: the checkpoint restored into the run's parts, and the loop's state it continues from.

    state = restore(parts, resume)    # resume: fastres.run.resume.ResumePlan; every rank

The model, the optimizer, the generators and the loaders are restored (fastres.checkpoint.state), and
fp16's loss scale; the loop's TrainState comes from the checkpoint (its step, the best and last
validation, the attempt after the one that saved it, a validation still to be done). Rank 0 says what the
attempt before lost (fastres.run.attempts) and writes the `resume` record. `--resume auto` in a run folder
whose attempt died before its first checkpoint starts the run again from step 0, saying so the same way.

A loader whose order is its readers' (DALI) cannot continue an epoch that another number of processes
began: the run continues from the next epoch boundary, validating the interrupted epoch first.
"""

from __future__ import annotations

from fastres import FastresError
from fastres.checkpoint import restore_run
from fastres.checkpoint.state import saved_world_size
from fastres.run.attempts import attempt_loss, earlier_attempt
from fastres.run.parts import RunParts
from fastres.run.resume import processes
from fastres.run.state import TrainState

__all__ = ["restore"]


def restore(p: RunParts, resume) -> TrainState:
    """The state the run continues from: the checkpoint's, or step 0 when `resume` found none to continue."""
    if resume.state is None:  # --resume auto, nothing to resume
        state = TrainState()
        if p.rank == 0:
            _start_again(p, state)
        return state
    saved, where = resume.state, str(resume.checkpoint)
    if list(saved["classes"]) != list(p.data.classes):
        was, now = saved["classes"], p.data.classes
        raise FastresError(f"--resume {where}: the run was trained on classes {was[:3]}... ({len(was)}), "
                           f"--data has {list(now[:3])}... ({len(now)}): not the same dataset")  # fmt: skip
    where_kw = dict(steps_per_epoch=p.steps_per_epoch, rank=p.rank, world=p.world, where=where)
    step = restore_run(saved, p.model, p.optimizer, p.data.train, **where_kw)
    extra = saved.get("extra", {})
    state = TrainState.resumed(step, extra)
    if "loss_scaler" in extra:
        p.scaler.load_state_dict(extra["loss_scaler"])
    saved_world = saved_world_size(saved)
    if saved_world != p.world and hasattr(p.data.train, "load_state_dict"):
        _dali_epoch_boundary(p, state, where, saved_world)
    changed = {k: list(v) for k, v in resume.changes.items()}
    saved_data = saved.get("config", {}).get("data")
    if saved_data != p.cfg.data:  # a saved config without the built-in dataset's path (None), resolved here
        changed.setdefault("data", [saved_data, p.cfg.data])
    lost = {}
    if p.rank == 0:  # what the attempt before lost: read from the run folder before this one writes to it
        saved_at = extra.get("time") or resume.checkpoint.stat().st_mtime
        loss = attempt_loss(p.run_dir, int(saved["step"]), saved_at, p.world, state.attempt)
        p.say(loss.line())
        lost = loss.record()
    p.write("resume", attempt=state.attempt, checkpoint=where, checkpoint_step=int(saved["step"]), step=state.step,
            world_size=p.world, saved_world_size=saved_world, changed=changed, **lost)  # fmt: skip
    return state


def _start_again(p: RunParts, state: TrainState) -> None:
    """--resume auto in a run folder where an attempt ran but left no checkpoint (it died before its first):
    the run starts again from step 0, and says so with what was lost, as a resume does."""
    earlier = earlier_attempt(p.run_dir)
    if earlier is None:
        return  # a new run
    state.attempt = earlier[0] + 1
    loss = attempt_loss(p.run_dir, 0, earlier[1], p.world, state.attempt)
    p.say(loss.line(checkpoint=False))
    p.write("resume", attempt=state.attempt, checkpoint=None, checkpoint_step=0, step=0, world_size=p.world,
            saved_world_size=None, changed={}, **loss.record())  # fmt: skip


def _dali_epoch_boundary(p: RunParts, state: TrainState, where: str, saved_world: int) -> None:
    """A loader whose order is its readers' (DALI) cannot continue another process count's epoch: the run
    continues from the next epoch boundary, validating the interrupted epoch first."""
    spe, step = p.steps_per_epoch, state.step
    if step % spe == 0:
        p.say(f"fastres: {where}: saved by {processes(saved_world)}, resumed by {p.world}: DALI's readers "
              f"split each epoch by process: epoch {step // spe + 1} on reads a new order")  # fmt: skip
        return
    state.step = (step // spe + 1) * spe
    state.val_pending = step // spe + 1
    state.val_pending_why = f"whose last {state.step - step} steps are skipped"
    p.say(f"fastres: {where}: saved by {processes(saved_world)} at step {step}, resumed by {p.world}: "
          f"DALI's readers split each epoch by process, so the run continues from the next epoch boundary "
          f"(step {state.step}: the last {state.step - step} steps of epoch {state.val_pending} are skipped, "
          "its validation is done first)")  # fmt: skip
