"""A run's parts built in order, each handed to the next: `assemble(cfg, resume)` -> (RunParts, TrainState).

topology -> process groups -> stop signals -> run folder (locked by rank 0) -> dataset (listed once,
checked by rank 0) -> loaders -> model -> its one flat layout (fastres.kernels.flat) -> reducer and
optimizer on that layout -> step guard and loss scaler -> schedule -> checkpoints -> metrics log; then the
loop's state: a new run's, or the one `resume` (fastres.run.resume) continues (fastres.run.restore); then
config.yaml. When building fails half-way, what was built is released.
"""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist
from torch import nn

from fastres import FastresError
from fastres.checkpoint.saver import Checkpointer
from fastres.config import TrainConfig
from fastres.data import check_dataset, make_loaders, max_bad_default, open_dataset
from fastres.data.builtin import builtin_root, rewrite_if_builtin
from fastres.data.dataset import optimizer_steps
from fastres.data.folder import describe_skipped
from fastres.data.loader import resolve_backend
from fastres.distributed import Reducer, discover, init_distributed, set_collective_timeout
from fastres.distributed import collectives as coll
from fastres.distributed.reducer import bucket_layout
from fastres.model import build_model
from fastres.model.bn import convert_bn_groups, convert_ghost_bn
from fastres.optim import OPTIMIZERS, build_optimizer
from fastres.optim.amp import LossScaler
from fastres.optim.schedule import run_schedule
from fastres.run.badsamples import BadSampleLedger
from fastres.run.console import active_sinks
from fastres.run.execution import pick_device, resolve_precision, seed_all, use_channels_last
from fastres.run.parts import RunParts
from fastres.run.preemption import StopSignals
from fastres.run.restore import restore
from fastres.run.runlock import RunLock
from fastres.run.runlog import MetricsLog, make_run_dir, write_config
from fastres.run.state import TrainState
from fastres.run.step import NoLossScaling
from fastres.run.stepguard import StepGuard

__all__ = ["assemble"]


def assemble(cfg: TrainConfig, resume=None) -> tuple[RunParts, TrainState]:
    """The parts of the run `cfg` describes, and the loop's state to start from (`resume`: the
    fastres.run.resume.ResumePlan of `--resume`, or None)."""
    parts = RunParts(cfg, resume)
    try:
        _build(parts, cfg)
        state = restore(parts, resume) if resume is not None else TrainState()
        parts.step_now = lambda: state.step
        if parts.rank == 0:  # on a resume too: a config.yaml cut short by a crash is whole again
            _write_config(parts, state)
        if cfg.tensorboard and parts.rank == 0:
            from fastres.run.tensorboard import TensorBoardWriter

            parts.tb = TensorBoardWriter(parts.run_dir)
    except BaseException:
        parts.close(error=True)
        raise
    return parts, state


