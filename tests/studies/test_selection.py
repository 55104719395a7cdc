"""The background chosen per mass from the data (task=select) and a scan that uses it."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hps_bayes.cli.tasks import run_task
from hps_bayes.physics.demo import write_demo_file
from hps_bayes.physics.presets import load_preset
from hps_bayes.studies.zspread import spread_reference

CANDIDATES = "task.use=[w10_d10,w7_d3,turnon_w10_d10]"
GRID = ["task.step=0.01", "task.mass_min=0.02", "task.mass_max=0.09", "task.n_toys=8"]


@pytest.fixture(scope="module")
def structured_2015(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A structured 2015-like demo spectrum with the real run's 21.5M events (the structure matters at that size)."""
    path = tmp_path_factory.mktemp("data") / "demo.root"
    return write_demo_file(path, load_preset("demo"), n_events=21.5e6, seed=11, shape="2015", structured=True)


@pytest.fixture(scope="module")
def selection(structured_2015: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("select")
    run_task("select", [f"dataset.path={structured_2015}", CANDIDATES, *GRID], out)
    return out


def test_selection_keeps_adequate_models_and_serves_the_turn_on(selection: Path) -> None:
    content = json.loads((selection / "selection_demo.json").read_text())
    cells = pd.read_csv(selection / "selection_cells.csv")
    rows = pd.DataFrame(content["rows"])
    assert np.allclose(rows.mass, np.arange(0.02, 0.0901, 0.01))
    # degree 3 in ±7σ cannot follow the spectrum's structure: its Z on the data spreads far beyond 1
    stiff = content["candidates"]["w7_d3"]
    assert stiff["z_spread_corrected"] > 2.0 and stiff["chosen_at"] == 0
    assert not cells[cells.model == "w7_d3"].passes.any()  # it fails the window fit or its sidebands first
    # only the turn-on-aware model reaches 20 MeV (the others start above the sharp turn-on at 26 MeV)
    assert rows.model.iloc[0] == "turnon_w10_d10"
    assert not cells[(cells.model == "w10_d10") & (cells.mass < 0.027)].available.any()
    # every mass is served (or says why), with S, sigma_tot = hypot(sigma_stat, S) and its ratio to the floor
    served = rows[rows.model != ""]
    assert len(served) + (rows.reason != "").sum() == len(rows) and len(served) >= 6
    np.testing.assert_allclose(served.sigma_tot, np.hypot(served.sigma_stat, served.spurious), rtol=1e-12)
    assert (served.ratio > 1.0).all()
    # S is the model's largest bias over +-1 grid mass in units of rho*sigma (none of these models has a GP);
    # on this 10 MeV grid that carries a bias measured on the turn-on to the next grid mass, scaled up by its background
    for row in served.itertuples():
        own = cells[cells.model == row.model].set_index("mass")
        near = own[np.abs(own.index - row.mass) < 0.0101]
        scale = own.rho[row.mass] * own.sigma_m[row.mass]
        assert row.spurious == pytest.approx(scale * np.nanmax(near.spurious_raw / (near.rho * near.sigma_m)), rel=1e-9)
    assert set(content["models"]) == set(served.model)
    assert content["models"]["turnon_w10_d10"]["turn_on_mass"] > 0.015  # measured on the data, stored
    assert (selection / "selection_demo.png").stat().st_size > 10_000


def test_scan_uses_the_selection_and_records_the_model(selection: Path, structured_2015: Path,
                                                       tmp_path: Path) -> None:
    path = selection / "selection_demo.json"
    rows = pd.DataFrame(json.loads(path.read_text())["rows"]).set_index("mass")
    run_task("scan", [f"dataset.path={structured_2015}", f"background.selection={path}", "scan.step=0.01",
                      "scan.mass_min=0.02", "scan.mass_max=0.09", "plots.per_mass=false", "plots.summary=false"],
             tmp_path)
    table = pd.read_csv(tmp_path / "results_single.csv")
    assert len(table) == len(rows)
    for result in table.itertuples():
        chosen = rows.loc[rows.index[np.argmin(np.abs(rows.index - result.mass))]]
        if chosen.model:
            assert result.background_model == chosen.model and result.status == "ok", result
            # S = S_rel · ρ · σ with ρ the template-weighted observed density
            assert result.spurious_signal > 0
        else:
            assert result.status == "input_error" and "no candidate background serves" in result.message
    numbers = json.loads(next(tmp_path.rglob("numbers.json")).read_text())
    assert numbers["result"]["background_model"] in rows.model.to_numpy()


def test_a_weighted_histogram_gets_the_selection_of_its_effective_counts(selection: Path, structured_2015: Path,
                                                                         tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """task=select analyses a weighted histogram (sum w² ≠ sum w) as scaled Poisson counts, as the scan
    does: S is stored relative to the spectrum's density, so the scan of the weighted file may use it."""
    from hps_bayes.inputs.root_io import load_spectrum, write_spectra_root
    from hps_bayes.inputs.spectrum import Spectrum

    raw = load_spectrum(structured_2015, "invariant_mass")
    weight = 0.37  # every event weighted 0.37: effective counts n = sum(w)^2/sum(w^2) per bin, as unweighted
    weighted = Spectrum(edges=raw.edges, counts=weight * raw.counts, variances=weight**2 * raw.counts,
                        name=raw.name, source="weighted")
    path = write_spectra_root(tmp_path / "weighted.root", {"invariant_mass": weighted})
    run_task("select", [f"dataset.path={path}", CANDIDATES, *GRID], tmp_path / "select")
    mine = pd.DataFrame(json.loads((tmp_path / "select" / "selection_demo.json").read_text())["rows"])
    theirs = pd.DataFrame(json.loads((selection / "selection_demo.json").read_text())["rows"])
    assert list(mine.model) == list(theirs.model)
    # the data's fits agree to 1e-10 (σ_stat, in effective events as the scan's) and 2e-8 (Z); S to 1e-5: the
    # truths' least-squares fits stop within their tolerance on inputs that differ by rounding
    for column, rtol in (("sigma_stat", 1e-9), ("z", 1e-6), ("spurious_rel", 5e-5), ("ratio", 5e-5)):
        np.testing.assert_allclose(mine[column], theirs[column], rtol=rtol, err_msg=column)
    # the scan of the same weighted file takes its selection as made on it (as read, or in effective counts)
    with caplog.at_level(logging.WARNING, logger="hps_bayes.model.selection"):
        run_task("scan", [f"dataset.path={path}", f"background.selection={tmp_path / 'select' / 'selection_demo.json'}",
                          "scan.step=0.02", "scan.mass_min=0.03", "scan.mass_max=0.07", "plots.per_mass=false",
                          "plots.summary=false", "stats.lee_toys=0"], tmp_path / "scan")
    assert "another spectrum" not in caplog.text
    assert (pd.read_csv(tmp_path / "scan" / "results_single.csv").status == "ok").all()


def test_missing_data_costs_only_the_masses_that_reach_into_it(selection: Path, structured_2015: Path,
                                                                 tmp_path: Path) -> None:
    """A run of empty bins (missing data) at 80-82 MeV: the truths are fitted without it, and the windows, of the
    data and of the truths alike, stop at it as at a range end. The mass inside it is refused with its reason;
    the masses whose ±10σ(m) windows reached across it before (60-70 MeV: refused then) are served."""
    from hps_bayes.inputs.root_io import load_spectrum, write_spectra_root
    from hps_bayes.inputs.spectrum import Spectrum

    raw = load_spectrum(structured_2015, "invariant_mass")
    centres = 0.5 * (raw.edges[1:] + raw.edges[:-1])
    counts = np.where((centres > 0.080) & (centres < 0.082), 0.0, raw.counts)
    path = write_spectra_root(tmp_path / "hole.root", {"invariant_mass": Spectrum(
        edges=raw.edges, counts=counts, variances=counts, name=raw.name, source="hole")})
    run_task("select", [f"dataset.path={path}", CANDIDATES, *GRID], tmp_path / "select")
    mine = pd.DataFrame(json.loads((tmp_path / "select" / "selection_demo.json").read_text())["rows"])
    theirs = pd.DataFrame(json.loads((selection / "selection_demo.json").read_text())["rows"])
    assert list(mine.mass) == list(theirs.mass)
    inside = mine[np.isclose(mine.mass, 0.08)]
    assert list(inside.model) == [""] and "lies in bins 80.00-82.00 MeV" in inside.reason.iloc[0]
    assert (mine.model[(mine.mass > 0.055) & (mine.mass < 0.075)] != "").all()
    cells = pd.read_csv(tmp_path / "select" / "selection_cells.csv")
    fitted = cells[cells.window_lo.notna()]
    assert len(fitted) > 0 and ((fitted.window_hi <= 0.0800001) | (fitted.window_lo >= 0.0819999)).all()


def test_where_no_truth_describes_a_window_s_comes_from_the_flexible_fit(structured_2015: Path) -> None:
    """Very precise data: no truth of task.families describes the window (χ² p < 1e-3); S then comes from the
    data's flexible fit, and the cell says so; where that fails too, the cell fails with the reason."""
    from dataclasses import replace as swap

    from hps_bayes.analysis.grid import prepare_spectrum, whole_range_spectrum
    from hps_bayes.analysis.settings import resolve_settings
    from hps_bayes.inputs.root_io import load_spectrum
    from hps_bayes.inputs.spectrum import crop
    from hps_bayes.studies.selection import FALLBACK_TRUTH, NO_TRUTH, candidate_settings, data_cell
    from hps_bayes.studies.spurious import fit_truth

    base = resolve_settings("demo")
    data = load_spectrum(structured_2015, "invariant_mass")
    own = candidate_settings(base, "w10_d10", {"poly_degree": 10, "window_sigmas": 10.0}, data)
    spec = prepare_spectrum(data, own)
    whole = whole_range_spectrum(data, base)
    cut = lambda truth: crop(truth, float(spec.edges[0]), float(spec.edges[-1]))
    smooth = cut(fit_truth(whole, "smooth"))
    wrong = swap(smooth, counts=1.05 * smooth.counts, variances=1.05 * smooth.counts, name="wrong")  # 5 % off
    flexible = cut(fit_truth(whole, FALLBACK_TRUTH))
    values, _, _ = data_cell(spec, [wrong], 0.05, own, [own], fallback=(flexible, own))
    assert values["p_wrong"] < 1e-10 and values["p_flexible"] > 1e-3 and values["n_truths"] == 1
    assert values["spurious_raw"] == abs(values["A_flexible"])
    assert "S from the 'flexible' truth" in values["truth_note"] and "best: wrong" in values["truth_note"]
    alone, _, _ = data_cell(spec, [wrong], 0.05, own, [own])  # no fallback: nothing to measure S on
    assert alone["n_truths"] == 0 and not np.isfinite(alone["spurious_raw"]) and alone["truth_note"] == ""
    plain, _, _ = data_cell(spec, [smooth], 0.05, own, [own], fallback=(flexible, own))
    assert plain["truth_note"] == "" and "A_flexible" not in plain  # tried only where needed
    assert "S cannot be measured" in NO_TRUTH


def test_a_window_without_a_gp_needs_a_truth_that_describes_it_well(structured_2015: Path) -> None:
    """A polynomial window's S counts only truths with window p >= truth_min_p_without_gp (structure the truths
    leave in the data biases it beyond S); a GP-carried window (eta > 0) keeps the plausibility bound of 1e-3,
    and its sigma_prior (the part of sigma_stat its GP prior holds) is reported for S beyond the prior."""
    from hps_bayes.analysis.grid import prepare_spectrum, whole_range_spectrum
    from hps_bayes.analysis.settings import resolve_settings
    from hps_bayes.inputs.root_io import load_spectrum
    from hps_bayes.inputs.spectrum import crop
    from hps_bayes.studies.selection import PLAUSIBLE_P, _truth_settings, candidate_settings, data_cell
    from hps_bayes.studies.spurious import fit_truth

    base = resolve_settings("demo")
    data = load_spectrum(structured_2015, "invariant_mass")
    whole = whole_range_spectrum(data, base)
    smooth = fit_truth(whole, "smooth")
    gp = {"turn_on": "factor", "poly_degree": 3, "window_sigmas": 10.0, "hyper": "marginal", "hyper_scope": "window",
          "lengthscale_min": 4.0, "n_basis": 20}
    cells = {}
    for name, overrides in (("w10_d10", {"poly_degree": 10, "window_sigmas": 10.0}), ("gp_d3", gp)):
        own = candidate_settings(base, name, overrides, data)
        spec = prepare_spectrum(data, own)
        truth = crop(smooth, float(spec.edges[0]), float(spec.edges[-1]))
        cells[name] = {bound: data_cell(spec, [truth], 0.05, own, [_truth_settings(truth, own)],
                                        min_p_without_gp=bound)[0] for bound in (PLAUSIBLE_P, 0.9999)}
    loose, strict = cells["w10_d10"][PLAUSIBLE_P], cells["w10_d10"][0.9999]
    assert loose["eta"] == 0 and PLAUSIBLE_P <= loose["p_smooth"] < 0.9999 and loose["n_truths"] == 1
    assert strict["n_truths"] == 0 and strict["truth_min_p"] == 0.9999 and not np.isfinite(strict["spurious_raw"])
    assert loose["sigma_prior"] == 0.0
    gp_cell = cells["gp_d3"][0.9999]
    assert gp_cell["eta"] > 0 and gp_cell["truth_min_p"] == PLAUSIBLE_P and gp_cell["n_truths"] == 1
    assert gp_cell["spurious_raw"] == cells["gp_d3"][PLAUSIBLE_P]["spurious_raw"]
    assert 0.1 * gp_cell["sigma_stat"] < gp_cell["sigma_prior"] < gp_cell["sigma_stat"]


def test_the_flexible_truth_is_fitted_to_its_minimum(structured_2015: Path) -> None:
    """The degree-24 truth stopped early on a flat stretch (chi2 one unit above the minimum) and moved by 0.4 %
    when the input changed by rounding (a weighted copy of the file): its fit now converges to 4e-7."""
    from dataclasses import replace as swap

    from hps_bayes.analysis.grid import whole_range_spectrum
    from hps_bayes.analysis.settings import resolve_settings
    from hps_bayes.inputs.root_io import load_spectrum
    from hps_bayes.studies.spurious import fit_truth

    whole = whole_range_spectrum(load_spectrum(structured_2015, "invariant_mass"), resolve_settings("demo"))
    rounded = swap(whole, counts=(0.37 * whole.counts) / 0.37)
    assert 0 < np.max(np.abs(rounded.counts / whole.counts - 1)) < 1e-15
    one, other = fit_truth(whole, "flexible"), fit_truth(rounded, "flexible")
    np.testing.assert_allclose(one.counts, other.counts, rtol=2e-6)


def test_a_scan_with_a_selection_resumes_and_runs_in_chunks(selection: Path, structured_2015: Path,
                                                            tmp_path: Path) -> None:
    """The run folder records the settings the points are computed with (the selection's range included):
    a rerun reuses them and the chunks of one scan share the folder (both were refused as 'other settings')."""
    args = [f"dataset.path={structured_2015}", f"background.selection={selection / 'selection_demo.json'}",
            "scan.step=0.01", "scan.mass_min=0.03", "scan.mass_max=0.07", "plots.per_mass=false",
            "plots.summary=false"]
    first = run_task("scan", args, tmp_path / "once")
    again = run_task("scan", args, tmp_path / "once")
    assert first.attrs["computed"] == 5 and again.attrs["computed"] == 0 and again.attrs["reused"] == 5
    for chunk in (0, 1):
        run_task("scan", [*args, "scan.n_chunks=2", f"scan.chunk={chunk}"], tmp_path / "chunks")
    merged = run_task("merge", [*args, "scan.n_chunks=2"], tmp_path / "chunks")
    assert len(merged) == 5 and (merged.status == "ok").all()


def test_spread_reference_of_correlated_normals() -> None:
    """Equicorrelated unit normals (ρ = 0.5) around a per-mass bias: the reference spread is c4(12)·√(1 − ρ) = 0.691
    whatever the bias (c4: the mean of a sample standard deviation of 12); 4000 draws, within 0.01 (measured 0.001)
    and the scatter of the spread within 0.02."""
    rng = np.random.default_rng(2)
    common = rng.standard_normal((4000, 1))
    z = np.sqrt(0.5) * common + np.sqrt(0.5) * rng.standard_normal((4000, 12)) + np.linspace(-2, 2, 12)
    expected, scatter = spread_reference(z)
    c4 = np.sqrt(2 / 11) * math.gamma(6) / math.gamma(5.5)
    assert expected == pytest.approx(c4 * np.sqrt(0.5), abs=0.01)
    assert scatter == pytest.approx(np.std(np.std(z - np.linspace(-2, 2, 12), axis=1, ddof=1), ddof=1), abs=0.02)


def test_a_signal_does_not_make_the_local_z_spread_fail() -> None:
    """The local Z spread leaves out the largest |Â/σ_A| and its neighbours: a 5σ signal with the side lobes a
    flexible background gives it (−1.6σ and −3σ at ±3 grid masses) leaves the corrected spread as on noise,
    while a spectrum-wide doubling of the scatter (mis-modelled structure) still doubles it."""
    from hps_bayes.studies.zspread import PEAK_HALF, local_spreads

    rng = np.random.default_rng(4)
    n_mass = 40
    toys = rng.standard_normal((400, n_mass))
    noise = rng.standard_normal(n_mass)
    signal = np.zeros(n_mass)
    signal[18:23] = [1.1, 3.4, 5.0, 3.4, 1.1]
    signal[[17, 23]] = -1.6
    signal[[16, 24]] = -3.0
    assert PEAK_HALF >= 4  # the lobes lie inside what is left out
    plain = local_spreads(noise, toys, 8)[:, 0]
    with_signal = local_spreads(noise + signal, toys, 8)[:, 0]
    structure = local_spreads(2.0 * noise, toys, 8)[:, 0]
    assert np.nanmax(with_signal[16:25]) < 1.6, with_signal[16:25]
    np.testing.assert_allclose(np.nanmedian(structure / plain), 2.0, rtol=1e-12)


def test_a_mass_where_every_candidate_fails_the_z_spread_alone_keeps_the_nearest_with_a_note() -> None:
    """Two large fluctuations of the data within the local window fail the Z spread of every candidate: the mass
    keeps the one nearest its allowed spread that passes the other checks, with a note.  Where another candidate
    passes the Z spread, a candidate's failure of it is its own: without another model the mass says why."""
    from hps_bayes.analysis.settings import resolve_settings
    from hps_bayes.studies.selection import SPREAD_FAILS, Criteria, _with_totals, selection_content

    base = {"available": True, "reason": "", "z": 0.5, "spurious_raw": 10.0, "sigma_stat": 100.0,
            "sigma_asimov": 100.0, "sigma_floor": 50.0, "gof_p": 0.5, "sideband_z": 1.0, "rho": 1e4,
            "sigma_m": 1e-3, "z_spread_expected": 0.8, "z_spread_toys_sd": 0.2}
    cells = [  # (model, mass, corrected spread, sigma_stat, gof p)
        ("stiff", 0.05, 1.0, 80.0, 0.5), ("flexible", 0.05, 1.0, 120.0, 0.5),    # both pass: the smaller sigma
        ("stiff", 0.06, 2.6, 80.0, 0.5), ("flexible", 0.06, 2.1, 120.0, 0.5),    # both fail the spread alone
        ("stiff", 0.07, 2.6, 80.0, 0.5), ("flexible", 0.07, 1.2, 120.0, 1e-4),   # stiff's spread is its own
        ("stiff", 0.08, 2.6, 80.0, 0.5), ("flexible", 0.08, 2.1, 120.0, 1e-4),   # flexible fails its fit too
    ]
    frame = pd.DataFrame([base | {"model": m, "mass": x, "z_spread_corrected": c, "sigma_stat": s,
                                  "sigma_asimov": s, "gof_p": p} for m, x, c, s, p in cells])
    criteria = Criteria()
    spreads = {"stiff": (0.8, 0.2), "flexible": (0.8, 0.2)}
    frame = _with_totals(frame, spreads, criteria)
    allowed = 1.0 + criteria.spread_sigmas * 0.2 / 0.8
    assert 1.0 < allowed < 2.1  # so the cells above fail or pass as their comments say
    settings = resolve_settings("2015", {})
    content = selection_content(frame, {"stiff": settings, "flexible": settings}, spreads, criteria, ["smooth"])
    rows = {r["mass"]: r for r in content["rows"]}
    assert rows[0.05]["model"] == "stiff" and rows[0.05]["note"] == ""
    assert rows[0.06]["model"] == "flexible" and "every candidate's Z spread" in rows[0.06]["note"]
    assert "2.10 against" in rows[0.06]["note"] and rows[0.06]["reason"] == ""
    assert rows[0.07]["model"] == "" and SPREAD_FAILS in rows[0.07]["reason"]
    assert "goodness of fit" in rows[0.07]["reason"]
    assert rows[0.08]["model"] == "stiff" and "stiff is used" in rows[0.08]["note"]
    assert content["candidates"]["flexible"]["chosen_at"] == 1


def test_a_cell_without_a_truth_fails_with_the_reason_and_a_fallback_truth_is_noted() -> None:
    from hps_bayes.analysis.settings import resolve_settings
    from hps_bayes.studies.selection import NO_TRUTH, Criteria, _with_totals, selection_content

    base = {"available": True, "reason": "", "z": 0.5, "sigma_stat": 100.0, "sigma_asimov": 100.0,
            "sigma_floor": 50.0, "gof_p": 0.5, "sideband_z": 1.0, "rho": 1e4, "sigma_m": 1e-3,
            "z_spread_corrected": 1.0, "z_spread_expected": 0.8, "z_spread_toys_sd": 0.2}
    cells = [{"model": "a", "mass": 0.05, "spurious_raw": float("nan"), "n_truths": 0, "truth_note": ""},
             {"model": "a", "mass": 0.07, "spurious_raw": 10.0, "n_truths": 1, "truth_note": "S from the 'flexible' truth"}]
    frame = _with_totals(pd.DataFrame([base | c for c in cells]), {"a": (0.8, 0.2)}, Criteria())
    assert list(frame.fails) == [NO_TRUTH, ""]
    content = selection_content(frame, {"a": resolve_settings("2015", {})}, {"a": (0.8, 0.2)}, Criteria(), ["smooth"])
    rows = {r["mass"]: r for r in content["rows"]}
    assert rows[0.05]["model"] == "" and NO_TRUTH in rows[0.05]["reason"]
    assert rows[0.07]["model"] == "a" and rows[0.07]["note"] == "S from the 'flexible' truth"


def test_s_beyond_the_gp_prior_and_the_reason_of_a_polynomial_window_without_a_good_truth() -> None:
    """S of a GP-carried cell counts only the bias beyond sigma_prior (sqrt(S^2 - sigma_prior^2), never below 0)
    unless switched off; a cell that found no truth under the stricter bound says why."""
    from hps_bayes.studies.selection import NO_TRUTH_WITHOUT_GP, Criteria, _with_totals

    base = {"available": True, "reason": "", "z": 0.5, "sigma_stat": 100.0, "sigma_asimov": 100.0,
            "sigma_floor": 50.0, "gof_p": 0.5, "sideband_z": 1.0, "rho": 1e4, "sigma_m": 1e-3,
            "z_spread_corrected": 1.0, "z_spread_expected": 0.8, "z_spread_toys_sd": 0.2, "truth_note": ""}
    cells = [{"model": "gp", "mass": 0.05, "spurious_raw": 50.0, "sigma_prior": 30.0, "n_truths": 1, "truth_min_p": 1e-3},
             {"model": "gp", "mass": 0.07, "spurious_raw": 20.0, "sigma_prior": 40.0, "n_truths": 1, "truth_min_p": 1e-3},
             {"model": "gp", "mass": 0.09, "spurious_raw": 10.0, "sigma_prior": 40.0, "n_truths": 1, "truth_min_p": 1e-3},
             {"model": "poly", "mass": 0.05, "spurious_raw": 50.0, "sigma_prior": 0.0, "n_truths": 1, "truth_min_p": 0.1},
             {"model": "poly", "mass": 0.07, "spurious_raw": np.nan, "sigma_prior": 0.0, "n_truths": 0, "truth_min_p": 0.1}]
    frame = pd.DataFrame([base | c for c in cells])
    spreads = {"gp": (0.8, 0.2), "poly": (0.8, 0.2)}
    on = _with_totals(frame, spreads, Criteria()).set_index(["model", "mass"])
    off = _with_totals(frame, spreads, Criteria(spurious_beyond_prior=False)).set_index(["model", "mass"])
    # S is the largest over +-1 grid mass first (50 at 0.05 and 0.07, 20 at 0.09), then the prior is taken out
    assert on.spurious[("gp", 0.05)] == pytest.approx(40.0) and on.spurious[("gp", 0.07)] == pytest.approx(30.0)
    assert on.spurious[("gp", 0.09)] == 0.0 and on.spurious[("poly", 0.05)] == 50.0
    assert list(off.spurious[["gp"]]) == [50.0, 50.0, 20.0]
    assert on.sigma_tot[("gp", 0.05)] == pytest.approx(math.hypot(100.0, 40.0))
    assert on.fails[("poly", 0.07)] == NO_TRUTH_WITHOUT_GP and on.fails[("gp", 0.09)] == ""
    from hps_bayes.studies.selection import masses_without_a_good_truth
    assert masses_without_a_good_truth(on.reset_index()) == [0.07]


def test_s_from_a_neighbouring_grid_mass_scales_with_its_background() -> None:
    """The +-1 grid-mass maximum of S is taken in units of rho(m) sigma(m) (those the scan carries S in): on a
    turn-on, where the background doubles from one grid mass to the next, a bias measured at the higher mass
    counts at half its size at the lower one, and in full the other way round."""
    from hps_bayes.studies.selection import Criteria, _with_totals

    base = {"model": "poly", "available": True, "reason": "", "z": 0.5, "sigma_stat": 100.0, "sigma_asimov": 100.0,
            "sigma_floor": 50.0, "gof_p": 0.5, "sideband_z": 1.0, "sigma_m": 1e-3, "sigma_prior": 0.0,
            "n_truths": 1, "truth_min_p": 0.1, "z_spread_corrected": 1.0, "z_spread_expected": 0.8,
            "z_spread_toys_sd": 0.2, "truth_note": ""}
    cells = [{"mass": 0.020, "rho": 1e4, "spurious_raw": 10.0}, {"mass": 0.022, "rho": 2e4, "spurious_raw": 80.0},
             {"mass": 0.024, "rho": 4e4, "spurious_raw": 20.0}]
    frame = _with_totals(pd.DataFrame([base | c for c in cells]), {"poly": (0.8, 0.2)}, Criteria())
    assert list(frame.spurious) == pytest.approx([40.0, 80.0, 160.0])
    assert list(frame.spurious_rel) == pytest.approx([4.0, 4.0, 4.0])
    # a window without counts under the signal (rho = 0) fails on its own and leaves its neighbours' S finite
    cells[1]["rho"] = 0.0
    frame = _with_totals(pd.DataFrame([base | c for c in cells]), {"poly": (0.8, 0.2)}, Criteria())
    assert list(frame.spurious[[0, 2]]) == pytest.approx([10.0, 20.0])
    assert frame.fails[1] == "no finite sigma_A" and list(frame.passes[[0, 2]]) == [True, True]


def test_a_mass_where_every_candidate_fails_the_window_fit_keeps_the_best_fitting_with_a_note() -> None:
    """The candidates share the data: where every one's window fit has p < gof_min_p and some pass every other
    check, the best-fitting of those serves the mass with a note, if its p reaches the scan's own bound; where
    another candidate fits well, or none reaches that bound, the mass says why instead."""
    from hps_bayes.analysis.checks import MIN_GOF_P
    from hps_bayes.analysis.settings import resolve_settings
    from hps_bayes.studies.selection import Criteria, _with_totals, selection_content

    base = {"available": True, "reason": "", "z": 0.5, "spurious_raw": 10.0, "sigma_stat": 100.0,
            "sigma_asimov": 100.0, "sigma_floor": 50.0, "sideband_z": 1.0, "rho": 1e4, "sigma_m": 1e-3,
            "z_spread_corrected": 1.0, "z_spread_expected": 0.8, "z_spread_toys_sd": 0.2}
    cells = [  # (model, mass, gof p, sideband)
        ("a", 0.05, 0.005, 1.0), ("b", 0.05, 0.008, 1.0),           # both fit poorly: b, the better
        ("a", 0.06, 0.005, 1.0), ("b", 0.06, 0.5, 5.0),             # b fits well: a's poor fit is its own
        ("a", 0.07, 0.5 * MIN_GOF_P, 1.0), ("b", 0.07, 0.008, 5.0),  # the only fit otherwise passing is below the bound
    ]
    frame = pd.DataFrame([base | {"model": m, "mass": x, "gof_p": p, "sideband_z": z} for m, x, p, z in cells])
    criteria = Criteria()
    spreads = {"a": (0.8, 0.2), "b": (0.8, 0.2)}
    frame = _with_totals(frame, spreads, criteria)
    assert not frame.passes.any()
    settings = resolve_settings("2015", {})
    content = selection_content(frame, {"a": settings, "b": settings}, spreads, criteria, ["smooth"])
    rows = {r["mass"]: r for r in content["rows"]}
    assert rows[0.05]["model"] == "b" and "b is used, the one that fits best (p = 0.008" in rows[0.05]["note"]
    assert rows[0.06]["model"] == "" and "a: window goodness of fit p < 0.01" in rows[0.06]["reason"]
    assert "b: sideband residuals" in rows[0.06]["reason"]
    assert rows[0.07]["model"] == "" and rows[0.07]["note"] == ""
