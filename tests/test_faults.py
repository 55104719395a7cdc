"""Faults and damaged inputs: every result is right or flagged, every finished result is kept.

One test per known fault (stale results after a data change, a block of empty bins, a mass at
the range end, weighted histograms, a rerun with other settings, exit codes and one-line
errors), and a property-based test that feeds randomly damaged spectra to
:func:`hps_bayes.evaluate_mass`: each must give a package error or a result whose status says
what it is, and an "ok" result must pass the self-consistency checks.

The spectrum is the session's 2M-event 2015-like demo (``raw_spectrum_2015``, 0.05 MeV bins).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import hps_bayes
from hps_bayes.analysis.checks import (
    PointNumbers,
    check_point,
    gaussian_band_ratios,
    gaussian_limit,
    point_status,
)
from hps_bayes.analysis.rundir import RunFolderConflict, collect_points, point_path, result_key
from hps_bayes.analysis.scan import prepare_scan
from hps_bayes.analysis.settings import resolve_settings
from hps_bayes.errors import ConfigError, HpsBayesError, InputError
from hps_bayes.inputs.root_io import load_spectrum, write_spectra_root
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.inputs.validation import dead_runs, poisson_equivalent, spikes, validate_spectrum
from hps_bayes.results.files import write_json
from hps_bayes.results.objects import MassPointResult

ROOT = Path(__file__).resolve().parents[1]
FLAGGED = ("inconsistent", "unreliable", "input_error", "fit_failed")


def damaged(spectrum: Spectrum, counts: Any = None, variances: Any = None, edges: Any = None) -> Spectrum:
    """``spectrum`` with other counts, variances (default: the counts) or edges."""
    c = spectrum.counts if counts is None else np.asarray(counts, dtype=float)
    return Spectrum(edges=spectrum.edges if edges is None else edges, counts=c,
                    variances=c if variances is None else variances, name=spectrum.name, source="damaged")


def zeroed(spectrum: Spectrum, lo: float, hi: float) -> Spectrum:
    """``spectrum`` with the bins whose centres lie in [lo, hi] GeV emptied."""
    counts = spectrum.counts.copy()
    counts[(spectrum.centers > lo) & (spectrum.centers < hi)] = 0.0
    return damaged(spectrum, counts)


def demo_config(**stats: Any) -> dict[str, Any]:
    return {"stats": stats} if stats else {}


# --------------------------------------------------------------------------- the five cases


def test_stale_results_after_data_change_are_refused_then_replaced(raw_spectrum_2015, tmp_path):
    other = damaged(raw_spectrum_2015, np.round(raw_spectrum_2015.counts * 1.01))
    masses = [0.05, 0.07]
    first = hps_bayes.run_scan(raw_spectrum_2015, dataset="demo", masses=masses, out_dir=tmp_path)
    assert first.attrs == {"computed": 2, "reused": 0}
    again = hps_bayes.run_scan(raw_spectrum_2015, dataset="demo", masses=masses, out_dir=tmp_path)
    assert again.attrs == {"computed": 0, "reused": 2}
    before = point_path(tmp_path, 0.05, "demo").read_bytes()
    with pytest.raises(RunFolderConflict, match="spectrum content.*overwrite=true"):
        hps_bayes.run_scan(other, dataset="demo", masses=masses, out_dir=tmp_path)
    assert point_path(tmp_path, 0.05, "demo").read_bytes() == before
    replaced = hps_bayes.run_scan(other, dataset="demo", masses=masses, out_dir=tmp_path, overwrite=True)
    assert replaced.attrs == {"computed": 2, "reused": 0}
    stored = json.loads(point_path(tmp_path, 0.05, "demo").read_text())
    assert stored["key"] == prepare_scan(other, dataset="demo").key != prepare_scan(raw_spectrum_2015).key


def test_result_key_covers_table_content_and_version(raw_spectrum_2015, tmp_path):
    table = tmp_path / "table.csv"
    table.write_text((ROOT / "hps_bayes" / "data" / "spurious_demo.csv").read_text())
    config = {"background": {"spurious_table": str(table)}}
    key = prepare_scan(raw_spectrum_2015, dataset="demo", config=config).key
    assert list(key["tables"]) == [str(table)] and key["version"] == hps_bayes.__version__
    table.write_text(table.read_text().replace("0.000428041", "0.000500000"))
    assert prepare_scan(raw_spectrum_2015, dataset="demo", config=config).key["tables"] != key["tables"]
    settings = resolve_settings("demo", None)
    assert result_key(settings, raw_spectrum_2015) != result_key(replace(settings, seed=1), raw_spectrum_2015)


def test_a_block_of_empty_bins_stops_the_windows_at_it(raw_spectrum_2015):
    """Missing data at 45-55 MeV: a mass inside is refused, naming the bins; the windows around stop at the
    gap as at a range end, so a mass whose signal reaches into it is flagged and one clear of it is served
    (flagged where the dataset's S table, measured with uncut windows, would apply)."""
    hole = zeroed(raw_spectrum_2015, 0.045, 0.055)
    report = validate_spectrum(hole, mass_range=(0.02, 0.13))
    assert report["dead_runs_mev"] == [[45.0, 55.0]] and report["ok"]
    inside = hps_bayes.evaluate_mass(hole, 0.05, dataset="demo")
    assert inside.status == "input_error" and "lies in bins 45.00-55.00 MeV" in inside.message
    reaching = hps_bayes.evaluate_mass(hole, 0.056, dataset="demo")  # 0.3 σ(m) above the gap
    assert reaching.status != "ok" and "of the signal lies inside the window [55.0," in reaching.message
    clear = hps_bayes.evaluate_mass(hole, 0.07, dataset="demo")  # its ±10σ(m) window reached down to 35 MeV
    assert clear.window_lo == pytest.approx(0.055) and clear.status == "unreliable"  # S of the table: uncut windows
    assert "stops at missing data" in clear.message and "run task=select" in clear.message
    without_s = hps_bayes.evaluate_mass(hole, 0.07, dataset="demo", config={"background": {"spurious": "off"}})
    assert without_s.status == "ok" and without_s.window_lo == pytest.approx(0.055)
    assert hps_bayes.evaluate_mass(hole, 0.04, dataset="demo").window_hi == pytest.approx(0.045)
    narrow = zeroed(raw_spectrum_2015, 0.030, 0.032)
    far = hps_bayes.evaluate_mass(narrow, 0.09, dataset="demo")  # its window starts above 40 MeV
    assert far.status == "ok" and far.window_lo > 0.032


def test_sparse_empty_bins_are_not_dead():
    rng = np.random.default_rng(3)
    counts = rng.poisson(0.5, size=2000).astype(float)  # runs of zeros are fluctuations here
    assert dead_runs(counts) == []
    counts[100:140] = 0.0
    assert dead_runs(counts) == [] and dead_runs(np.where(counts > 0, 50.0, counts))  # 40 bins of ~50


def test_mass_at_the_range_end_is_flagged(raw_spectrum_2015):
    result = hps_bayes.evaluate_mass(raw_spectrum_2015, 0.129, dataset="demo")
    assert result.status == "inconsistent"
    assert "of the signal lies inside the window" in result.message
    assert "outside the spurious-signal table" in result.message  # S(m) is not extrapolated
    assert "disagrees with" in result.message  # and the numbers contradict each other
    assert np.isfinite(result.A_up)  # the numbers stay, flagged
    beyond_table = hps_bayes.evaluate_mass(raw_spectrum_2015, 0.1, dataset="demo")  # table: 26-94 MeV
    assert beyond_table.status == "unreliable" and "S is not measured there" in beyond_table.message


def test_checks_flag_the_range_end_numbers_themselves():
    """The numbers of 129 MeV on the demo (σ_A = 276, σ_stat = 2612, Hessian σ_A,A = 5697)."""
    numbers = PointNumbers(a_hat=1423.1, sigma_a=276.5, sigma_hesse_asimov=5696.6, sigma_stat=2611.8,
                           spurious=4.73, a_up=4418.4, a_up_error=0.0,
                           a_up_expected=(4226.2, 4321.9, 4452.9, 4618.7, 4803.1), alpha=0.05)
    failures = " | ".join(check_point(numbers).failures)
    for fragment in ("Asimov Hessian error", "sigma_A_hesse of the observed fit", "sigma_A from the Gaussian limit",
                     "-2sigma/median = 0.949"):
        assert fragment in failures


def test_checks_pass_a_gaussian_point():
    sigma, a_hat, alpha = 100.0, -30.0, 0.05
    band = tuple(float(v) for v in 100.0 * gaussian_band_ratios(alpha) * 1.959964)
    numbers = PointNumbers(a_hat=a_hat, sigma_a=sigma, sigma_hesse_asimov=sigma, sigma_stat=sigma, spurious=0.0,
                           a_up=gaussian_limit(a_hat, sigma, alpha), a_up_error=0.0, a_up_expected=band, alpha=alpha)
    consistency = check_point(numbers)
    assert consistency.ok and abs(consistency.values["limit_pull"]) < 1e-12
    assert gaussian_band_ratios(alpha)[0] == pytest.approx(0.537, abs=1e-3)


@pytest.mark.parametrize(("n_toys", "a_up_error", "fragment"), [
    (10, 20.0, "10 toys cannot resolve CLs = alpha = 0.05"),  # n_toys·α = 0.5 < 5
    (300, 60.0, "too few toys for this limit"),  # an error of 0.6 σ_A
    (300, float("nan"), "not estimable"),
])
def test_a_toy_limit_its_toys_do_not_resolve_is_unreliable(n_toys: int, a_up_error: float, fragment: str):
    sigma, a_hat, alpha = 100.0, -30.0, 0.05
    band = tuple(float(v) for v in 100.0 * gaussian_band_ratios(alpha) * 1.959964)
    numbers = PointNumbers(a_hat=a_hat, sigma_a=sigma, sigma_hesse_asimov=sigma, sigma_stat=sigma, spurious=0.0,
                           a_up=gaussian_limit(a_hat, sigma, alpha), a_up_error=a_up_error, a_up_expected=band,
                           alpha=alpha, toys=True, n_toys=n_toys)
    consistency = check_point(numbers)
    assert consistency.ok and any(fragment in m for m in consistency.imprecise), consistency.imprecise
    status, message = point_status(True, "converged", consistency, [])
    assert status == "unreliable" and fragment in message
    resolved = check_point(replace(numbers, a_up_error=20.0, n_toys=300))  # 0.2 σ_A with 300 toys: a result
    assert point_status(True, "converged", resolved, []) == ("ok", "")


def test_a_profile_likelihood_limit_of_zero_is_unreliable():
    """stats.limit=pl on a deficit: every signal excluded (A_up = 0), which the PL limit does not protect against."""
    sigma, alpha = 100.0, 0.05
    numbers = PointNumbers(a_hat=-1200.0, sigma_a=sigma, sigma_hesse_asimov=sigma, sigma_stat=sigma, spurious=0.0,
                           a_up=0.0, a_up_error=0.0, a_up_expected=(0.0, 0.0, 64.5, 164.5, 264.5), alpha=alpha,
                           limit="pl")
    status, message = point_status(True, "converged", check_point(numbers), [])
    assert status == "unreliable" and "excludes every signal (A_hat = -12.00 sigma_A)" in message
    positive = check_point(replace(numbers, a_hat=-50.0, a_up=114.5))
    assert point_status(True, "converged", positive, []) == ("ok", "")


def test_a_spike_in_one_analysis_bin_is_flagged_not_a_discovery(raw_spectrum_2015):
    """2.5 times the counts in the ten fine bins of one 0.5 MeV analysis bin at 50 MeV: too narrow for the
    per-bin spike check, and a signal's fit there gave Z = 114 with status ok, its neighbours Â = −95σ_A."""
    centres = 0.5 * (raw_spectrum_2015.edges[1:] + raw_spectrum_2015.edges[:-1])
    first = int(np.searchsorted(raw_spectrum_2015.edges, 0.0500 - 1e-9))
    first -= first % 10  # the analysis bins are 10 fine bins from the first edge
    counts = raw_spectrum_2015.counts.copy()
    counts[first:first + 10] *= 2.5
    assert 0.0495 <= centres[first] < centres[first + 9] <= 0.0505
    spiked = damaged(raw_spectrum_2015, counts)
    for mass in (0.050, 0.046):
        r = hps_bayes.evaluate_mass(spiked, mass, dataset="demo")
        assert r.status == "inconsistent" and r.gof_p < 1e-4, (mass, r.status, r.gof_p)
        assert r.message.startswith("the window's fit does not describe its data: goodness-of-fit p = ")
    far = hps_bayes.evaluate_mass(spiked, 0.026, dataset="demo")
    assert far.window_hi < 0.0495  # its window does not reach the spike
    assert far.status == "ok" and far.gof_p > 0.01


def test_the_goodness_of_fit_check_passes_an_unmeasured_p():
    sigma, alpha = 100.0, 0.05
    band = tuple(float(v) for v in 100.0 * gaussian_band_ratios(alpha) * 1.959964)
    numbers = PointNumbers(a_hat=0.0, sigma_a=sigma, sigma_hesse_asimov=sigma, sigma_stat=sigma, spurious=0.0,
                           a_up=gaussian_limit(0.0, sigma, alpha), a_up_error=0.0, a_up_expected=band, alpha=alpha)
    assert check_point(numbers).ok  # gof_p NaN: not measured (a combination)
    assert check_point(replace(numbers, gof_p=2e-4)).ok
    assert "goodness-of-fit p = 5e-05 (< 0.0001)" in check_point(replace(numbers, gof_p=5e-5)).message


def test_a_spurious_signal_table_of_another_background_is_flagged(raw_spectrum_2015):
    """The shipped S(m) was measured for degree 10 in ±10σ(m); with a ±40σ window it gave Z = 4.2 and
    Â = −4σ_A at status ok.  Its header names the background, and a point of another one is "unreliable"."""
    plain = hps_bayes.evaluate_mass(raw_spectrum_2015, 0.05, dataset="demo")
    assert plain.status == "ok"
    wider = hps_bayes.evaluate_mass(raw_spectrum_2015, 0.05, dataset="demo", config={"background": {"window_sigmas": 14.0}})
    assert wider.status == "unreliable"
    assert ("spurious_demo.csv was measured for the background legendre_lnm d10 ±10σ, not for this one "
            "(legendre_lnm d10 ±14σ)") in wider.message


def test_weighted_histogram_is_analysed_as_scaled_poisson(raw_spectrum_2015):
    w = 0.37
    weighted = damaged(raw_spectrum_2015, w * raw_spectrum_2015.counts, w**2 * raw_spectrum_2015.counts)
    plain = hps_bayes.evaluate_mass(raw_spectrum_2015, 0.05, dataset="demo")
    result = hps_bayes.evaluate_mass(weighted, 0.05, dataset="demo")
    assert plain.status == result.status == "ok"
    # the same effective statistics: the same ε² limits; yields in weighted events (×w)
    assert result.eps2_up == pytest.approx(plain.eps2_up, rel=1e-6)
    assert result.eps2_up_expected == pytest.approx(plain.eps2_up_expected, rel=1e-6)
    assert result.A_up == pytest.approx(w * plain.A_up, rel=1e-6)
    assert result.sigma_A == pytest.approx(w * plain.sigma_A, rel=1e-6)


def test_weights_that_vary_too_much_are_refused(raw_spectrum_2015):
    scale = np.linspace(0.2, 1.0, raw_spectrum_2015.n_bins)
    spec = damaged(raw_spectrum_2015, raw_spectrum_2015.counts, raw_spectrum_2015.counts * scale)
    with pytest.raises(InputError, match="weight scale .* varies"):
        poisson_equivalent(spec)


def test_tasks_that_draw_poisson_toys_refuse_weighted_input(raw_spectrum_2015, tmp_path):
    from hps_bayes.cli.inputs import load_validated

    w = 0.5
    weighted = damaged(raw_spectrum_2015, w * raw_spectrum_2015.counts, w**2 * raw_spectrum_2015.counts)
    path = write_spectra_root(tmp_path / "weighted.root", {"invariant_mass": weighted})
    settings = resolve_settings({**_demo_preset(), "name": "demo", "path": str(path)})
    assert load_validated(settings, {"task": {"name": "test"}}, tmp_path).n_bins == weighted.n_bins
    with pytest.raises(InputError, match="weighted .* task=combine"):
        load_validated(settings, {"task": {"name": "combine"}}, tmp_path)


def test_rerun_with_other_settings_keeps_finished_results(raw_spectrum_2015, tmp_path):
    hps_bayes.run_scan(raw_spectrum_2015, dataset="demo", masses=[0.05], out_dir=tmp_path)
    before = point_path(tmp_path, 0.05, "demo").read_bytes()
    with pytest.raises(RunFolderConflict, match="settings"):
        hps_bayes.run_scan(raw_spectrum_2015, dataset="demo", config=demo_config(alpha=0.10), masses=[0.06],
                           out_dir=tmp_path)
    assert point_path(tmp_path, 0.05, "demo").read_bytes() == before
    assert not point_path(tmp_path, 0.06, "demo").exists()


def test_merge_refuses_to_mix_settings(raw_spectrum_2015, tmp_path):
    from hps_bayes.cli.task_merge import _refuse_mixed

    hps_bayes.run_scan(raw_spectrum_2015, dataset="demo", masses=[0.05], out_dir=tmp_path)
    hps_bayes.run_scan(raw_spectrum_2015, dataset="demo", config=demo_config(alpha=0.10), masses=[0.06],
                       out_dir=tmp_path, overwrite=True)
    settings = prepare_scan(raw_spectrum_2015, dataset="demo").settings
    _, report = collect_points(tmp_path, settings, masses=[0.05, 0.06])
    assert report["stale"] == [0.06]
    with pytest.raises(ConfigError, match="mixes results"):
        _refuse_mixed(tmp_path, report)


# --------------------------------------------------------------------------- errors before any fit


@pytest.mark.parametrize(("edit", "error", "fragment"), [
    (lambda c: np.where(np.arange(c.size) == 1000, np.nan, c), InputError, "NaN counts"),
    (lambda c: np.where(np.arange(c.size) == 1000, -5.0, c), InputError, "negative counts"),
    (lambda c: np.where(np.arange(c.size) == 1000, c * 60 + 1e4, c), InputError, "one-bin spikes"),
    (lambda c: np.random.default_rng(1).multinomial(100, c / c.sum()).astype(float), InputError, "too few"),
])
def test_api_validates_like_the_command_line(raw_spectrum_2015, edit, error, fragment):
    spec = damaged(raw_spectrum_2015, edit(raw_spectrum_2015.counts.copy()))
    with pytest.raises(error, match=fragment):
        hps_bayes.evaluate_mass(spec, 0.05, dataset="demo")
    with pytest.raises(error, match=fragment):
        hps_bayes.run_scan(spec, dataset="demo", masses=[0.05])


@pytest.mark.parametrize("mass", ["abc", float("nan"), -0.05, None])
def test_a_mass_that_is_not_a_number_is_refused(raw_spectrum_2015, mass):
    with pytest.raises(ConfigError, match="mass="):
        hps_bayes.evaluate_mass(raw_spectrum_2015, mass, dataset="demo")


def test_missing_spurious_table_stops_before_any_fit(raw_spectrum_2015, tmp_path):
    config = {"background": {"spurious_table": str(tmp_path / "missing.csv")}}
    with pytest.raises(ConfigError, match="missing.csv not found"):
        hps_bayes.run_scan(raw_spectrum_2015, dataset="demo", config=config, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_variable_binning_names_rebin_1(raw_spectrum_2015):
    edges = raw_spectrum_2015.edges.copy()
    edges[1:-1:2] += 0.2 * np.diff(edges)[0]
    spec = damaged(raw_spectrum_2015, edges=edges)
    with pytest.raises(InputError, match="dataset.rebin=1"):
        hps_bayes.evaluate_mass(spec, 0.05, dataset="demo")


def test_spikes_are_one_bin_only():
    counts = np.full(200, 100.0)
    counts[50] = 1000.0
    counts[120:126] = 1000.0  # a wide excess is not a spike
    assert spikes(counts).tolist() == [50]


def test_truncated_root_file_is_a_one_line_error(raw_spectrum_2015, tmp_path):
    path = write_spectra_root(tmp_path / "full.root", {"invariant_mass": raw_spectrum_2015})
    cut = tmp_path / "cut.root"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 4])  # the histogram's bytes cut
    with pytest.raises(InputError, match="damaged or truncated") as info:
        load_spectrum(cut, "invariant_mass")
    assert "\n" not in str(info.value)


