"""What `python -m fastres.plan` prints: one plan, or a sweep over sizes, as text or one JSON object."""

from __future__ import annotations

import json

from fastres.plan.cost import Cluster, Estimate, Job
from fastres.plan.request import Request
from fastres.plan.scenario import DEFAULT_INTER_GBPS
from fastres.plan.sweep import KNEE_GAIN, Sweep

__all__ = ["duration", "plan_json", "plan_text", "sweep_json", "sweep_text"]


def duration(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _allreduce_dict(job: Job, est: Estimate) -> dict:
    return {
        "algorithm": job.allreduce,
        "wire_dtype": job.wire_dtype,
        "bucket_mb": job.bucket_mb,
        "seconds_per_step": est.allreduce_s,
        "exposed_seconds_per_step": est.exposed_allreduce_s,
    }


def plan_json(req: Request, c: Cluster, job: Job, est: Estimate, advised_job: Job, advised: Estimate) -> str:
    b = job.global_batch // c.devices
    out = {
        "device": c.device.name,
        "devices": c.devices,
        "devices_per_node": c.per_node,
        "gpu": c.device.name,  # the earlier names, kept
        "gpus": c.devices,
        "gpus_per_node": c.per_node,
        "nodes": c.nodes,
        "global_batch": job.global_batch,
        "batch_per_device": b,
        "batch_per_gpu": b,
        "epochs": job.epochs,
        "evals": job.evals,
        "epochs_from": req.epochs.as_dict(),
        "precision": job.precision,
        "speed": {
            "images_per_s_large_batch": c.speed.rate,
            "t0_s": c.speed.t0,
            "source": c.speed.source,
            **req.speed_from,
        },  # fmt: skip
        "intra_node_gbps": c.intra_gbps,
        "inter_node_gbps": c.inter_gbps,
        "intra_node_alpha_s": c.intra_alpha_s,
        "inter_node_alpha_s": c.inter_alpha_s,
        "backend": c.backend,
        **est.as_dict(),
        "time_to_accuracy_s": est.time_to_train_s if req.epochs.how == "law" else None,
        "allreduce": _allreduce_dict(job, est),
        "recommended": {
            **_allreduce_dict(advised_job, advised),
            "step_time_s": advised.step_time_s,
            "time_to_train_s": advised.time_to_train_s,
        },
        "calibration": req.calibration,
        "cpu_calibration": req.cpu_calibration,
        "warnings": req.warnings,
    }
    return json.dumps(out)


def plan_text(req: Request, c: Cluster, job: Job, est: Estimate, advised_job: Job, advised: Estimate) -> str:
    b = job.global_batch // c.devices
    what = "time to accuracy" if req.epochs.how == "law" else "time to train"
    lines = [
        f"fastres plan: {c.devices} x {c.device.full_name} ({c.nodes} nodes x {c.per_node}), "
        f"global batch {job.global_batch} ({b} per device), {job.epochs:.4g} epochs, {job.precision} precision",
        f"  epochs: {req.epochs.describe()}",
        f"  speed: {c.speed.rate:,.1f} img/s at a large batch, t0 {c.speed.t0 * 1e3:.2f} ms ({c.speed.source})",
    ]
    if req.calibration:
        cal = req.calibration
        lines.append(
            f"  calibrated from {cal['from']}: alpha {cal['alpha_s'] * 1e6:.0f} us, {cal['inter_node_gbps']:.3g} Gbit/s"
        )
    links = (
        f"{c.intra_gbps:g} Gbit/s per torus link, {c.torus_links} links per device"
        if c.torus_links
        else f"{c.intra_gbps:g} Gbit/s per device in a node, {c.inter_gbps:g} Gbit/s per node between nodes"
    )
    lines += [
        f"  links: {links}; alpha {c.intra_alpha_s * 1e6:g} / {c.inter_alpha_s * 1e6:g} us; {c.backend}",
        f"  one device: {est.device_images_per_s:,.1f} img/s at {b} per device; compute {est.compute_s * 1e3:.1f} ms "
        "per step",
        f"  all-reduce: {job.allreduce}, {job.wire_dtype} on the wire, {job.bucket_mb:g} MB buckets: "
        f"{est.allreduce_s * 1e3:.1f} ms per step, {max(0.0, est.exposed_allreduce_s) * 1e3:.1f} ms not hidden by "
        "backward",
        f"  step {est.step_time_s * 1e3:.1f} ms ({est.bound}-bound), epoch {duration(est.epoch_time_s)}, "
        f"{what} {duration(est.time_to_train_s)}, {est.images_per_s:,.0f} img/s, "
        f"scaling efficiency {est.scaling_efficiency:.0%}",
    ]
    gain = est.time_to_train_s / advised.time_to_train_s
    lines.append(
        f"advice: {advised_job.allreduce} all-reduce, {advised_job.wire_dtype} on the wire, "
        f"{advised_job.bucket_mb:g} MB buckets: {what} {duration(advised.time_to_train_s)}"
        + (f" ({gain:.2f}x faster than the above)" if gain > 1.005 else " (the above)")
    )
    lines += [f"warning: {w}" for w in req.warnings]
    return "\n".join(lines)


def _point_dict(sw: Sweep, p) -> dict:
    return {
        "devices": p.devices,
        "batch_per_device": p.batch_per_device,
        "global_batch": p.global_batch,
        "epochs": p.epochs,
        "evals": p.evals,
        "time_s": p.time_s,
        "step_s": p.step_s,
        "device_hours": p.device_hours,
        "step_efficiency": p.step_efficiency,
        "efficiency_vs_smallest": sw.efficiency(p),
        "allreduce": p.allreduce,
        "wire_dtype": p.wire_dtype,
        "bound": p.bound,
    }


def sweep_json(req: Request, sw: Sweep) -> str:
    knee, gain = sw.knee
    out = {
        "device": req.scenario.device.name,
        "devices_per_node": req.scenario.per_node,
        "epochs_from": sw.epochs_from,
        "points": [_point_dict(sw, p) for p in sw.points],
        "gain_per_doubling": sw.gains(),
        "knee": {"devices": knee.devices, "gain_per_doubling_after": gain, "rule": f"doubling gains < {KNEE_GAIN:.0%}"},
        "cost_doubled_devices": sw.cost_doubled.devices if sw.cost_doubled else None,
        "left_out": [{"devices": n, "why": why} for n, why in sw.left_out],
        "warnings": req.warnings,
    }
    return json.dumps(out)


def sweep_text(req: Request, sw: Sweep, target: str) -> str:
    sc = req.scenario
    first = sw.points[0].devices
    lines = [
        f"fastres plan: sweep of {sc.device.full_name}, nodes of {sc.per_node}, "
        f"{sc.inter_gbps or DEFAULT_INTER_GBPS:g} Gbit/s per node; {sw.epochs_from}",
        "",
        f"| devices | per device | global batch | epochs | all-reduce | step | {target} | device-hours "
        f"| step efficiency | efficiency vs {first} | gain per doubling |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    gains = [*sw.gains(), None]
    for p, g in zip(sw.points, gains):
        lines.append(
            f"| {p.devices:,} | {p.batch_per_device} | {p.global_batch:,} | {p.epochs:.1f} | {p.allreduce} "
            f"{p.wire_dtype} | {p.step_s * 1e3:.1f} ms ({p.bound}) | {duration(p.time_s)} | {p.device_hours:,.1f} "
            f"| {p.step_efficiency:.0%} | {sw.efficiency(p):.0%} | {'-' if g is None else f'{g:.0%}'} |"
        )
    knee, gain = sw.knee
    lines.append("")
    if gain is None:
        lines.append(f"knee: none up to {knee.devices:,} devices: each doubling cut time by {KNEE_GAIN:.0%} or more")
    else:
        lines.append(
            f"knee: {knee.devices:,} devices ({duration(knee.time_s)}, {knee.device_hours:,.1f} device-hours): "
            f"doubling beyond it cuts the time by {gain:.0%} (< {KNEE_GAIN:.0%}) for twice the devices"
        )
    if sw.cost_doubled is not None:
        p = sw.cost_doubled
        lines.append(
            f"cost: from {p.devices:,} devices on, a result takes more than twice the device-hours of {first:,} "
            f"({p.device_hours:,.1f} against {sw.points[0].device_hours:,.1f})"
        )
    lines += [f"left out: {n:,} devices: {why}" for n, why in sw.left_out]
    lines += [f"warning: {w}" for w in req.warnings]
    return "\n".join(lines)
