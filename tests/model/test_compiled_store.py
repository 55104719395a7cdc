"""The compiled window model is stored once and loaded by later processes: same functions, same
numbers, no PyMC; an unreadable file is rebuilt with a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from hps_bayes.model import compiled
from hps_bayes.model.compiled import CompiledWindowModel

KEY = (4, 3, 1.5, "expquad")  # a small model with a GP: the stored set includes the HSGP basis


def _outputs(model: CompiledWindowModel) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    n = 12
    t = np.linspace(-0.9, 0.9, n)
    basis = model.hsgp_basis(t, 0.3, 0.4)
    args = [rng.poisson(50.0, n).astype(float), np.zeros(model.n_aux),
            np.polynomial.legendre.legvander(t, model.poly_degree), basis, np.full(n, 1.0 / n),
            np.full(n, np.log(50.0)), np.asarray(2.0)]
    theta = 0.01 * rng.standard_normal(model.n_params)
    f, g, h = model._fn_full(theta, *args)
    return [np.asarray(f), np.asarray(g), np.asarray(h), np.asarray(model._fn_parts(theta, *args[2:])), basis]


def test_stored_model_is_loaded_with_the_same_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    store = tmp_path / "window.pkl"
    monkeypatch.setattr(compiled, "persisted_path", lambda key: store)
    built = CompiledWindowModel(KEY)
    assert store.exists()
    first = _outputs(built)

    def no_compile(self: CompiledWindowModel) -> None:
        raise AssertionError("the stored functions should have been loaded")

    with monkeypatch.context() as patch:
        patch.setattr(CompiledWindowModel, "_compile", no_compile)
        loaded = CompiledWindowModel(KEY)
    for a, b in zip(first, _outputs(loaded), strict=True):
        np.testing.assert_array_equal(a, b)
    assert loaded.pymc_model is not None  # built on demand (e.g. for a posterior)

    store.write_bytes(b"not a pickle")
    with caplog.at_level(logging.WARNING, logger="hps_bayes.model.compiled"):
        rebuilt = CompiledWindowModel(KEY)
    assert "could not be loaded" in caplog.text
    for a, b in zip(first, _outputs(rebuilt), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_store_depends_on_the_key() -> None:
    assert compiled.persisted_path(KEY) != compiled.persisted_path((5, 3, 1.5, "expquad"))
    assert compiled.persisted_path(KEY) == compiled.persisted_path(KEY)
    assert compiled.persisted_path(KEY).parent.name == "hps_bayes"
