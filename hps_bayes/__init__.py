"""hps_bayes: the dark-photon bump hunt of the Heavy Photon Search with a GP background.

Public API (stable)::

    spectrum = hps_bayes.load_spectrum("hps2015.root", "invariant_mass")
    result = hps_bayes.evaluate_mass(spectrum, 0.030, dataset="2015")
    frame = hps_bayes.run_scan(spectrum, dataset="2015")
    cfg = hps_bayes.load_config(overrides=["dataset=hps2016"])
    hps_bayes.stats.cls_upper_limit(observed, background, template)

Heavy modules (PyMC, PyTensor) are imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_spectrum": ("hps_bayes.inputs.root_io", "load_spectrum"),
    "Spectrum": ("hps_bayes.inputs.spectrum", "Spectrum"),
    "evaluate_mass": ("hps_bayes.analysis.point", "evaluate_mass"),
    "run_scan": ("hps_bayes.analysis.scan", "run_scan"),
    "load_config": ("hps_bayes.cli.config", "load_config"),
    "MassPointResult": ("hps_bayes.results.objects", "MassPointResult"),
}

__all__ = ["MassPointResult", "Spectrum", "__version__", "evaluate_mass", "load_config", "load_spectrum", "run_scan", "stats"]


def __getattr__(name: str) -> Any:
    import importlib

    if name == "stats":
        return importlib.import_module("hps_bayes.stats")
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'hps_bayes' has no attribute {name!r}")
