"""The layering of docs/design.md, checked on the source: lower layers never import upper ones.

The folder tree is the layer diagram: LAYERS lists fastres's packages (and the top's commands)
from the bottom up. Every `import fastres...` / `from fastres... import` in every module (top-level
or inside a function) is read with `ast`; a module may import its own package and the layers
strictly below its own, and `fastres` itself (FastresError). docs/design.md's and the README's
layer tables are made from LAYERS and the packages' docstrings: `python tests/test_layers.py --write`
rewrites them, and the test fails when they differ from the tree.
"""

from __future__ import annotations

import ast
import re
import shutil
import sys
from pathlib import Path

# The repository this file is in: its source tree and docs, whichever fastres is installed (a plain
# `pip install .` puts a copy without docs/ in site-packages).
ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fastres"

# From the bottom up: each layer's packages, or top-level modules (the commands).
LAYERS: list[tuple[str, list[str]]] = [
    ("kernels", ["fastres.kernels"]),
    ("model, data, checkpoints", ["fastres.model", "fastres.data", "fastres.checkpoint"]),
    ("communication, optimisation", ["fastres.distributed", "fastres.optim"]),
    ("config", ["fastres.config"]),
    ("a run; the tools' shared parts", ["fastres.run", "fastres.tools"]),
    (
        "commands",
        ["fastres.train", "fastres.eval", "fastres.predict", "fastres.export", "fastres.doctor"]
        + ["fastres.report", "fastres.plan"],
    ),
]
LEVEL = {unit: level for level, (_, units) in enumerate(LAYERS) for unit in units}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "fastres"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fastres":
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from fastres import ops`
    return found


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _unit(name: str) -> str | None:
    """The package or command `name` belongs to (longest match), None for `fastres` itself or unknown."""
    return max((u for u in LEVEL if name == u or name.startswith(u + ".")), key=len, default=None)


def _is_root_name(target: str) -> bool:
    """fastres.FastresError, fastres.__version__: names of `fastres` itself, not subpackages."""
    head, _, name = target.rpartition(".")
    return target == "fastres" or (head == "fastres" and (not name.islower() or name.startswith("__")))


def layering_problems(package: Path = PACKAGE) -> tuple[list[str], int]:
    """(every import that breaks the layering, the number of modules checked) over the tree at `package`."""
    bad, checked = [], 0
    for path in sorted(package.rglob("*.py")):
        module = _module_name(path, package)
        if module == "fastres":
            continue
        unit = _unit(module)
        if unit is None:
            bad.append(f"{module} belongs to no layer (add it to LAYERS in tests/test_layers.py)")
            continue
        checked += 1
        reported: list[str] = []
        for target in sorted(_imports(path)):
            if _is_root_name(target) or target == "fastres._C" or any(target.startswith(r + ".") for r in reported):
                continue  # _C: see test_only_ops_touches_the_native_module; `from m import name`: m said it
            reported.append(target)
            other = _unit(target)
            if other is None:
                bad.append(f"{module} imports {target}, which is no module of the tree (an old path?)")
            elif other != unit and LEVEL[other] >= LEVEL[unit]:
                bad.append(f"{module} imports {target} (layer {LEVEL[unit]} may import only layers below it)")
    return bad, checked


def test_lower_layers_never_import_upper_ones():
    bad, checked = layering_problems()
    assert checked >= 80, f"only {checked} modules checked: the rules no longer match the tree"
    assert not bad, "layering broken (docs/design.md, Layers):\n" + "\n".join(bad)


def test_an_upward_import_injected_into_a_copy_of_the_tree_is_caught(tmp_path):
    copy = tmp_path / "fastres"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("*.so", "__pycache__", "csrc"))
    assert layering_problems(copy)[0] == []
    flat = copy / "kernels" / "flat.py"
    flat.write_text(flat.read_text() + "\n\ndef _f():\n    from fastres.run.trainer import Trainer\n")
    (copy / "model" / "resnet.py").write_text(
        "import fastres.data.folder\n" + (copy / "model" / "resnet.py").read_text()
    )
    assert layering_problems(copy)[0] == [
        "fastres.kernels.flat imports fastres.run.trainer (layer 0 may import only layers below it)",
        "fastres.model.resnet imports fastres.data.folder (layer 1 may import only layers below it)",
    ]


def test_the_top_of_the_package_holds_only_commands_config_and_packages():
    commands = {u.split(".")[1] for u in LAYERS[-1][1]}
    for entry in PACKAGE.iterdir():
        if entry.name in ("__pycache__", "csrc") or entry.suffix == ".so":
            continue  # build products: _C and the kernel sources installed beside it
        name = entry.stem if entry.is_file() else entry.name
        if entry.is_file():
            assert entry.suffix == ".py" and name in commands | {"__init__"}, f"fastres/{entry.name} at the top"
        else:
            assert (entry / "__init__.py").is_file() and f"fastres.{name}" in LEVEL, f"fastres/{name}/ is no layer"


def test_only_ops_touches_the_native_module():
    users = sorted(
        _module_name(p) for p in PACKAGE.rglob("*.py") if any(t.startswith("fastres._C") for t in _imports(p))
    )
    assert users == ["fastres.kernels.ops"], users


# ---- the layer table of docs/design.md and README.md, made from the tree

BEGIN, END = "<!-- layers: made by `python tests/test_layers.py --write` -->", "<!-- /layers -->"


def _summary(unit: str) -> str:
    """The first paragraph of the package's (or command's) docstring, on one line."""
    path = PACKAGE.joinpath(*unit.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return " ".join(doc.split("\n\n")[0].split()).replace("|", "\\|")


def layer_table() -> str:
    rows = ["| layer | where | what it owns; what it may import |", "|---|---|---|"]
    for level, (title, units) in reversed(list(enumerate(LAYERS))):
        for unit in units:
            path = "fastres/" + "/".join(unit.split(".")[1:])
            path += "/" if (PACKAGE / path.removeprefix("fastres/")).is_dir() else ".py"
            rows.append(f"| {level} {title} | `{path}` | {_summary(unit)} |")
    rows.append("| native | `csrc/` | fastres._C: pybind11, C++/OpenMP kernels always, CUDA kernels with nvcc; "
                "reached only through fastres.kernels.ops |")  # fmt: skip
    return "\n".join([BEGIN, *rows, END])


def _table_in(text: str) -> str | None:
    m = re.search(re.escape(BEGIN) + ".*?" + re.escape(END), text, re.S)
    return m.group(0) if m else None


DOCS = [ROOT / "docs" / "design.md", ROOT / "README.md"]


def test_the_docs_layer_tables_are_the_tree():
    table = layer_table()
    for doc in DOCS:
        found = _table_in(doc.read_text(encoding="utf-8"))
        assert found is not None, f"{doc.name} has no layer table between {BEGIN!r} and {END!r}"
        assert found == table, f"{doc.name}'s layer table is stale: run `python tests/test_layers.py --write`"


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        doc.write_text(text.replace(_table_in(text), layer_table()), encoding="utf-8")
        print(f"wrote the layer table of {doc}")
