"""A per-mass window table from spurious-signal studies of several window sizes.

Each study (``task=spurious``, one per window half-width k) gives, per truth shape and
mass, the noise-free fitted signal of background-only data in units of its error
(``asimov_z`` = Â/σ_A) and σ_A.  The rule (as a published search chose degree and window
per mass from toy bias studies):

1. per mass, a window passes when the worst |Â/σ_A| over the truths is at most
   ``threshold`` (0.2: the spurious-signal criterion);
2. of the passing windows the one with the smallest median σ_A is chosen (the most
   sensitive); where none passes, the one with the smallest worst bias (flagged);
3. consecutive masses with the same choice form one row ``[m_max, degree, k]`` of
   ``background.degree_table``, m_max halfway to the next mass with another choice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from hps_bayes.errors import InputError

__all__ = ["choose_windows", "degree_table_rows"]


def choose_windows(studies: Mapping[float, Any], *, threshold: float = 0.2) -> Any:
    """The window half-width chosen at each mass (rule in the module docstring).

    Parameters
    ----------
    studies : half-width k (units of σ(m)) → that study's ``spurious.csv`` table (columns
        ``shape``, ``mass``, ``asimov_z``, ``asimov_sigma_A``, ``status``).
    threshold : the largest allowed worst |Â/σ_A|.

    Returns
    -------
    DataFrame
        ``mass``, ``window_sigmas``, ``worst_bias``, ``sigma_A``, ``passed``, one row per mass.
    """
    import pandas as pd

    if not studies:
        raise InputError("choose_windows needs at least one study (window half-width -> spurious.csv table)")
    per_window = []
    for k, table in studies.items():
        ok = table[table.status == "ok"]
        grouped = ok.groupby("mass").agg(worst_bias=("asimov_z", lambda z: float(np.max(np.abs(z)))),
                                         sigma_A=("asimov_sigma_A", "median"))
        per_window.append(grouped.assign(window_sigmas=float(k)).reset_index())
    cells = pd.concat(per_window, ignore_index=True)
    rows = []
    for mass, group in cells.groupby("mass"):
        passing = group[group.worst_bias <= threshold]
        best = passing.loc[passing.sigma_A.idxmin()] if len(passing) else group.loc[group.worst_bias.idxmin()]
        rows.append((float(mass), float(best.window_sigmas), float(best.worst_bias), float(best.sigma_A),
                     bool(len(passing))))
    return pd.DataFrame(rows, columns=["mass", "window_sigmas", "worst_bias", "sigma_A", "passed"])


def degree_table_rows(choice: Any, degree: Callable[[float], int], *, m_max_last: float = 1.0
                      ) -> list[list[float]]:
    """``background.degree_table`` rows ``[m_max, degree, k]`` from :func:`choose_windows`' table.

    Consecutive masses with the same (degree, k) form one row; m_max lies halfway to the
    next mass with another choice; the last row reaches ``m_max_last`` (GeV).

    >>> import pandas as pd
    >>> choice = pd.DataFrame({"mass": [0.05, 0.06, 0.07, 0.08], "window_sigmas": [3.0, 3.0, 4.0, 4.0]})
    >>> degree_table_rows(choice, lambda m: 5 if m < 0.066 else 3)
    [[0.065, 5, 3.0], [1.0, 3, 4.0]]
    """
    table = choice.sort_values("mass")
    keys = [(degree(float(m)), float(k)) for m, k in zip(table.mass, table.window_sigmas, strict=True)]
    masses = table.mass.to_numpy(dtype=float)
    rows: list[list[float]] = []
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if last or keys[i + 1] != key:
            m_max = m_max_last if last else round(float(0.5 * (masses[i] + masses[i + 1])), 6)
            rows.append([float(m_max), key[0], key[1]])
    return rows
