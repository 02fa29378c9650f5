"""The layering of docs/design.md, checked on the source: lower layers never import upper ones.

Every `import fastres...` / `from fastres... import` in every module (top-level or inside a
function) is read with `ast`; a module may import only the layers at or below its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fastres

PACKAGE = Path(fastres.__file__).parent

# module (or package) -> the fastres modules/packages it may import. Longest prefix wins.
ALLOWED: dict[str, set[str]] = {
    # the kernel layer: ops is the door; paths, rtc, nvrtc and torch_ops sit beside it
    "fastres.ops": {"fastres", "fastres._C", "fastres.torch_ops", "fastres.paths", "fastres.rtc", "fastres.nvrtc"},
    "fastres.paths": {"fastres", "fastres.rtc"},
    "fastres.rtc": {"fastres"},
    "fastres.nvrtc": {"fastres"},
    "fastres.torch_ops": {"fastres"},
    "fastres.flat": {"fastres", "fastres.ops"},
    "fastres.model": {"fastres"},
    "fastres.metrics": {"fastres"},
    "fastres.data": {"fastres", "fastres.data"},
    "fastres.optim": {"fastres", "fastres.ops", "fastres.flat", "fastres.optim", "fastres.torch_ops"},
    "fastres.distributed": {"fastres", "fastres.ops", "fastres.flat", "fastres.distributed"},
    "fastres.execution": {"fastres", "fastres.distributed"},
    "fastres.runlog": {"fastres"},
    "fastres.runlock": {"fastres"},
    "fastres.progress": {"fastres"},
    "fastres.stepguard": {"fastres"},
    "fastres.preemption": {"fastres", "fastres.distributed"},
    # checkpoints know the config they store and the run folder's names, not the trainer
    "fastres.checkpoint": {"fastres", "fastres.checkpoint", "fastres.config", "fastres.runlog"},
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "fastres"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fastres":
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from fastres import ops`
    return found


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _rule_for(module: str) -> set[str] | None:
    best = max((k for k in ALLOWED if module == k or module.startswith(k + ".")), key=len, default=None)
    return ALLOWED.get(best) if best else None


def _permitted(target: str, allowed: set[str]) -> bool:
    """`fastres` itself (FastresError, __version__) allows only the package's own names, not its subpackages."""
    head, _, name = target.rpartition(".")
    if target == "fastres" or (head == "fastres" and (not name.islower() or name.startswith("__"))):
        return "fastres" in allowed  # fastres.FastresError, fastres.__version__
    return any(target == a or target.startswith(a + ".") for a in allowed if a != "fastres")


def test_lower_layers_never_import_upper_ones():
    bad = []
    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        allowed = _rule_for(module)
        if allowed is None:
            continue  # the top: trainer, train, config, CLIs
        checked += 1
        for target in sorted(_imports(path)):
            if not _permitted(target, allowed):
                bad.append(f"{module} imports {target}")
    assert checked >= 20, f"only {checked} modules checked: the rules no longer match the tree"
    assert not bad, "layering broken (docs/design.md, Layers):\n" + "\n".join(bad)


def test_only_ops_and_its_kernel_loaders_touch_the_native_module():
    users = sorted(
        _module_name(p) for p in PACKAGE.rglob("*.py") if any(t.startswith("fastres._C") for t in _imports(p))
    )
    assert users == ["fastres.ops"], users


def test_the_checker_catches_an_upward_import(tmp_path):
    # the rule engine itself: a data module importing the trainer must be flagged
    bad = tmp_path / "x.py"
    bad.write_text("from fastres.trainer import Trainer\nimport fastres.optim.lars\n")
    targets = _imports(bad)
    assert not any(_permitted(t, ALLOWED["fastres.data"]) for t in targets - {"fastres.optim"})
