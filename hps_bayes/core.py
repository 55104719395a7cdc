"""Types every layer shares (no dependencies beyond numpy)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class FitData:
    """Observed counts and constraint centres ("global observables") of one (pseudo-)experiment."""

    counts: FloatArray
    aux: FloatArray = field(default_factory=lambda: np.zeros(0))