def test_missing_file_with_a_demo_preset_is_not_generated(tmp_path):
    from hps_bayes.cli.inputs import ensure_input

    settings = resolve_settings({"name": "demo", **_demo_preset(), "path": str(tmp_path / "mine.root")})
    with pytest.raises(InputError, match="task=simulate"):
        ensure_input(settings, {"dataset": {"demo": {"generate": True}}})
    assert not (tmp_path / "mine.root").exists()


def _demo_preset() -> dict[str, Any]:
    return {k: v for k, v in resolve_settings("demo").dataset.to_dict().items() if k != "name"}


def test_finished_run_without_any_ok_point_exits_non_zero():
    import pandas as pd

    from hps_bayes.cli.app import EXIT_NO_RESULT, NoResultError, finished

    with pytest.raises(NoResultError) as info:
        finished(pd.DataFrame({"status": ["fit_failed", "input_error"]}))
    assert info.value.exit_code == EXIT_NO_RESULT
    assert finished(pd.DataFrame({"status": ["ok", "fit_failed"]})) is not None
    with pytest.raises(NoResultError):
        finished(MassPointResult(dataset="demo", mass=0.05, status="inconsistent"))


def test_results_are_readable_by_the_group(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "sub" / "numbers.json", {"a": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert path.parent.stat().st_mode & 0o777 == 0o755


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "hps_bayes", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.mark.parametrize(("args", "fragment"), [
    (["task=test", "mass=abc"], "mass='abc'"),
    (["task=test", "mass=0.05", "seed=-1"], "seed=-1"),
])
def test_bad_top_level_values_are_one_line_errors(tmp_path, args, fragment):
    run = tmp_path / "run"
    proc = _cli(*args, f"run_dir={run}", f"hydra.run.dir={run}", cwd=ROOT)
    assert proc.returncode == 2
    assert fragment in proc.stdout + proc.stderr and "Traceback" not in proc.stdout + proc.stderr


def test_unwritable_run_folder_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    run = blocker / "run"  # a folder inside a file cannot be made, even by root
    proc = _cli("task=test", "mass=0.05", f"run_dir={run}", f"hydra.run.dir={run}", cwd=ROOT)
    assert proc.returncode == 2
    assert "run folder" in proc.stderr and "Traceback" not in proc.stdout + proc.stderr


def test_command_line_keeps_the_run_folder_of_other_settings(tmp_path):
    from hps_bayes.cli.tasks import run_task

    run = tmp_path / "run"
    run_task("test", ["mass=0.05", "plots.per_mass=false"], run_dir=run)
    hydra_config = run / ".hydra" / "config.yaml"
    hydra_config.parent.mkdir()
    hydra_config.write_text("the earlier run's config\n")
    numbers = point_path(run, 0.05, "demo").read_bytes()
    proc = _cli("task=test", "mass=0.05", "stats.alpha=0.1", f"run_dir={run}", f"hydra.run.dir={run}", cwd=ROOT)
    assert proc.returncode == 2
    assert "overwrite=true" in proc.stdout + proc.stderr and "Traceback" not in proc.stdout + proc.stderr
    assert hydra_config.read_text() == "the earlier run's config\n"
    assert point_path(run, 0.05, "demo").read_bytes() == numbers


# --------------------------------------------------------------------------- fuzz


@st.composite
def damage(draw: Any) -> dict[str, Any]:
    """One random damage of the spectrum: its kind and parameters."""
    kind = draw(st.sampled_from(["hole", "spike", "nan", "negative", "weights", "few", "shift", "clean"]))
    return {"kind": kind, "mass": draw(st.sampled_from([0.03, 0.05, 0.08, 0.1, 0.125])),
            "where": draw(st.floats(0.021, 0.129)), "size": draw(st.floats(0.0, 1.0))}


def apply_damage(spec: Spectrum, d: dict[str, Any]) -> Spectrum:
    counts, i = spec.counts.copy(), int(np.searchsorted(spec.centers, d["where"]))
    kind, size = d["kind"], d["size"]
    if kind == "hole":
        counts[i:i + 1 + int(size * 300)] = 0.0
    elif kind == "spike":
        counts[i] += counts[i] * 100 * size + 10
    elif kind in ("nan", "negative"):
        counts[i] = np.nan if kind == "nan" else -1.0 - size
    elif kind == "weights":
        w = 0.1 + size
        return damaged(spec, w * counts, w**2 * counts * (1.0 + 0.2 * size * np.sin(np.arange(counts.size))))
    elif kind == "few":
        counts = np.random.default_rng(0).binomial(counts.astype(np.int64), 10 ** (-1 - 4 * size)).astype(float)
    elif kind == "shift":
        return damaged(spec, edges=spec.edges + 0.05 * size)
    return damaged(spec, counts)


def consistent(result: MassPointResult) -> bool:
    """The self-consistency checks that a result's own columns allow."""
    numbers = PointNumbers(a_hat=result.A_hat, sigma_a=result.sigma_A, sigma_hesse_asimov=result.sigma_A,
                           sigma_stat=result.sigma_A_hesse, spurious=result.spurious_signal, a_up=result.A_up,
                           a_up_error=0.0, a_up_expected=result.A_up_expected, alpha=0.05)
    return check_point(numbers).ok


@settings(max_examples=40, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(d=damage())
@example(d={"kind": "spike", "mass": 0.05, "where": 0.052, "size": 0.5})
@example(d={"kind": "spike", "mass": 0.08, "where": 0.08, "size": 0.0})
@example(d={"kind": "hole", "mass": 0.05, "where": 0.045, "size": 0.7})
@example(d={"kind": "few", "mass": 0.05, "where": 0.05, "size": 0.5})
@example(d={"kind": "weights", "mass": 0.05, "where": 0.05, "size": 0.3})
@example(d={"kind": "shift", "mass": 0.03, "where": 0.05, "size": 0.2})
@example(d={"kind": "clean", "mass": 0.125, "where": 0.05, "size": 0.0})
def test_damaged_spectra_give_an_error_a_flag_or_consistent_numbers(raw_spectrum_2015, d):
    spec = apply_damage(raw_spectrum_2015, d)
    try:
        result = hps_bayes.evaluate_mass(spec, d["mass"], dataset="demo")
    except HpsBayesError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert result.status == "ok" or result.status in FLAGGED, result.status
    assert result.status != "ok" or consistent(result), result
    if result.status != "ok":
        assert result.message


def test_a_demo_file_of_other_settings_at_its_preset_path_is_generated_again(tmp_path, monkeypatch):
    """A demo spectrum at a preset's own path is used only when its record (demo settings, generator)
    is the configured one: an old file without a record, or one made with another seed, is replaced."""
    from hps_bayes.cli import inputs
    from hps_bayes.inputs.root_io import load_spectrum
    from hps_bayes.physics.demo import write_demo_file

    path = tmp_path / "demo_2015.root"
    monkeypatch.setattr(inputs, "default_demo_paths", lambda: {path.resolve()})
    settings = resolve_settings({**_demo_preset(), "name": "demo", "path": str(path)})
    demo = {"generate": True, "shape": "2015", "n_events": 2e5, "seed": 3, "structured": True}
    write_demo_file(path, settings.dataset, n_events=2e5, seed=99, shape="2015")  # an old checkout's file
    stale = load_spectrum(path, settings.dataset.hist_name).counts
    inputs.ensure_input(settings, {"dataset": {"demo": demo}})
    fresh = load_spectrum(path, settings.dataset.hist_name).counts
    assert not np.array_equal(stale, fresh)
    assert json.loads(path.with_name(path.name + ".json").read_text())["seed"] == 3
    stamp = path.stat().st_mtime_ns
    inputs.ensure_input(settings, {"dataset": {"demo": demo}})
    assert path.stat().st_mtime_ns == stamp  # the record matches: kept
    inputs.ensure_input(settings, {"dataset": {"demo": {**demo, "seed": 4}}})
    assert path.stat().st_mtime_ns != stamp


def test_too_few_toys_are_refused_before_any_point():
    """stats=toys stats.n_toys=5 failed at every point with advice to "use stats=toys" (already set)."""
    with pytest.raises(ConfigError, match=r"stats.method=toys with stats.n_toys=5: a toy calculator needs at least 10 "
                                          r"toys, and 100 to resolve CLs = alpha = 0.05; set stats.n_toys=1000"):
        resolve_settings("demo", {"stats": {"method": "toys", "n_toys": 5}})


def test_the_python_api_names_a_bad_background_value_and_an_empty_mass_list(raw_spectrum_2015):
    with pytest.raises(ConfigError, match=r"background.poly_degree='x': must be an integer \(default 10\)"):
        hps_bayes.run_scan(raw_spectrum_2015, dataset="demo", config={"background": {"poly_degree": "x"}},
                           masses=[0.05])
    with pytest.raises(ConfigError, match="background.window_sigmas=None: must be a number"):
        resolve_settings("demo", {"background": {"window_sigmas": None}})
    with pytest.raises(ConfigError, match="masses is empty: give the masses to scan in GeV"):
        hps_bayes.run_scan(raw_spectrum_2015, dataset="demo", masses=[])


def test_the_sideband_excess_sums_signal_wide_runs_of_residuals_away_from_the_mass():
    from types import SimpleNamespace

    from hps_bayes.analysis.checks import sideband_excess

    edges = np.round(np.arange(0.030, 0.0701, 0.0005), 7)
    from hps_bayes.model.window import SIGNAL_REGION

    centers = 0.5 * (edges[1:] + edges[:-1])
    window = SimpleNamespace(centers=centers, widths=np.diff(edges), mass=0.05, sigma=0.0025,
                             sidebands=np.abs(centers - 0.05) > SIGNAL_REGION * 0.0025)
    k = 10  # 2σ(m) / 0.5 MeV bins
    residual = np.zeros(window.centers.size)
    residual[np.abs(window.centers - 0.05) < 0.002] = 3.0  # at the mass: not a sideband
    assert sideband_excess(window, residual) == 0.0
    residual[(window.centers > 0.060) & (window.centers < 0.065)] = 1.0  # 10 bins of +1σ, 4σ(m) above the mass
    assert sideband_excess(window, residual) == pytest.approx(np.sqrt(k))


def test_a_neighbourhood_of_large_pulls_is_flagged_but_a_single_signal_is_not():
    """The scan-level check (analysis.checks.flag_local_pulls): where the background does not follow the spectrum,
    Â/σ_A of a whole neighbourhood is large; a real signal is one peak, which the check leaves out."""
    from hps_bayes.analysis.checks import MAX_LOCAL_PULL_RMS, flag_local_pulls, local_pull_rms

    masses = np.round(np.arange(0.040, 0.1001, 0.001), 4)
    sigma = 0.0025 * np.ones(masses.size)
    rng = np.random.default_rng(3)
    noise = 0.8 * rng.standard_normal(masses.size)  # correlated neighbours spread by less than 1
    signal = noise + 6.0 * np.exp(-0.5 * ((masses - 0.07) / 0.0025) ** 2)  # a 6σ signal and its shoulders
    structure = noise + 4.0 * np.sin(2.0 * np.pi * masses / 0.02)  # excesses and deficits it does not follow

    def results(pulls):
        return [MassPointResult(dataset="demo", mass=float(m), sigma_m=0.0025, A_hat=100.0 * p, sigma_A=100.0)
                for m, p in zip(masses, pulls, strict=True)]

    for pulls in (noise, signal):
        assert np.nanmax(local_pull_rms(masses, pulls, sigma)) < MAX_LOCAL_PULL_RMS
        assert {r.status for r in flag_local_pulls(results(pulls))} == {"ok"}
    rms = local_pull_rms(masses, structure, sigma)
    flagged = [r for r in flag_local_pulls(results(structure)) if r.status == "unreliable"]
    assert len(flagged) == int(np.sum(rms > MAX_LOCAL_PULL_RMS)) == 60  # measured RMS 2.73-3.03
    assert np.isnan(rms[0])  # the first mass: too few masses left beside its neighbourhood's peak, not judged
    assert "the background does not follow this spectrum here" in flagged[0].message
    # a merged run's table (task=merge, from the points' numbers.json) gets the same flags over all its chunks
    from hps_bayes.analysis.checks import flag_local_pulls_frame
    from hps_bayes.results.objects import ScanResults

    for pulls in (signal, structure):
        expected = ScanResults(flag_local_pulls(results(pulls)), {}).frame()
        table = ScanResults(results(pulls), {}).frame()
        merged = flag_local_pulls_frame(table.sample(frac=1.0, random_state=1)).sort_index()  # chunks in any order
        assert merged.status.tolist() == expected.status.tolist()
        assert merged.message.tolist() == expected.message.tolist()
