"""Every module imports without side effects (what ``--doctest-modules`` relies on): in a fresh process in an
empty folder, importing all of them writes no file and prints nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import importlib, pkgutil
import hps_bayes
names = sorted(m.name for m in pkgutil.walk_packages(hps_bayes.__path__, "hps_bayes."))
for name in names:
    importlib.import_module(name)
print(len(names), file=__import__("sys").stderr)
"""


def test_importing_every_module_writes_and_prints_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "MPLBACKEND": "Agg", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == ""
    assert int(proc.stderr.strip().splitlines()[-1]) > 50  # every module was imported
    assert list(tmp_path.iterdir()) == []
