"""The structure floor σ_struct: closed forms, and toys drawn as the demo draws its structure."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import cho_factor, cho_solve

from hps_bayes.errors import InputError
from hps_bayes.physics.signal import signal_template
from hps_bayes.studies.structure_floor import (
    StructureLaw,
    best_floor,
    demo_structure_law,
    structure_covariance,
    structure_floor,
)

EDGES = np.linspace(0.02, 0.08, 121)  # 0.5 MeV bins
CENTRES = 0.5 * (EDGES[1:] + EDGES[:-1])
NU = 2e5 * (CENTRES / 0.02) ** -2.6  # a power law (linear in ln m), 2e5 .. 5e3 events per bin
MASS, SIGMA = 0.05, 0.0025
LAW = StructureLaw(0.004, (0.35, 0.7))


def test_without_envelope_or_structure_the_floor_is_the_known_background_error() -> None:
    point = structure_floor(EDGES, NU, MASS, SIGMA, StructureLaw(0.0, (0.35, 0.7)), half_width=10.0, degree=None)
    inside = np.abs(CENTRES - MASS) < 10 * SIGMA
    template = signal_template(EDGES[np.r_[inside, False] | np.r_[False, inside]], MASS, SIGMA)
    expected = 1.0 / np.sqrt(np.sum(template**2 / NU[inside]))
    assert point.known == pytest.approx(expected, rel=1e-12)
    assert point.envelope == pytest.approx(expected, rel=1e-12)
    assert point.structure == pytest.approx(expected, rel=1e-12)


def test_the_covariance_is_the_mean_cosine_over_the_wavelengths() -> None:
    u = np.log(CENTRES[::7])
    lam = np.linspace(0.35, 0.7, 200_001)
    d = u[:, None] - u[None, :]
    numeric = LAW.amplitude**2 * np.trapezoid(np.cos(2 * np.pi * d[..., None] / lam), lam, axis=-1) / 0.35
    np.testing.assert_allclose(structure_covariance(u, LAW), numeric, rtol=0, atol=1e-10 * LAW.amplitude**2)  # the quadrature: 4.7e-11
    assert structure_covariance(u, LAW)[0, 0] == pytest.approx(LAW.amplitude**2, rel=1e-14)


def test_the_floor_is_the_scatter_of_the_best_estimate_on_toys_drawn_as_the_demo_draws_its_structure() -> None:
    """Eight sinusoids in ln m with wavelengths uniform in the law's range, random phases and
    normal weights (RMS a), Poisson noise: the generalised least squares estimate of A scatters
    by σ_struct, well above the envelope-only σ."""
    law = StructureLaw(0.01, (0.35, 0.7))
    point = structure_floor(EDGES, NU, MASS, SIGMA, law, half_width=8.0, degree=2)
    assert point.structure > 1.5 * point.envelope
    inside = np.abs(CENTRES - MASS) < 8 * SIGMA
    nu, u = NU[inside], np.log(CENTRES[inside])
    template = signal_template(EDGES[np.r_[inside, False] | np.r_[False, inside]], MASS, SIGMA)
    t = 2 * (u - u[0]) / (u[-1] - u[0]) - 1
    x = np.column_stack([template, nu[:, None] * np.polynomial.legendre.legvander(t, 2)])
    factor = cho_factor(np.diag(nu) + nu[:, None] * structure_covariance(u, law) * nu[None, :])
    estimator = np.linalg.solve(x.T @ cho_solve(factor, x), cho_solve(factor, x).T)[0]
    rng = np.random.default_rng(5)
    n_toys, n_terms = 4000, 8
    lam = rng.uniform(0.35, 0.7, (n_toys, n_terms))
    phase = rng.uniform(0, 2 * np.pi, (n_toys, n_terms))
    weight = rng.normal(0, law.amplitude * np.sqrt(2.0 / n_terms), (n_toys, n_terms))
    structure = np.einsum("tk,tkb->tb", weight, np.sin(2 * np.pi * u[None, None, :] / lam[..., None] + phase[..., None]))
    counts = rng.poisson(nu * np.exp(structure))
    a_hat = counts @ estimator
    scatter = a_hat.std(ddof=1)
    # the estimate of a standard deviation from 4000 toys has a relative error of 1.1 %
    assert scatter == pytest.approx(point.structure, rel=0.035)
    assert abs(a_hat.mean()) < 4 * scatter / np.sqrt(n_toys) + 0.01 * point.structure


def test_the_bias_is_that_of_the_estimate_on_a_smooth_background_the_envelope_misses() -> None:
    exact = structure_floor(EDGES, NU, MASS, SIGMA, LAW, half_width=10.0, degree=2, smooth=NU)
    assert abs(exact.bias) < 1e-9 * exact.structure
    bump = 0.02 * exact.structure
    inside = np.abs(CENTRES - MASS) < 10 * SIGMA
    smooth = NU.copy()
    smooth[inside] += bump * signal_template(EDGES[np.r_[inside, False] | np.r_[False, inside]], MASS, SIGMA)
    missed = structure_floor(EDGES, NU, MASS, SIGMA, LAW, half_width=10.0, degree=2, smooth=smooth)
    assert missed.bias == pytest.approx(bump, rel=1e-3)


def test_the_best_floor_keeps_only_envelopes_that_describe_the_smooth_background() -> None:
    best = best_floor(EDGES, NU, NU, MASS, SIGMA, LAW)
    assert best is not None and abs(best.bias) <= 0.2 * best.structure
    tried = [structure_floor(EDGES, NU, MASS, SIGMA, LAW, half_width=w, degree=d) for w, d in ((7.0, 2), (10.0, 3))]
    assert best.structure <= min(p.structure for p in tried) * (1 + 1e-12)
    # a step 2σ away: only degree 9 in ±7σ follows it, at nearly 3 times the σ
    near = best_floor(EDGES, NU, NU * np.where(CENTRES > MASS + 2 * SIGMA, 1.5, 1.0), MASS, SIGMA, LAW)
    assert near is not None and (near.half_width, near.degree) == (7.0, 9) and near.structure > 2.5 * best.structure
    # a step under the signal: no smooth envelope follows it
    assert best_floor(EDGES, NU, NU * np.where(CENTRES > MASS, 1.5, 1.0), MASS, SIGMA, LAW) is None


def test_a_window_past_the_range_end_is_shifted_inside_it() -> None:
    clipped = structure_floor(EDGES, NU, 0.024, 0.001, LAW, half_width=10.0, degree=2)
    shifted = structure_floor(EDGES, NU, 0.024, 0.001, LAW, half_width=10.0, degree=2, bounds=(0.02, 0.08))
    assert shifted.structure < clipped.structure  # the shifted window keeps its 20σ of sidebands


def test_bad_laws_and_arrays_are_refused_with_the_fix() -> None:
    with pytest.raises(InputError, match="amplitude"):
        StructureLaw(-0.1, (0.35, 0.7))
    with pytest.raises(InputError, match="wavelengths"):
        StructureLaw(0.004, (0.7, 0.35))
    with pytest.raises(InputError, match="n \\+ 1 edges"):
        structure_floor(EDGES[:-1], NU, MASS, SIGMA, LAW)
    with pytest.raises(InputError, match="shape"):
        demo_structure_law("2019")
    assert demo_structure_law("2015").amplitude > demo_structure_law("2021").amplitude > 0


def test_the_command_prints_the_floor_of_a_demo_spectrum(capsys: pytest.CaptureFixture[str]) -> None:
    from hps_bayes.studies.structure_floor import main

    main(["2015", "--masses", "0.05:0.07:0.01"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[1:-1]]
    assert [float(r[0]) for r in rows] == [50.0, 60.0, 70.0]
    for row in rows:  # the structure costs sensitivity: the floor lies above the envelope-only σ
        envelope, floor = float(row[1]), float(row[2])
        assert 1.0 < envelope < floor < 4.0
    assert lines[-1].split()[0] == "median"
    main(["2015", "--masses", "0.05:0.07:0.01", "--scale", "3"])  # three times the structure costs more
    tripled = [line.split() for line in capsys.readouterr().out.splitlines()[1:-1]]
    assert all(float(t[2]) > float(r[2]) for t, r in zip(tripled, rows, strict=True))
    # the same RMS at wavelengths of 15-40 sigma(m)/m, which an envelope follows, costs less
    main(["2015", "--masses", "0.05:0.07:0.01", "--law-seed", "51", "--wavelengths", "0.75", "2.0"])
    longer = [line.split() for line in capsys.readouterr().out.splitlines()[1:-1]]
    assert all(float(r[1]) <= float(w[2]) < float(r[2]) for w, r in zip(longer, rows, strict=True))
