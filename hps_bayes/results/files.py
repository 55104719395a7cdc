"""Files: atomic writes (every file the package writes goes through :func:`atomic_path`), strict JSON, content hashes,
and the user's cache folder (:func:`user_cache_dir`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to: when the block ends without an error it
    replaces ``path`` (``os.replace``, atomic on one filesystem), otherwise it is removed, so
    readers see the old file or the whole new one, never a part.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     target = Path(folder) / "a.txt"
    ...     with atomic_path(target) as tmp:
    ...         _ = tmp.write_text("done")
    ...     target.read_text(), sorted(p.name for p in Path(folder).iterdir())
    ('done', ['a.txt'])
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp, tmp.open("x", encoding="utf-8") as fh:
        fh.write(text)
    return Path(path)


def strict_json_value(obj: Any) -> Any:
    """``obj`` with every NaN and infinity (also inside arrays, numpy scalars, nested containers)
    replaced by None, so that it can be written as strict JSON (``null``).

    >>> strict_json_value({"a": float("nan"), "b": [1.0, float("inf")], "c": "x"})
    {'a': None, 'b': [1.0, None], 'c': 'x'}
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {key: strict_json_value(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json_value(value) for value in obj]
    if hasattr(obj, "tolist") or (hasattr(obj, "item") and not isinstance(obj, (str, bytes))):
        return strict_json_value(_json_default(obj))
    return obj


def write_json(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Atomic, strict JSON: NaN and infinities are written as ``null`` (as jq and JavaScript read it);
    readers of numbers turn ``null`` back into NaN (:func:`hps_bayes.results.objects.record_from_dict`)."""
    text = json.dumps(strict_json_value(payload), indent=2, default=_json_default, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def read_json(path: str | Path) -> dict[str, Any]:
    with open(path) as fh:
        return dict(json.load(fh))


def write_table(path: str | Path, frame: Any) -> Path:
    """Atomic CSV (or Parquet when the suffix is ``.parquet``) of a DataFrame, or of a list of row dicts
    (:func:`hps_bayes.results.rows.write_rows`: the same file, without importing pandas)."""
    path = Path(path)
    if isinstance(frame, list):
        from hps_bayes.results.rows import write_rows

        return write_rows(path, frame)
    if path.suffix == ".parquet":
        with atomic_path(path) as tmp:
            frame.to_parquet(tmp, index=False)
        return path
    return atomic_write_text(path, frame.to_csv(index=False))


def content_hash(*arrays: Any) -> str:
    """SHA-256 (first 16 hex digits) of arrays' float64 bytes, or of a file's bytes for a path.

    >>> content_hash([1.0, 2.0]) == content_hash(np.array([1, 2]))
    True
    """
    digest = hashlib.sha256()
    for item in arrays:
        if isinstance(item, (str, Path)):
            digest.update(Path(item).read_bytes())
        else:
            digest.update(np.ascontiguousarray(item, dtype=np.float64).tobytes())
    return digest.hexdigest()[:16]


def user_cache_dir(kind: str) -> Path | None:
    """The folder of the package's cache ``kind`` (``spectra``, ``turnon``): under ``$HPS_BAYES_CACHE``
    (``off``: no cache, None), else ``$XDG_CACHE_HOME/hps_bayes``, else ``~/.cache/hps_bayes``.

    What is kept there is keyed by the content it was computed from, so it is never stale; deleting
    the folder only costs the time to compute it again.
    """
    chosen = os.environ.get("HPS_BAYES_CACHE", "").strip()
    if chosen.lower() in {"off", "0", "false", "no"}:
        return None
    base = Path(chosen).expanduser() if chosen else \
        Path(os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache") / "hps_bayes"
    return base / kind
