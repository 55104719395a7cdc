"""task=combine end to end on small demo spectra: files, overlap, reproducibility, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hps_bayes.analysis.combine import evaluate_combined
from hps_bayes.analysis.settings import settings_from_mapping
from hps_bayes.cli.config import _plain, load_config, task_settings
from hps_bayes.cli.tasks import run_task
from hps_bayes.errors import ConfigError, InputError
from hps_bayes.inputs.root_io import load_spectrum


def _override(value: Any) -> str:
    """``value`` in the command line's override syntax."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_override(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_override(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


def _run(tmp_path: Path, datasets: list[dict[str, Any]], *extra: str) -> tuple[Any, Any, Path]:
    out = tmp_path / "run"
    single, combined = run_task("combine", ["scan.step=0.01", "plots.summary=true",
                                            f"task.datasets={_override(datasets)}", *extra], out)
    return single, combined, out


def _entry(preset: str, tmp_path: Path, **kw: Any) -> dict[str, Any]:
    return {"preset": preset, "path": str(tmp_path / f"{preset}.root"),
            "demo": {"n_events": 1_000_000, "generate": "always"}, **kw}


def test_combination_of_two_demo_datasets_writes_everything(tmp_path: Path) -> None:
    single, combined, out = _run(tmp_path, [_entry("demo2015", tmp_path), _entry("demo2016", tmp_path)])
    for name in ("results_single.csv", "results_combined.csv", "limits.csv", "limits.parquet",
                 "validation_report.json", "hepdata/submission.yaml", "submission.tar.gz",
                 "summary_plots/eps2_ul_2015.png", "summary_plots/eps2_ul_2016.png",
                 "summary_plots/eps2_ul_combined.png", "summary_plots/eps2_ul_overlay.png",
                 "summary_plots/p0_overlay.png", "summary_plots/p0_combined.png"):
        assert (out / name).is_file(), name
    assert set(json.loads((out / "validation_report.json").read_text())) == {"2015", "2016"}
    assert len(combined) > 0 and set(combined.datasets) == {"2015+2016"}
    assert (combined.status == "ok").all()
    # the combined expected limit is better than either dataset's at the same mass
    for row in combined.itertuples():
        alone = single[np.isclose(single.mass, row.mass)].eps2_up_expected_median
        assert row.eps2_up_expected_median < alone.min()
    # one row reproduced from its numbers.json and the inputs alone
    row = combined.iloc[len(combined) // 2]
    stored = json.loads((out / f"m{round(row.mass * 1e3):03d}MeV" / "combined" / "numbers.json").read_text())
    settings = {n: settings_from_mapping({**s, "dataset": s["dataset"]}) for n, s in stored["settings"].items()}
    spectra = {n: load_spectrum(s.dataset.path, s.dataset.hist_name) for n, s in settings.items()}
    again = evaluate_combined(spectra, float(row.mass), settings)
    assert again.eps2_up == pytest.approx(row.eps2_up, rel=1e-6)
    assert pd.read_csv(out / "results_combined.csv").eps2_up.to_numpy() == pytest.approx(combined.eps2_up)


def test_datasets_without_overlap_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="do not overlap"):
        _run(tmp_path, [_entry("demo2015", tmp_path, mass_range=[0.02, 0.05]),
                        _entry("demo2016", tmp_path, mass_range=[0.1, 0.2])])


def test_duplicated_dataset_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="named '2015'"):
        _run(tmp_path, [_entry("demo2015", tmp_path), _entry("hps2015", tmp_path)])


def test_a_missing_histogram_names_the_dataset_file(tmp_path: Path) -> None:
    from hps_bayes.physics.demo import write_demo_file
    from hps_bayes.physics.presets import load_preset

    write_demo_file(tmp_path / "demo2016.root", load_preset("2016"), n_events=100_000, seed=1)
    with pytest.raises(InputError, match="no_such_hist"):
        _run(tmp_path, [_entry("demo2015", tmp_path),
                        _entry("demo2016", tmp_path, hist_name="no_such_hist", demo={"generate": False})])
    report = json.loads((tmp_path / "run" / "validation_report.json").read_text())
    assert report["2016"]["histogram_found"] is False


def test_each_dataset_may_have_its_own_background() -> None:
    from hps_bayes.cli.task_combine import combination_members

    overrides = ["task=combine", "+task.datasets.2.background=whole15",
                 "+task.datasets.1.background={poly_degree: 12}", "background.spurious=off"]
    cfg = load_config(overrides)
    members = combination_members(task_settings(cfg).datasets, _plain(cfg))
    assert members["2015"][0].background.poly_degree == 10 and members["2015"][0].background.spurious == "off"
    assert members["2016"][0].background.poly_degree == 12 and members["2016"][0].background.spurious == "off"
    whole = members["2021"][0].background  # the named config, not the run's changes
    assert (whole.poly_degree, whole.window_sigmas, whole.spurious) == (15, 1000.0, "table")
    cfg = load_config([*overrides, "+task.datasets.0.background=no_such_background"])
    with pytest.raises(ConfigError, match="unknown background 'no_such_background'"):
        combination_members(task_settings(cfg).datasets, _plain(cfg))
