"""Typed task settings: every task and active preset validates from conf/; bad keys and values are refused
with the key, the value and what is allowed, before anything runs; run_task reaches every task."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from hps_bayes.cli.config import load_config, task_settings
from hps_bayes.cli.task_settings import TASK_SETTINGS, ActiveTask, CoverageTask
from hps_bayes.cli.tasks import TASKS, run_task
from hps_bayes.errors import ConfigError

PACKAGE = Path(__file__).resolve().parents[2] / "hps_bayes"
PRESETS = sorted(p.stem for p in (PACKAGE.parent / "conf" / "active").glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_validates_into_its_settings(name: str) -> None:
    task = task_settings(load_config([f"task={name}"]))
    assert type(task) is TASK_SETTINGS[name] and task.name == name
    assert sorted(TASK_SETTINGS) == sorted(TASKS)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_active_preset_validates(preset: str) -> None:
    task = task_settings(load_config(["task=active", f"active={preset}"]))
    assert isinstance(task, ActiveTask)
    assert task.active.objective.kind == {"wedge": "wedge", "callable": "callable"}.get(preset, "excess")
    assert task.active.objective.combined == (preset == "excess_combined")


def test_values_come_from_the_config_files() -> None:
    """The values are the YAML's (the code has no second copy that could drift)."""
    task = task_settings(load_config(["task=coverage"]))
    assert isinstance(task, CoverageTask)
    assert task.known_scales == (1.0, 0.0001) and task.n_experiments == 400 and task.methods == ("asymptotic", "toys")


@pytest.mark.parametrize(("overrides", "message"), [
    (["task=coverage", "+task.n_experimnets=5"], r"task: unknown key\(s\) \['n_experimnets'\]; allowed keys are"),
    (["task=coverage", "task.known_scales=1.0"], r"task.known_scales=1.0: expected tuple\[float, ...\]"),
    (["task=inject", "task.units=percent"], r"task.units='percent': expected Literal\['sigma', 'events'\]"),
    (["task=coverage", "~task.n_toys"], r"task: missing key\(s\) \['n_toys'\]"),
    (["task=active", "active.q=many"], r"active.q='many': expected int"),
    (["task=active", "active.executor.cluster=cloud"], r"active.executor.cluster='cloud': expected Literal"),
    (["task=active", "active.objective.model.cap=high"], r"active.objective.model.cap='high': expected float"),
    (["task=active", "+active.objective.speed=1"], r"active.objective: unknown key\(s\) \['speed'\]"),
    (["task=combine", "+task.datasets.0.pth=/x.root"], r"task.datasets entry 'demo2015': unknown key\(s\) \['pth'\]"),
])
def test_bad_settings_are_refused_before_anything_runs(tmp_path: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        task_settings(load_config(overrides))
    name = overrides[0].removeprefix("task=")
    with pytest.raises(ConfigError, match=message):  # run_task validates before the task starts
        run_task(name, overrides[1:], tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_task_settings_are_read_only_through_the_typed_objects() -> None:
    """No ``.get(key, default)`` on a task or active section in the package: the defaults live in conf/."""
    pattern = re.compile(r"""(task|spec|cfg\[["']task["']\])\.get\(|get\(["'](task|active)["']""")
    for path in [*(PACKAGE / "cli").glob("*.py"), PACKAGE / "active" / "runner.py"]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not pattern.search(line), f"{path.name}:{number}: {line.strip()}"


def test_simulate_keeps_an_existing_file_without_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "demo.root"
    small = [f"dataset.path={path}", "dataset.demo.n_events=20000"]
    run_task("simulate", small, tmp_path / "run")
    written = path.read_bytes()
    run_task("simulate", [*small, "dataset.demo.seed=1", "task.overwrite=false"], tmp_path / "run")
    assert path.read_bytes() == written
    run_task("simulate", [*small, "dataset.demo.seed=1"], tmp_path / "run")
    assert path.read_bytes() != written


def test_simulate_draws_other_structure_and_records_it(tmp_path: Path) -> None:
    import json

    import uproot

    path = tmp_path / "demo.root"
    small = [f"dataset.path={path}", "dataset.demo.n_events=2000000"]
    run_task("simulate", small, tmp_path / "run")
    bundled = uproot.open(path)["invariant_mass"].values()
    assert "structure" not in json.loads(path.with_name("demo.root.json").read_text())  # the bundled draw
    other = ["dataset.demo.structure_scale=3.0", "dataset.demo.structure_seed=31",
             "dataset.demo.structure_wavelengths=[0.15,0.3]"]
    run_task("simulate", [*small, *other], tmp_path / "run")
    drawn = uproot.open(path)["invariant_mass"].values()
    assert json.loads(path.with_name("demo.root.json").read_text())["structure"] == [3.0, 31, [0.15, 0.3]]
    assert drawn.sum() == pytest.approx(bundled.sum(), rel=5e-3) and not np.array_equal(drawn, bundled)
