"""The package's layers import downward only (DESIGN.md), and heavy libraries stay in their layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hps_bayes"

# module -> hps_bayes modules it may import (core, errors and results are importable by all)
SHARED = {"core", "errors", "__init__"}
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "errors": set(),
    "results": set(),
    "io": set(),
    "physics": {"io"},
    "turnon": set(),
    "demo": {"io", "physics"},
    "model": {"io", "physics"},
    "posterior": {"io", "physics", "model", "results"},
    "posterior_plots": {"results", "posterior", "plots"},
    "fit": {"model"},
    "stats": {"fit", "model"},
    "plots": {"results"},
    "export": {"results"},
    "settings": {"io", "physics", "demo", "model"},
    "scan": {"turnon", "io", "physics", "demo", "model", "fit", "stats", "results", "settings", "posterior"},
    "studies": {"turnon", "io", "physics", "demo", "model", "fit", "stats", "results", "settings", "scan"},
    "closure": {"turnon", "io", "physics", "demo", "model", "fit", "stats", "results", "settings", "scan", "studies"},
    "plots_closure": {"results", "plots"},
    "combine": {"turnon", "io", "physics", "demo", "model", "fit", "stats", "results", "settings", "scan"},
    "active": {"turnon", "io", "physics", "demo", "model", "fit", "stats", "results", "settings", "scan", "combine"},
    "plots_active": {"results", "plots"},
    "tasks": {"turnon", "io", "physics", "demo", "model", "fit", "stats", "results", "settings", "scan", "plots",
              "studies", "posterior", "posterior_plots", "combine", "export", "active", "plots_active",
              "closure", "plots_closure"},
    "app": {"turnon", "io", "physics", "demo", "model", "fit", "stats", "results", "settings", "scan", "plots", "tasks",
            "studies", "posterior", "posterior_plots", "combine", "export", "active", "plots_active",
            "closure", "plots_closure"},
}
HEAVY = {"uproot": {"io"}, "pymc": {"model", "posterior"}, "pytensor": {"model", "fit", "posterior"},
         "matplotlib": {"plots", "posterior_plots", "plots_active", "plots_closure"}, "mplhep": {"plots", "posterior_plots", "plots_active", "plots_closure"}, "hydra": {"app", "tasks"}, "omegaconf": {"app"}}


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
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


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if _layer(p) not in {"__init__", "__main__"})


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_downward(path: Path) -> None:
    layer = _layer(path)
    assert layer in ALLOWED, f"{layer} has no place in the layer table of tests/test_layers.py"
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] == "hps_bayes" and len(parts) > 1:
            target = parts[1]
            if target in SHARED or target == layer or target == "__version__":
                continue
            assert target in ALLOWED[layer], f"{path.name} ({layer}) imports {name}: not below it"
        elif parts[0] in HEAVY:
            assert layer in HEAVY[parts[0]], f"{path.name} ({layer}) imports {parts[0]}, kept in {HEAVY[parts[0]]}"


def test_layer_table_rejects_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "io.py"
    bad.write_text("from hps_bayes.scan import run_scan\n")
    assert "hps_bayes.scan" in _imports(bad)
    assert "scan" not in ALLOWED["io"]
