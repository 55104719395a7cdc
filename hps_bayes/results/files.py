"""Atomic writes of JSON and tables."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Atomic JSON (NaN written as JSON ``NaN``, as Python's json reads back)."""
    return atomic_write_text(path, json.dumps(payload, indent=2, default=_json_default) + "\n")


def read_json(path: str | Path) -> dict[str, Any]:
    with open(path) as fh:
        return dict(json.load(fh))


def write_table(path: str | Path, frame: Any) -> Path:
    """Atomic CSV (or Parquet when the suffix is ``.parquet``)."""
    path = Path(path)
    if path.suffix == ".parquet":
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        return path
    return atomic_write_text(path, frame.to_csv(index=False))