def _build(p: RunParts, cfg: TrainConfig) -> None:
    p.topology = discover(virtual_nodes=cfg.virtual_nodes)
    p.rank, p.world = p.topology.rank, p.topology.world_size
    p.device = pick_device(cfg.device, p.topology)
    p.precision = resolve_precision(cfg.precision, p.device)  # auto: bf16 where it is fast (why says)
    p.amp = p.precision.dtype
    if p.precision.emulated:
        p.say(f"fastres: warning: precision {p.precision}")
    p.channels_last = use_channels_last(cfg.channels_last, p.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_all(cfg.seed)
    if cfg.data is None:  # the built-in dataset: its path goes into config.yaml and every checkpoint
        cfg.data = str(builtin_root().resolve())
    if p.topology.distributed:
        p.groups = init_distributed(p.topology, device=p.device, timeout=cfg.dist_timeout)
        if p.topology.physical_local_rank == 0:
            rewrite_if_builtin(cfg.data, p.say)  # one writer per machine; the others wait at the barrier
        coll.checked("barrier after writing the built-in dataset", dist.barrier, group=p.groups.world)
    # under a launcher: one killed with SIGKILL leaves no rank training on
    p.stop = StopSignals(p.groups, follow_parent=p.topology.launcher != "none")
    dataset = open_dataset(cfg.data, cfg.train_list, cfg.val_list, p.say)  # listed once: check, loaders
    skipped = describe_skipped((dataset.train, dataset.val))
    if skipped:  # a FIFO, a link to nothing, a directory named *.JPEG in a class folder: named, not read
        p.say(skipped)
    check = functools.partial(check_dataset, dataset, cfg.data_check, cfg.skip_bad_files, cfg.progress)
    exclude = coll.rank0_first(p.groups, check)
    p.run_dir = coll.rank0_first(p.groups, functools.partial(_open_run_dir, p))  # once the input is known good
    if p.groups is not None:  # the setup's long waits are over: a peer lost from now on is noticed sooner
        set_collective_timeout(p.groups, cfg.collective_timeout, p.stop.group)
    limit, sets = cfg.max_bad_samples, {"train": dataset.train, "val": dataset.val}
    limits = {k: max_bad_default(len(v or ())) if limit is None else limit for k, v in sets.items()}
    val_files = frozenset(path for path, _ in dataset.val.samples) if dataset.val else frozenset()
    split_of = lambda path: "val" if path in val_files else "train"
    p.bad = BadSampleLedger(p.run_dir, limits, split_of, p.groups, p.rank == 0, p.write, p.say)
    p.data = make_loaders(cfg, p.device, torch.float32, p.channels_last, p.rank, p.world, exclude=exclude,
                          dataset=dataset, known_bad=frozenset(p.bad.known))  # fmt: skip
    if p.world % cfg.bn_group:
        raise FastresError(f"--bn-group {cfg.bn_group} must divide the {p.world} processes")
    model = build_model(cfg.arch, len(p.data.classes), zero_init_last_gamma=cfg.zero_init_last_gamma)
    p.model = convert_bn_groups(model.to(p.device), cfg.bn_group, p.world, p.rank)
    p.model = convert_ghost_bn(p.model, cfg.bn_virtual_batch)  # --bn-virtual-batch: ghost BN
    if p.channels_last:
        p.model = p.model.to(memory_format=torch.channels_last)
    # what the loop calls: the model, or its compiled form (same parameters, same state_dict)
    p.forward = torch.compile(p.model) if cfg.compile else p.model
    p.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    # the model's one flat layout, handed to the reducer and the optimizer
    p.layout = bucket_layout(p.model, p.groups, algorithm=cfg.allreduce, bucket_cap_mb=cfg.bucket_cap_mb)
    if p.groups is not None:
        caps = dict(algorithm=cfg.allreduce, bucket_cap_mb=cfg.bucket_cap_mb)
        p.reducer = Reducer(p.layout, p.groups, wire_dtype=cfg.wire_dtype, **caps)
        coll.broadcast_tensors(p.groups, [p.layout.params, *p.model.buffers()], "parameters and buffers")
    p.optimizer = build_optimizer(cfg, p.model, p.layout)
    p.fused = OPTIMIZERS[cfg.optimizer].skips_on_device
    p.steps_per_epoch = optimizer_steps(len(p.data.train), cfg.accumulate)
    p.global_batch = cfg.batch_size * p.world * cfg.accumulate  # images per optimizer step
    p.guard = StepGuard(p.device, cfg.max_skipped_steps)
    p.scaler = LossScaler(p.device) if p.amp == torch.float16 else NoLossScaling(p.guard.check)
    p.schedule = run_schedule(cfg, p.steps_per_epoch, p.global_batch)
    p.saver = Checkpointer(p.run_dir, keep=cfg.keep_checkpoints, every_steps=cfg.checkpoint_every,
                           every_minutes=cfg.checkpoint_minutes, writer=p.rank == 0, say=p.say)  # fmt: skip
    p.log = MetricsLog(p.run_dir / "metrics.jsonl") if p.rank == 0 else None
    p.sinks = active_sinks()
    if p.sinks is not None:  # a console that fails from now on is a record of the run (fastres.run.console)
        p.sinks.attach(lambda **fields: p.write("sink_dropped", step=p.step_now(), **fields))


def _open_run_dir(p: RunParts):
    cfg, resume = p.cfg, p.resume
    run_dir = resume.run_dir if resume else make_run_dir(cfg.out, cfg.name, cfg.arch)
    if resume and resume.state is None:  # --resume auto with nothing to resume: start OUT/NAME
        run_dir = make_run_dir(cfg.out, cfg.name, cfg.arch, exact=True)
    p.lock = RunLock(run_dir)  # rank 0 holds it while the run lives
    if p.lock.previous_holder:
        p.say(f"fastres: took over the lock of {run_dir} from a job that is gone ({p.lock.previous_holder})")
    return run_dir


def _write_config(p: RunParts, state: TrainState) -> None:
    data, reducer, t = p.data, p.reducer, p.topology
    facts = dict(dataset=str(data.root), classes=len(data.classes), train_images=data.train_size)
    facts.update(val_images=data.val_size, backend=resolve_backend(p.cfg.backend), device=str(p.device))
    amp = "fp32 (no autocast)" if p.amp is None else str(p.amp).removeprefix("torch.")
    facts.update(amp=amp, precision_chosen=str(p.precision), channels_last=p.channels_last)
    facts.update(global_batch=p.global_batch)
    facts.update(peak_lr=p.schedule.peak, ranks=p.world, launcher=t.launcher, topology=t.describe())
    facts.update(allreduce=reducer.describe() if reducer else None)
    if p.resume is not None and p.resume.state is not None:
        facts.update(attempt=state.attempt, resumed_from=str(p.resume.checkpoint), resumed_at_step=state.step)
    write_config(p.run_dir, p.cfg.to_dict(), facts)
