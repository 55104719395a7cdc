"""Tests of hps_bayes.io: ROOT reading/writing, rebinning, cropping, validation."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest
import uproot

from hps_bayes.errors import ConfigError, HpsBayesWarning, InputError
from hps_bayes.inputs.root_io import load_spectrum, write_spectra_root
from hps_bayes.inputs.spectrum import Spectrum, crop, edge_index, rebin
from hps_bayes.inputs.validation import check_analysable, validate_spectrum, write_validation_report


def make_spectrum(counts, edges=None, variances=None, name="h") -> Spectrum:
    counts = np.asarray(counts, dtype=float)
    edges = np.linspace(0.0, 0.001 * counts.size, counts.size + 1) if edges is None else edges
    return Spectrum(
        edges=np.asarray(edges, dtype=float),
        counts=counts,
        variances=counts if variances is None else np.asarray(variances, dtype=float),
        name=name,
        source="test",
    )


# --------------------------------------------------------------------------- Spectrum


def test_spectrum_properties_and_read_only():
    s = make_spectrum([1.0, 2.0, 3.0], edges=[0.0, 0.1, 0.3, 0.6])
    np.testing.assert_allclose(s.centers, [0.05, 0.2, 0.45])
    np.testing.assert_allclose(s.widths, [0.1, 0.2, 0.3])
    assert s.n_bins == 3 and s.total == 6.0
    with pytest.raises(ValueError):
        s.counts[0] = 5.0


@pytest.mark.parametrize(
    ("edges", "counts", "variances"),
    [([0.0, 1.0], [1.0, 2.0], [1.0, 2.0]), ([0.0, 1.0, 2.0], [1.0, 2.0], [1.0]), ([0.0], [], [])],
)
def test_spectrum_rejects_bad_shapes(edges, counts, variances):
    with pytest.raises(InputError, match="len"):
        Spectrum(
            edges=np.array(edges),
            counts=np.array(counts),
            variances=np.array(variances),
            name="h",
            source="t",
        )


# --------------------------------------------------------------------------- ROOT round trips


@pytest.mark.parametrize(("as_float", "classname"), [(False, "TH1D"), (True, "TH1F")])
def test_round_trip_fixed_binning(tmp_path, as_float, classname):
    s = make_spectrum([0.0, 4.0, 10.0, 7.0], variances=[0.0, 2.5, 9.0, 7.5])
    path = write_spectra_root(tmp_path / "a.root", {"invariant_mass": s}, as_float=as_float)
    with uproot.open(path) as f:
        assert f.classnames() == {"invariant_mass;1": classname}
    back = load_spectrum(path, "invariant_mass")
    np.testing.assert_allclose(back.edges, s.edges, rtol=1e-12)
    np.testing.assert_array_equal(back.counts, s.counts)
    np.testing.assert_array_equal(back.variances, s.variances)
    assert back.name == "invariant_mass" and back.source.endswith("invariant_mass;1")


def test_round_trip_variable_binning(tmp_path):
    edges = np.array([0.01, 0.02, 0.025, 0.04, 0.1])
    s = make_spectrum([5.0, 3.0, 8.0, 1.0], edges=edges)
    path = write_spectra_root(tmp_path / "v.root", {"h": s})
    back = load_spectrum(path, "h")
    np.testing.assert_array_equal(back.edges, edges)
    np.testing.assert_array_equal(back.counts, s.counts)


def test_histogram_inside_tdirectory(tmp_path):
    s = make_spectrum([1.0, 2.0, 3.0])
    path = write_spectra_root(tmp_path / "sub" / "d.root", {"preselection/h_invM_8000": s})
    with uproot.open(path) as f:
        assert f.classnames()["preselection;1"] == "TDirectory"
    back = load_spectrum(path, "preselection/h_invM_8000")
    np.testing.assert_array_equal(back.counts, s.counts)
    assert back.name == "preselection/h_invM_8000"


def test_histogram_without_sumw2_uses_counts_as_variances(tmp_path):
    path = tmp_path / "plain.root"
    with uproot.recreate(path) as f:
        f["h"] = (np.array([3.0, 0.0, 5.0]), np.array([0.0, 1.0, 2.0, 3.0]))
    back = load_spectrum(path, "h")
    np.testing.assert_array_equal(back.variances, [3.0, 0.0, 5.0])


@pytest.fixture
def two_cycles(tmp_path):
    """A file where uproot wrote key 'h' twice, giving cycles h;1 and h;2."""
    path = tmp_path / "cycles.root"
    edges = np.array([0.0, 1.0, 2.0])
    with uproot.recreate(path) as f:
        f["h"] = (np.array([1.0, 1.0]), edges)
        f["h"] = (np.array([2.0, 2.0]), edges)
    with uproot.open(path) as f:
        assert sorted(f.keys()) == ["h;1", "h;2"]
    return path


def test_cycles_highest_by_default_and_explicit(two_cycles):
    assert load_spectrum(two_cycles, "h").counts.tolist() == [2.0, 2.0]
    assert load_spectrum(two_cycles, "h;2").counts.tolist() == [2.0, 2.0]
    first = load_spectrum(two_cycles, "h;1")
    assert first.counts.tolist() == [1.0, 1.0] and first.source.endswith("h;1")


def test_missing_cycle_lists_cycles(two_cycles):
    with pytest.raises(InputError, match=r"h;3.*cycles present: \[1, 2\]"):
        load_spectrum(two_cycles, "h;3")
    with pytest.raises(InputError, match="not a positive integer"):
        load_spectrum(two_cycles, "h;x")


def test_missing_file_names_path_and_suggests_simulate(tmp_path):
    missing = tmp_path / "nope.root"
    with pytest.raises(InputError, match=r"nope\.root.*task=simulate"):
        load_spectrum(missing, "h")


def test_not_a_root_file(tmp_path):
    path = tmp_path / "text.root"
    path.write_text("this is not a ROOT file\n" * 50)
    with pytest.raises(InputError, match="ROOT file"):
        load_spectrum(path, "h")


def test_missing_histogram_lists_th1_keys_recursively(tmp_path):
    s = make_spectrum([1.0, 2.0])
    path = write_spectra_root(tmp_path / "k.root", {"a": s, "dir/b": s})
    with pytest.raises(InputError) as err:
        load_spectrum(path, "invariant_mass")
    message = str(err.value)
    assert "'invariant_mass'" in message and "a;1" in message and "dir/b;1" in message
    assert "hist_name" in message


def test_two_dimensional_histogram_is_rejected(tmp_path):
    path = tmp_path / "h2.root"
    with uproot.recreate(path) as f:
        f["h2"] = (np.ones((2, 3)), np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(InputError, match="TH2D, not a 1-D histogram"):
        load_spectrum(path, "h2")


def test_write_rejects_cycle_in_key(tmp_path):
    with pytest.raises(ConfigError, match="without ';'"):
        write_spectra_root(tmp_path / "x.root", {"h;1": make_spectrum([1.0])})
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- rebin / crop


def test_rebin_sums_counts_variances_and_edges():
    s = make_spectrum([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], variances=[1.0, 1.0, 2.0, 2.0, 3.0, 3.0])
    r = rebin(s, 3)
    assert r.counts.tolist() == [6.0, 15.0]
    assert r.variances.tolist() == [4.0, 8.0]
    np.testing.assert_allclose(r.edges, [0.0, 0.003, 0.006])
    assert rebin(s, 1).counts.tolist() == s.counts.tolist()


def test_rebin_drops_remainder_with_warning():
    s = make_spectrum(np.arange(7.0))
    with pytest.warns(HpsBayesWarning, match="dropping the last 1 bins"):
        r = rebin(s, 3)
    assert r.counts.tolist() == [3.0, 12.0]
    assert r.edges[-1] == pytest.approx(0.006)


@pytest.mark.parametrize("factor", [0, -2, 2.5, True])
def test_rebin_bad_factor(factor):
    with pytest.raises(ConfigError, match="rebin factor"):
        rebin(make_spectrum([1.0, 2.0]), factor)


def test_rebin_multiple_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rebin(make_spectrum(np.ones(10)), 5)


def test_crop_keeps_bins_fully_inside_with_tolerance():
    edges = np.linspace(0.0, 0.1, 101)  # 1 MeV bins; 0.03 is not exactly representable among them
    s = make_spectrum(np.arange(100.0), edges=edges)
    c = crop(s, 0.03, 0.0405)
    assert c.n_bins == 10
    assert c.edges[0] == pytest.approx(0.03) and c.edges[-1] == pytest.approx(0.04)
    assert c.counts[0] == 30.0


def test_a_crop_starts_at_its_edge_index():
    edges = np.linspace(0.0, 0.1, 101)
    c = crop(make_spectrum(np.arange(100.0), edges=edges), 0.03, 0.0405)
    i0 = edge_index(edges, float(c.edges[0]))
    assert i0 == 30 and np.array_equal(np.arange(100.0)[i0:i0 + c.n_bins], c.counts)


def test_crop_errors():
    s = make_spectrum([1.0, 2.0, 3.0])
    with pytest.raises(InputError, match="no bin"):
        crop(s, 0.0105, 0.0109)
    with pytest.raises(ConfigError, match="lo < hi"):
        crop(s, 0.002, 0.001)


# --------------------------------------------------------------------------- validation


def test_validation_of_a_good_spectrum():
    s = make_spectrum([0.0, 3000.0, 5000.0, 0.0])
    report = validate_spectrum(s, mass_range=(0.001, 0.004))
    assert report["ok"] and report["problems"] == []
    assert report["n_bins"] == 4 and report["entries"] == 8000.0 and report["empty_bins"] == 2
    assert report["bin_width"]["uniform"] and report["mass_range_covered"] is True
    json.dumps(report, allow_nan=False)
    check_analysable(report)


@pytest.mark.parametrize(
    ("counts", "fragment"),
    [
        ([1.0, np.nan, 2.0], "NaN counts"),
        ([1.0, -3.0, 2.0], "negative counts"),
        ([1.0, np.inf, 2.0], "infinite counts"),
        ([0.0, 0.0, 0.0], "zero entries"),
    ],
)
def test_bad_counts_fail_validation_with_problem_named(counts, fragment):
    report = validate_spectrum(make_spectrum(counts, variances=np.ones(3)))
    assert not report["ok"]
    assert any(fragment in p for p in report["problems"])
    json.dumps(report, allow_nan=False)
    with pytest.raises(InputError, match=fragment):
        check_analysable(report)


def test_nan_indices_reported():
    counts = np.ones(20)
    counts[[3, 7]] = np.nan
    spectrum = make_spectrum(counts, variances=np.ones(20))
    report = validate_spectrum(spectrum)
    mev = [round(float(spectrum.centers[i]) * 1e3, 3) for i in (3, 7)]
    assert report["nan_bins"] == {"count": 2, "first_indices": [3, 7], "first_mev": mev}
    with pytest.raises(InputError, match=rf"2 bins with NaN counts \(first at \[{mev[0]}, {mev[1]}\] MeV, bin indices "
                                         r"\[3, 7\]\)\. Fix the input histogram$"):
        check_analysable(report)


def test_bad_bins_outside_the_mass_range_are_left_out_with_a_warning():
    """NaN or negative bins at masses the analysis never reads refused the whole file before."""
    counts = np.ones(20) * 1e4
    counts[18] = np.nan
    counts[19] = -3.0
    spectrum = make_spectrum(counts, variances=np.abs(np.nan_to_num(counts)))
    lo, hi = float(spectrum.edges[2]), float(spectrum.edges[15])
    report = validate_spectrum(spectrum, mass_range=(lo, hi))
    assert report["nan_bins"]["count"] == report["negative_bins"]["count"] == 0
    assert report["unusable_outside_range"]["count"] == 2
    assert any("outside the analysed range" in w and "not used" in w for w in report["warnings"])
    inside = validate_spectrum(spectrum, mass_range=(lo, float(spectrum.edges[-1])))
    with pytest.raises(InputError, match=r"bins with NaN counts in the analysed range .* or choose a "
                                         r"dataset\.mass_range that leaves those bins out"):
        check_analysable(inside)


def test_mass_range_not_covered_and_edges_not_increasing():
    report = validate_spectrum(make_spectrum([1.0, 2.0, 3.0]), mass_range=(0.001, 0.05))
    assert report["mass_range_covered"] is False
    with pytest.raises(InputError, match=r"range \[0, 0\.003\] GeV does not cover the requested mass_range "
                                         r"\[0\.001, 0\.05\] GeV: set dataset\.mass_range=\[0\.001,0\.003\]"):
        check_analysable(report)
    bad_edges = make_spectrum([1.0, 2.0], edges=[0.0, 0.2, 0.1])
    report = validate_spectrum(bad_edges)
    assert not report["edges_increasing"]
    assert any("increasing" in p for p in report["problems"])


def test_variable_binning_reported():
    report = validate_spectrum(make_spectrum([1.0, 2.0], edges=[0.0, 0.1, 0.3]))
    assert report["bin_width"] == {"min": pytest.approx(0.1), "max": pytest.approx(0.2), "uniform": False}


def test_non_integer_counts_warn_only(caplog):
    report = validate_spectrum(make_spectrum([1.5, 2.0, 2.25]))
    assert report["ok"]
    assert report["non_integer_bins"] == {"count": 2, "first_indices": [0, 2]}
    assert any("non-integer" in w for w in report["warnings"])
    with caplog.at_level("WARNING"):
        check_analysable(report)
    assert "non-integer" in caplog.text


def test_write_validation_report_atomic(tmp_path):
    reports = {"2015": validate_spectrum(make_spectrum([1.0, np.nan], variances=[1.0, 1.0]))}
    path = write_validation_report(tmp_path / "out" / "validation_report.json", reports)
    assert json.loads(path.read_text())["2015"]["nan_bins"]["count"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["validation_report.json"]


# --------------------------------------------------------------------------- read cache


def test_a_histogram_read_once_comes_from_the_cache_until_the_file_changes(tmp_path, monkeypatch):
    from hps_bayes.inputs import root_io

    monkeypatch.setenv("HPS_BAYES_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "f.root"
    write_spectra_root(path, {"dir/h": make_spectrum([5.0, 7.0, 9.0], variances=[1.0, 2.0, 3.0])})
    first = load_spectrum(path, "dir/h")
    cached = sorted((tmp_path / "cache" / "spectra").glob("*.npz"))
    assert len(cached) == 1

    def no_uproot(*args, **kwargs):
        raise AssertionError("read with uproot although the histogram is cached")

    monkeypatch.setattr(root_io, "_read_th1", no_uproot)
    again = load_spectrum(path, "dir/h")
    for field in ("edges", "counts", "variances"):
        np.testing.assert_array_equal(getattr(again, field), getattr(first, field))
    assert again.source == first.source == f"{path}:dir/h;1" and again.name == first.name == "dir/h"
    monkeypatch.undo()
    monkeypatch.setenv("HPS_BAYES_CACHE", str(tmp_path / "cache"))

    # the same name in a changed file (same size: only the contents differ) is read again
    write_spectra_root(path, {"dir/h": make_spectrum([5.0, 7.0, 8.0], variances=[1.0, 2.0, 3.0])})
    np.testing.assert_array_equal(load_spectrum(path, "dir/h").counts, [5.0, 7.0, 8.0])
    assert len(list((tmp_path / "cache" / "spectra").glob("*.npz"))) == 2
    # a damaged cache entry (not an npz, or one cut short) is read from the file instead
    newest = max((tmp_path / "cache" / "spectra").glob("*.npz"), key=lambda p: p.stat().st_mtime_ns)
    whole = newest.read_bytes()
    for damaged in (b"not an npz", whole[: len(whole) // 2]):
        newest.write_bytes(damaged)
        np.testing.assert_array_equal(load_spectrum(path, "dir/h").counts, [5.0, 7.0, 8.0])


def test_the_read_cache_can_be_switched_off_and_never_hides_a_read_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HPS_BAYES_CACHE", "off")
    path = tmp_path / "f.root"
    write_spectra_root(path, {"h": make_spectrum([5.0, 7.0])})
    np.testing.assert_array_equal(load_spectrum(path, "h").counts, [5.0, 7.0])
    monkeypatch.setenv("HPS_BAYES_CACHE", str(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()
    with pytest.raises(InputError, match="histogram 'g' not found") as missing_histogram:
        load_spectrum(path, "g")
    with pytest.raises(InputError, match="does not exist") as missing_file:
        load_spectrum(tmp_path / "missing.root", "h")
    for error in (missing_histogram, missing_file):  # the file is not called damaged where it is not
        assert "damaged" not in str(error.value) and "could not be read" not in str(error.value)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="could not be read"):
        load_spectrum(path, "h")
    assert not list((tmp_path / "cache").rglob("*.npz"))


def _uniform(width: float) -> Spectrum:
    edges = np.round(np.arange(0.015, 0.1300001, width), 9)
    counts = np.full(len(edges) - 1, 1000.0)
    return Spectrum(edges=edges, counts=counts, variances=counts, name="h", source="test")


def test_analysis_bins_wider_than_the_resolution_are_refused_with_the_rebin_that_fits(caplog):
    from dataclasses import replace

    from hps_bayes.inputs import validation
    from hps_bayes.physics.presets import load_preset
    from hps_bayes.physics.signal import sigma_m

    def check_resolution(spectrum, preset):
        validation.check_resolution(spectrum, mass_range=preset.mass_range, rebin=preset.rebin,
                                    sigma=lambda m: sigma_m(m, preset))

    preset = load_preset("hps2015")  # rebin 10, σ(m) = 0.71 MeV at 15 MeV
    check_resolution(_uniform(0.00005), preset)  # the stored 0.05 MeV bins: 0.5 MeV analysis bins
    # a histogram already in 0.5 MeV bins, rebinned 10 times: 5 MeV bins, 7 σ(m) at the range start
    with pytest.raises(InputError, match=r"analysis bins of 5 MeV .*0\.5 MeV bins x dataset\.rebin=10.*"
                                         r"σ\(m\) = 0\.719 MeV at 15\.25 MeV.*set dataset\.rebin=1 \(bins of 0\.5 MeV\)"):
        check_resolution(_uniform(0.0005), preset)
    with pytest.raises(InputError, match=r"set dataset\.rebin=14 \(bins of 0\.7 MeV\)"):
        check_resolution(_uniform(0.00005), replace(preset, rebin=30))  # 1.5 MeV bins; 14 x 0.05 MeV <= σ(m) = 0.707 MeV
    # stored bins already 2 σ(m) wide at the range start: a finer histogram, or a later start
    with pytest.raises(InputError, match=r"give a histogram with finer bins, or start dataset\.mass_range at 0\.04 GeV or above$"):
        check_resolution(_uniform(0.002), replace(preset, rebin=1))
    # the same with the preset's rebin 10: the later start needs the histogram's own bins (one message, not two)
    with pytest.raises(InputError, match=r"start dataset\.mass_range at 0\.04 GeV or above with dataset\.rebin=1$"):
        check_resolution(_uniform(0.002), preset)
    # between one and two σ(m): a warning with the same fix, the analysis goes on (1 MeV bins, 1.4 σ(m) at 15 MeV)
    with caplog.at_level(logging.WARNING, logger="hps_bayes.inputs.validation"):
        check_resolution(_uniform(0.001), replace(preset, rebin=1))
    assert "barely resolved" in caplog.text and "start dataset.mass_range at 0.0215 GeV" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hps_bayes.inputs.validation"):
        check_resolution(_uniform(0.001), replace(preset, rebin=1))
    assert caplog.text == ""  # said once per process
    with caplog.at_level(logging.WARNING, logger="hps_bayes.inputs.validation"):
        check_resolution(_uniform(0.001), replace(preset, rebin=1, mass_range=(0.021, 0.13)))  # centred at 21.5 MeV: σ > 1 MeV
    assert caplog.text == ""
    # an axis in MeV makes every bin look 1000 times too wide: the units are named (before the binning is checked)
    mev = _uniform(0.00005)
    in_mev = Spectrum(edges=mev.edges * 1e3, counts=mev.counts, variances=mev.variances, name="h", source="test")
    with pytest.raises(InputError, match=r"bin edges reach 130, which looks like MeV.*axis in GeV"):
        check_analysable(validate_spectrum(in_mev, mass_range=preset.mass_range))
