"""Batch files of toys made by separate jobs of a multirun: the batch number, a batch kept, the ones missing.

Look-elsewhere toy scans (:mod:`hps_bayes.analysis.toyscans`, ``task=lee``) and band toys
(:mod:`hps_bayes.analysis.bandbatches`, ``task=bands task.batch=k``) are both written as one ``.npz``
per batch under the run folder, with the key they were made under (JSON) and the grid of masses;
both sweep ``task.batch`` over ``range(task.n_batches)`` and both keep a batch already written under
the same key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hps_bayes.core import FloatArray
from hps_bayes.errors import ConfigError

log = logging.getLogger(__name__)


def check_batch(batch: int, n_batches: int | None, what: str) -> None:
    """``batch`` must lie in ``range(n_batches)`` (``n_batches`` None: any batch ≥ 0), ``n_batches`` ≥ 1."""
    if n_batches is not None and n_batches < 1:
        raise ConfigError(f"task.n_batches = {n_batches}: use the number of batches swept, or null")
    if batch < 0 or (n_batches is not None and not batch < n_batches):
        raise ConfigError(f"{what} {batch} is not in 0..{(n_batches or 1) - 1}; sweep task.batch over "
                          f"range(task.n_batches), e.g. 'task.batch=range({n_batches or 10})'")


def kept_batch(path: Path, key: Mapping[str, Any], masses: FloatArray, what: str) -> bool:
    """Whether the batch file ``path`` exists with the same ``key`` and grid ``masses`` (then it is kept);
    one that is unreadable or was made otherwise is made again (both logged)."""
    if not path.exists():
        return False
    try:
        with np.load(path, allow_pickle=False) as data:
            same = json.loads(str(data["key"])) == key and np.array_equal(data["masses"], masses)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("%s %s is unreadable (%s): computing it again", what, path, exc)
        return False
    if same:
        log.info("%s %d already done (%s): reused", what, int(key["batch"]), path)
    else:
        log.warning("%s %s was made with other settings or data: computing it again", what, path)
    return bool(same)


def missing_batches(keys: Iterable[Mapping[str, Any]]) -> tuple[list[int], list[int]]:
    """The batch numbers found in the batch files' ``keys`` (sorted), and those missing from the sweeps the
    keys name (``n_batches``; none when no key names one)."""
    found, expected = [], set()
    for key in keys:
        found.append(int(key["batch"]))
        if key.get("n_batches"):
            expected |= set(range(int(key["n_batches"])))
    return sorted(found), sorted(expected - set(found))
