"""Result tables as lists of row dicts, written as pandas writes the DataFrame of the same rows.

A command-line scan writes its tables (``results_single.csv``, its Parquet copy) and its HEPData
record straight from its rows: building a pandas DataFrame first costs the pandas import, about
0.3 s and 80 MB of every chunk's process — more than the fits of ten masses.  CSV goes through the
standard :mod:`csv` module and Parquet through pyarrow (what pandas itself writes Parquet with).  The
cells are pandas' (floats as ``repr``, NaN and None empty, the integers of a column that also holds
floats written as floats), so a table reads back the same whichever way it was written
(``tests/results/test_rows.py`` compares the bytes and the Parquet read back).
"""

from __future__ import annotations

import csv
import io
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hps_bayes.results.files import atomic_path, atomic_write_text

Row = Mapping[str, Any]


def _columns(rows: Sequence[Row]) -> list[str]:
    """The columns in the order of their first appearance (as ``pandas.DataFrame(rows)``)."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _is_float(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_, numbers.Integral))


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _column_values(rows: Sequence[Row], name: str) -> list[Any]:
    """One column's values as plain Python objects; a column of integers and floats (or integers and
    missing values) becomes floats, as pandas makes it float64."""
    values: list[Any] = [row.get(name) for row in rows]
    plain = [bool(v) if isinstance(v, (bool, np.bool_)) else int(v) if _is_int(v) else float(v) if _is_float(v)
             else v for v in values]
    present = [v for v in plain if v is not None]
    numeric = bool(present) and all(_is_int(v) or _is_float(v) for v in present)
    if numeric and (len(present) < len(plain) or any(_is_float(v) for v in present)):
        return [math.nan if v is None else float(v) for v in plain]
    return plain


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def csv_text(rows: Sequence[Row]) -> str:
    """The text of ``pandas.DataFrame(rows).to_csv(index=False)``."""
    names = _columns(rows)
    columns = [_column_values(rows, name) for name in names]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    writer.writerows([_cell(column[i]) for column in columns] for i in range(len(rows)))
    return buffer.getvalue()


def _arrow_type(values: list[Any]) -> Any:
    import pyarrow as pa

    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not present:
        return pa.float64() if any(isinstance(v, float) for v in values) else pa.null()
    if all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if all(_is_int(v) for v in present):
        return pa.int64()
    return pa.float64() if all(_is_float(v) for v in present) else pa.string()


def write_rows(path: str | Path, rows: Sequence[Row]) -> Path:
    """Atomic CSV, or Parquet when the suffix is ``.parquet``, of ``rows`` (one dict per row).

    The Parquet file is the CSV text read by pyarrow's CSV reader with each column's type given: building
    pyarrow arrays from Python objects imports pandas (pyarrow checks every input for pandas types)."""
    path = Path(path)
    text = csv_text(rows)
    if path.suffix != ".parquet":
        return atomic_write_text(path, text)
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    names = _columns(rows)
    if not names:  # no rows: an empty table, as pandas writes one
        import pyarrow as pa

        with atomic_path(path) as tmp:
            pq.write_table(pa.table({}), tmp)
        return path
    types = {name: _arrow_type(_column_values(rows, name)) for name in names}
    table = pa_csv.read_csv(io.BytesIO(text.encode()), parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                            convert_options=pa_csv.ConvertOptions(column_types=types, strings_can_be_null=False,
                                                                  quoted_strings_can_be_null=False))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


@dataclass(frozen=True)
class Columns:
    """A results table's columns as NumPy arrays, from a DataFrame or from a list of row dicts (what the
    figures of a scan read: :mod:`hps_bayes.plots.scan`)."""

    arrays: dict[str, np.ndarray]
    n: int

    @classmethod
    def of(cls, table: Any) -> Columns:
        if isinstance(table, Sequence):
            names = list(dict.fromkeys(name for row in table for name in row))
            return cls({name: np.array([row.get(name) for row in table], dtype=object) for name in names}, len(table))
        return cls({str(c): table[c].to_numpy() for c in table.columns}, len(table))

    def floats(self, name: str) -> np.ndarray:
        return np.asarray(self.arrays[name]).astype(float)

    def strings(self, name: str) -> np.ndarray:
        return np.asarray(self.arrays[name]).astype(str)

    def sorted_by(self, name: str) -> Columns:
        order = np.argsort(self.floats(name), kind="stable")
        return Columns({key: values[order] for key, values in self.arrays.items()}, self.n)
