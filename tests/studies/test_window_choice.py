"""The per-mass window rule from spurious-signal studies of several window sizes."""

from __future__ import annotations

import pandas as pd
import pytest

from hps_bayes.errors import InputError
from hps_bayes.studies.window_choice import choose_windows, degree_table_rows


def _study(bias: dict[float, tuple[float, float]], sigma: dict[float, float]) -> pd.DataFrame:
    """A spurious.csv-like table: two truths per mass with noise-free Â/σ_A ``bias[m]``."""
    rows = [{"shape": shape, "mass": m, "asimov_z": z, "asimov_sigma_A": sigma[m], "status": "ok"}
            for m, pair in bias.items() for shape, z in zip(("a", "b"), pair, strict=True)]
    return pd.DataFrame(rows)


def test_most_sensitive_passing_window_is_chosen_and_rows_collapse() -> None:
    masses = (0.05, 0.06, 0.07, 0.08)
    narrow = _study({m: (0.05, -0.1) for m in masses}, {m: 200.0 for m in masses})
    wide = _study({0.05: (0.1, 0.15), 0.06: (0.3, 0.0), 0.07: (0.1, -0.1), 0.08: (-0.5, 0.4)},
                  {m: 100.0 for m in masses})
    choice = choose_windows({3.0: narrow, 5.0: wide})
    assert choice.window_sigmas.tolist() == [5.0, 3.0, 5.0, 3.0]  # wide where its worst |bias| <= 0.2
    assert choice.passed.all() and choice.worst_bias.tolist() == pytest.approx([0.15, 0.1, 0.1, 0.1])
    rows = degree_table_rows(choice, lambda m: 5 if m < 0.066 else 3)
    assert rows == [[0.055, 5, 5.0], [0.065, 5, 3.0], [0.075, 3, 5.0], [1.0, 3, 3.0]]


def test_least_biased_window_where_none_passes() -> None:
    bad_a = _study({0.05: (0.6, 0.1)}, {0.05: 100.0})
    bad_b = _study({0.05: (0.3, -0.4)}, {0.05: 300.0})
    choice = choose_windows({3.0: bad_a, 4.0: bad_b})
    assert choice.window_sigmas.tolist() == [4.0] and not choice.passed.any()
    with pytest.raises(InputError, match="at least one study"):
        choose_windows({})
