"""What a user meets first, installed or in the source tree: ``--help``, the task config files,
config folders of their own, where the configs are found, the plots' experiment label, and that a
run writes into its run folder only (never into the installed package)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hps_bayes.cli.config import CONF_DIR, _plain, load_config, plot_label
from hps_bayes.cli.tasks import TASKS, run_task
from hps_bayes.physics.presets import conf_dir
from hps_bayes.plots.label import ExperimentLabel

PACKAGE = Path(__file__).resolve().parents[2] / "hps_bayes"


def _help() -> str:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-m", "hps_bayes", "--help"], check=True, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    return done.stdout


def test_help_lists_every_task_with_its_summary_the_groups_and_where_results_go() -> None:
    text = _help()
    for name, entry in TASKS.items():
        assert re.search(rf"^\s+{name}\s+{re.escape(entry.summary)}$", text, re.MULTILINE), name
    groups = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra")
    for group in groups:
        assert re.search(rf"^{group}: ", text, re.MULTILINE), group
    for override in ("dataset=", "dataset.path=", "dataset.hist_name=", "mass=", "run_dir="):
        assert f"  {override}" in text, override
    assert "Where the results go" in text and "results_single.csv" in text
    assert "Powered by Hydra" not in text and "hydra.searchpath" in text


def test_the_readme_table_names_every_task() -> None:
    readme = (PACKAGE.parent / "README.md").read_text()
    table = readme[readme.index("## Tasks"):readme.index("## Outputs")]
    assert all(f"`{name}`" in table for name in TASKS), [n for n in TASKS if f"`{n}`" not in table]


def test_every_task_config_opens_with_what_it_does_and_its_outputs() -> None:
    for name in TASKS:
        lines = (CONF_DIR / "task" / f"{name}.yaml").read_text().splitlines()
        header = []
        for line in lines:
            if not line.startswith("#"):
                break
            header.append(line)
        assert header and any(f"task={name}" in line for line in header), name
        assert any("Outputs" in line or "Writes" in line for line in header), name


def test_a_user_config_folder_on_the_search_path_adds_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "mine.yaml").write_text(
        "defaults:\n  - hps2016\n  - _self_\nname: mine\npath: /data/mine.root\nhist_name: dir/mass\n")
    cfg = load_config([f"hydra.searchpath=[file://{tmp_path}]", "dataset=mine"])
    assert (cfg.dataset.name, cfg.dataset.path, cfg.dataset.hist_name) == ("mine", "/data/mine.root", "dir/mass")
    assert list(cfg.dataset.mass_range) == list(load_config(["dataset=hps2016"]).dataset.mass_range)


def test_configs_come_from_the_package_when_installed_else_from_the_source_tree(tmp_path: Path) -> None:
    package = tmp_path / "site" / "hps_bayes"
    package.mkdir(parents=True)
    assert conf_dir(package) == tmp_path / "site" / "conf"  # source tree: conf/ beside the package
    (package / "conf").mkdir()
    (package / "conf" / "config.yaml").write_text("seed: 1\n")
    assert conf_dir(package) == package / "conf"  # a wheel ships it inside the package
    assert (CONF_DIR / "config.yaml").is_file() and (CONF_DIR / "hydra" / "help" / "hps_bayes.yaml").is_file()


@pytest.mark.parametrize(("overrides", "expected"), [
    ([], ExperimentLabel("demo", "Internal")),
    (["dataset=hps2016", "plots.status=Preliminary"], ExperimentLabel("data", "Preliminary")),
    (["dataset=hps2016", "task=inject", "plots.status=null"], ExperimentLabel("simulation", None)),
    (["dataset=hps2016", "task=spurious"], ExperimentLabel("demo", "Internal")),
    (["dataset=hps2016", "task=spurious", "task.reference=data"], ExperimentLabel("simulation", "Internal")),
    (["task=combine"], ExperimentLabel("demo", "Internal")),
])
def test_plot_label_names_the_kind_of_spectrum_and_the_status(overrides: list[str], expected: ExperimentLabel) -> None:
    assert plot_label(_plain(load_config(overrides))) == expected


def test_plot_label_texts() -> None:
    assert ExperimentLabel("data", "Preliminary").text() == ("HPS", "Preliminary")
    assert ExperimentLabel("simulation", "Internal").text() == ("HPS", "Simulation Internal")
    assert ExperimentLabel("demo", None).text() == ("Demo", "HPS-like simulation")


def _tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def test_spurious_write_table_writes_the_run_folder_and_leaves_the_package_alone(tmp_path: Path) -> None:
    before = _tree_hashes(PACKAGE / "data")
    run_task("spurious", ["dataset=hps2015", "dataset.demo.n_events=2000000", "task.families=[powerlaw]",
                          "task.n_toys=3", "task.step=0.04", "task.write_table=true"], tmp_path)
    assert _tree_hashes(PACKAGE / "data") == before
    table = tmp_path / "spurious_2015.csv"
    assert table.is_file()
    settings_cfg = load_config(["dataset=hps2015", f"background.spurious_table={table}"])
    from hps_bayes.analysis.windows import spurious_table
    from hps_bayes.cli.config import settings_from_config

    loaded = spurious_table(settings_from_config(settings_cfg))
    assert loaded is not None and loaded.source == str(table)
