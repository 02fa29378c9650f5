"""Helpers for tests on emulated hosts: skip where they cannot run, and what the machine looks like.

pytestmark = needs_emulation             # root, `ip`, `tc`, `unshare`, and a namespace can be made
before = machine_state(); ...; assert_nothing_left(before)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fastres.distributed.emulate.network import NETNS_ETC, PREFIX, missing_requirements

EMULATE = [sys.executable, "-m", "fastres.distributed.emulate"]


def _why_not() -> str | None:
    why = missing_requirements()
    if why:
        return why
    probe = f"{PREFIX}-{os.getpid()}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


WHY_NOT = _why_not()
needs_emulation = pytest.mark.skipif(WHY_NOT is not None, reason=f"emulated hosts: {WHY_NOT}")


def _lines(*cmd: str) -> list[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.splitlines()


def machine_state() -> dict:
    """This namespace's links and qdiscs, and every emulation's namespaces and /etc/netns folders."""
    links = sorted(line.split(":")[1].strip().split("@")[0] for line in _lines("ip", "-o", "link", "show"))
    return {
        "namespaces": sorted(n.split()[0] for n in _lines("ip", "netns", "list") if n.startswith(PREFIX)),
        "links": links,
        "qdiscs": sorted(_lines("tc", "qdisc", "show")),
        "etc_netns": sorted(p.name for p in NETNS_ETC.iterdir() if p.name.startswith(PREFIX))
        if NETNS_ETC.is_dir()
        else [],
    }


def _left_behind(names: list[str]) -> list[str]:
    """Names of emulations that are over: their owner is gone, or it is this process (the emulation ran in
    it and was closed). A live owner is an emulation still running, another test's or another user's."""
    out = []
    for name in names:
        owner = name[len(PREFIX) + 1 :].split("-")[0]
        if not owner.isdigit() or int(owner) == os.getpid() or not os.path.exists(f"/proc/{owner}"):
            out.append(name)
    return out


def assert_nothing_left(before: dict) -> None:
    after = machine_state()
    left = _left_behind(after["namespaces"])
    assert left == [], f"namespaces left behind: {left}"
    left = _left_behind(after["etc_netns"])
    assert left == [], f"/etc/netns folders left behind: {left}"
    assert after["links"] == before["links"], f"links changed: {before['links']} -> {after['links']}"
    assert after["qdiscs"] == before["qdiscs"], f"qdiscs changed: {before['qdiscs']} -> {after['qdiscs']}"


def read_json_lines(folder) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
