"""The shape of the code, checked with `ast` over src/aevb: no function of 60 lines or more;
no probing of a model's interface (`hasattr(model, ...)`) and no `except TypeError` fallback
that guesses a signature; and data flows one way, nothing lower importing anything higher
(docs/architecture.md)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "aevb"
MAX_LINES = 60

#: the layers of aevb, lowest first; a module may import its own layer and the ones below.
#: objectives sit below models: a model's `objective` calls them, and they see a model only
#: through its declared interface (encode, decode, prior).
LAYERS = [
    {"serialization", "runtime", "distributed", "optim", "averaging", "config", "diagnostics"},
    {"data"},
    {"nets", "distributions"},
    {"objectives", "fused"},
    {"models"},
    {"checkpoint", "graphed", "progress", "rundir", "training"},
    {"evaluation", "samplers", "anomaly", "imputation", "plots", "runs", "report", "sweep", "quality"},
    {"explore"},
    {"cli", "__main__", "__init__"},
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def sources():
    return sorted(SRC.rglob("*.py"))


def part(path: Path) -> str:
    """The top-level part of aevb a file belongs to (its module or package name)."""
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def test_every_part_has_a_layer():
    assert {part(p) for p in sources()} <= set(LEVEL), {part(p) for p in sources()} - set(LEVEL)


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_long_functions(path):
    tree = ast.parse(path.read_text())
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 >= MAX_LINES]
    assert not long, f"functions of {MAX_LINES} lines or more: {long}"


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_interface_probes_or_signature_guessing(path):
    tree = ast.parse(path.read_text())
    probes = [f"line {n.lineno}: hasattr({ast.unparse(n.args[0])}, ...)" for n in ast.walk(tree)
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "hasattr"
              and ast.unparse(n.args[0]).split(".")[0] in ("model", "self", "q", "p", "prior", "lik")]
    guesses = [f"line {n.lineno}: except TypeError" for n in ast.walk(tree)
               if isinstance(n, ast.ExceptHandler) and isinstance(n.type, ast.Name) and n.type.id == "TypeError"]
    assert not probes + guesses


def test_the_checks_catch_what_they_look_for(tmp_path):
    """Negative control: the same walks find a probe, a guess and a long function."""
    bad = "def f(model):\n    if hasattr(model, 'prior'):\n        pass\n    try:\n        g()\n" \
          "    except TypeError:\n        pass\n" + "    x = 1\n" * 60
    tree = ast.parse(bad)
    assert any(isinstance(n, ast.Call) and getattr(n.func, "id", "") == "hasattr" for n in ast.walk(tree))
    assert any(isinstance(n, ast.ExceptHandler) and getattr(n.type, "id", "") == "TypeError" for n in ast.walk(tree))
    f = tree.body[0]
    assert f.end_lineno - f.lineno + 1 >= MAX_LINES


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, the aevb part imported) for every import of aevb code in `path`, relative
    (from . import x, from ..x import y) or absolute (import aevb.x), at any depth."""
    tree = ast.parse(path.read_text())
    package = list(path.relative_to(SRC).parts[:-1])  # the package the file is in, below aevb
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                target = base + (node.module.split(".") if node.module else [])
                names = [target + [a.name] for a in node.names] if not target else [target]
            elif node.module and node.module.split(".")[0] == "aevb":
                target = node.module.split(".")[1:]
                names = [target] if target else [[a.name] for a in node.names]
            else:
                continue
            out += [(node.lineno, t[0]) for t in names if t]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[1]) for a in node.names
                    if a.name.startswith("aevb.")]
    return out


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(SRC)))
def test_nothing_lower_imports_anything_higher(path):
    me = LEVEL[part(path)]
    upward = [f"line {line}: {part(path)} (layer {me}) imports {name} (layer {LEVEL.get(name)})"
              for line, name in imports(path) if name in LEVEL and LEVEL[name] > me]
    assert not upward


def test_the_import_check_sees_relative_and_absolute_imports(tmp_path):
    """Negative control: an upward import in a models file is found, in each spelling."""
    d = tmp_path / "aevb" / "models"
    d.mkdir(parents=True)
    f = d / "x.py"
    f.write_text("from ..evaluation import log_likelihood\nfrom .. import training\n"
                 "import aevb.plots\nfrom aevb.report import write_report\nfrom . import base\n")
    global SRC
    saved, SRC = SRC, tmp_path / "aevb"
    try:
        assert [name for _, name in imports(f)] == ["evaluation", "training", "plots", "report", "models"]
    finally:
        SRC = saved
