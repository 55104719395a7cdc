"""Progress bars: shown when asked (or on a terminal), and tqdm imported only then."""

from __future__ import annotations

import subprocess
import sys

from hps_bayes.results.progress import progress_bar


def test_a_bar_only_where_asked_and_tqdm_only_with_a_bar(capsys) -> None:
    items = [1, 2, 3]
    assert progress_bar(items, False, desc="x") is items
    shown = progress_bar(items, True, desc="masses", unit="mass")
    assert list(shown) == items and shown is not items
    assert "masses" in capsys.readouterr().err
    # None: a bar only on a terminal; the test's stderr is a pipe, so none and no tqdm import
    code = ("import sys; from hps_bayes.results.progress import progress_bar; items = [1]; "
            "assert progress_bar(items, None) is items; print('tqdm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
