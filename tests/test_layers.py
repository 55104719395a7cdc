"""The tree is the architecture: a module's layer is its folder, layers import downward only,
and heavy libraries stay in their layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hps_bayes"

#: modules every layer may import: shared types, errors, and the result objects/writers
#: (which import nothing from the package themselves)
BASE = {"core", "errors", "results", "__init__"}

#: layer (folder of hps_bayes/) -> the layers below it that it may import
ALLOWED: dict[str, set[str]] = {
    "results": set(),
    "inputs": set(),
    "physics": {"inputs"},
    "model": {"inputs", "physics"},
    "fit": set(),
    "stats": {"fit"},
    "posterior": {"inputs", "physics", "model", "fit"},
    "analysis": {"inputs", "physics", "model", "fit", "stats"},
    "studies": {"inputs", "physics", "model", "fit", "stats", "analysis"},
    "active": {"inputs", "physics", "model", "fit", "stats", "analysis"},
    "plots": set(),
    "cli": {"inputs", "physics", "model", "fit", "stats", "posterior", "analysis", "studies", "active", "plots"},
}
HEAVY = {"uproot": {"inputs"}, "pymc": {"model", "posterior"}, "pytensor": {"model", "fit", "posterior"},
         "matplotlib": {"plots"}, "mplhep": {"plots"}, "hydra": {"cli"}, "omegaconf": {"cli"}}
MAX_LINES = 420


def layer_of(path: Path, package: Path = PACKAGE) -> str:
    """The layer of a module: its folder under the package (a top-level module is its own layer)."""
    rel = path.relative_to(package)
    return rel.parts[0].removesuffix(".py")


def imports_of(path: Path) -> set[str]:
    """Absolute module names a file imports (``from hps_bayes import x`` counts as ``hps_bayes.x``)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "hps_bayes":
                names.update(f"hps_bayes.{a.name}" for a in node.names)
    return names


def violations(path: Path, package: Path = PACKAGE) -> list[str]:
    """Every import of ``path`` that points upward or takes a heavy library out of its layer."""
    layer = layer_of(path, package)
    if layer not in ALLOWED and layer not in BASE:
        return [f"{path.name}: layer {layer!r} has no place in the layer table"]
    found = []
    for name in sorted(imports_of(path)):
        parts = name.split(".")
        if parts[0] == "hps_bayes" and len(parts) > 1:
            target = parts[1]
            if target in BASE or target == layer or target == "__version__":
                continue
            if layer in BASE or target not in ALLOWED[layer]:
                found.append(f"{path.name} ({layer}) imports {name}: not below it")
        elif parts[0] in HEAVY and layer not in HEAVY[parts[0]]:
            found.append(f"{path.name} ({layer}) imports {parts[0]}, kept in {sorted(HEAVY[parts[0]])}")
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name not in {"__init__.py", "__main__.py"} or p.parent != PACKAGE)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_downward(path: Path) -> None:
    assert violations(path) == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_states_its_concern_and_stays_small(path: Path) -> None:
    text = path.read_text()
    doc = ast.get_docstring(ast.parse(text))
    assert doc and doc.splitlines()[0].strip(), f"{path.name}: no first docstring line stating its concern"
    assert len(text.splitlines()) <= MAX_LINES, f"{path.name}: {len(text.splitlines())} lines"


def test_every_folder_is_a_layer() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(ALLOWED), folders - set(ALLOWED)


def test_checker_fails_on_a_planted_upward_import(tmp_path: Path) -> None:
    package = tmp_path / "hps_bayes"
    (package / "inputs").mkdir(parents=True)
    bad = package / "inputs" / "reader.py"
    bad.write_text('"""A planted module."""\nfrom hps_bayes.analysis.scan import run_scan\nimport matplotlib\n')
    found = violations(bad, package)
    assert found == ["reader.py (inputs) imports hps_bayes.analysis.scan: not below it",
                     "reader.py (inputs) imports matplotlib, kept in ['plots']"]
    good = package / "inputs" / "ok.py"
    good.write_text('"""A planted module."""\nfrom hps_bayes.errors import InputError\nimport uproot\n')
    assert violations(good, package) == []
