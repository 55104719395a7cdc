"""The uncovered bias is computed by the study; the nuisance figure only draws the column it is given."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from hps_bayes.errors import InputError
from hps_bayes.plots.spurious import plot_spurious_nuisance
from hps_bayes.studies.spurious import summarise, uncovered_bias, with_nuisance_columns


def _cells() -> pd.DataFrame:
    return pd.DataFrame({
        "shape": ["a", "a", "b"], "mass": [0.03, 0.04, 0.03], "status": ["ok"] * 3,
        "mean_A": [-30.0, 5.0, 12.0], "asimov_A": [25.0, 0.0, -8.0], "spurious": [10.0, 10.0, 10.0],
        "sigma_A": [40.0, 50.0, 40.0], "width_z": [1.0, 1.0, 1.0], "n_toys": [100] * 3,
        "sigma_A_floor": [30.0, 40.0, 30.0], "recovered": [1.0] * 3, "A_inj": [200.0] * 3, "n_failed": [0] * 3,
    }).assign(mean_z=lambda f: f.mean_A / f.sigma_A, asimov_z=lambda f: f.asimov_A / f.sigma_A)


def test_uncovered_bias_is_the_bias_beyond_the_nuisance() -> None:
    cells = _cells()
    assert uncovered_bias(cells).tolist() == [0.5, 0.0, 0.05]
    assert uncovered_bias(cells, column="asimov_A").tolist() == [0.375, 0.0, 0.0]
    assert summarise(cells)["all"]["worst_asimov_resid_z"] == 0.375
    assert with_nuisance_columns(cells).spurious_z.tolist() == [0.25, 0.2, 0.25]


def test_the_nuisance_figure_draws_the_studys_columns(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="with_nuisance_columns"):
        plot_spurious_nuisance(_cells(), tmp_path / "a.png", dataset_label="demo")
    path = plot_spurious_nuisance(with_nuisance_columns(_cells()), tmp_path / "b.png", dataset_label="demo")
    assert path.is_file()
