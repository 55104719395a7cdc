"""Progress bars (tqdm) of the package's loops over masses, cells and models.

A bar is shown when the caller asks for one (``progress=True``) or, for ``progress=None``, when
stderr is a terminal (as tqdm's ``disable=None``).  tqdm is imported only where a bar is shown:
importing it costs 0.06-0.1 s, a noticeable part of a short run's start.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any


def progress_bar[T](items: Iterable[T], progress: bool | None, **options: Any) -> Iterable[T]:
    """``items`` with a tqdm bar (``options`` go to tqdm: ``desc``, ``unit``, ``leave``...), or ``items``
    itself where no bar is shown."""
    if not (progress if progress is not None else sys.stderr.isatty()):
        return items
    from tqdm.auto import tqdm

    return tqdm(items, **options)
