"""Prints the benchmarks of bench/ as GB/s and as ratios, after pytest-benchmark's table."""

from __future__ import annotations

import sys


def pytest_terminal_summary(terminalreporter):
    _lars_summary(terminalreporter)
    _wire_summary(terminalreporter)
    mod = sys.modules.get("bench_segment_sq_norms")
    results = getattr(mod, "RESULTS", None)
    if not results:
        return
    tr = terminalreporter
    for device, rows in results.items():
        tr.section(f"segment_sq_norms on {device}: ResNet-50, 161 tensors, 102 MB fp32")
        ours = rows.get("fastres (chunk table built once)")
        ceiling = rows.get("ceiling: flat.sum()")
        for name, (mean, nbytes) in rows.items():
            line = f"{name:38s} {mean * 1e3:9.3f} ms {nbytes / mean / 1e9:8.2f} GB/s"
            if ours and name != "fastres (chunk table built once)":
                line += f"   fastres speed-up {mean / ours[0]:5.2f}x"
            if ceiling:
                line += f"   {ceiling[0] / mean:6.1%} of flat.sum()"
            tr.write_line(line)


def _lars_summary(tr):
    mod = sys.modules.get("bench_lars")
    results = getattr(mod, "RESULTS", None)
    if not results:
        return
    for device, rows in results.items():
        tr.section(f"optimizer step on {device}: ResNet-50, 161 tensors, 25.6M fp32")
        lars = rows.get("fastres FusedLARS")
        sgd = rows.get("torch SGD fused=True")
        ceiling = rows.get("ceiling: copy_ (5 x 102 MB moved)")
        for name, (mean, nbytes) in rows.items():
            line = f"{name:36s} {mean * 1e3:9.2f} ms {nbytes / mean / 1e9:7.2f} GB/s"
            if sgd:
                line += f"   {mean / sgd[0]:5.2f}x torch fused SGD"
            if lars and name != "fastres FusedLARS":
                line += f"   FusedLARS {mean / lars[0]:5.2f}x faster"
            if ceiling:
                line += f"   {mean / ceiling[0]:5.2f}x ceiling"
            tr.write_line(line)


def _wire_summary(tr):
    mod = sys.modules.get("bench_wire")
    results = getattr(mod, "RESULTS", None)
    if not results:
        return
    for device, rows in results.items():
        tr.section(f"wire pack/unpack on {device}: one 25 MiB fp32 bucket ({mod.N:,} floats)")
        ceiling = rows.get("ceiling: copy_ fp32")
        for name, (_mean, median, nbytes) in rows.items():
            line = f"{name:36s} {median * 1e3:8.3f} ms (median) {nbytes / median / 1e9:7.2f} GB/s"
            if name.startswith("fastres"):  # against the fastest torch row of its kind
                kind = " ".join(name.split()[1:3]).rstrip(",")
                peers = [r[1] for k, r in rows.items() if k.startswith(f"torch {kind}")]
                if peers:
                    line += f"   {min(peers) / median:5.2f}x torch's best"
            if ceiling:
                line += f"   {ceiling[1] / median:6.1%} of copy_"
            tr.write_line(line)
