"""A scan of the user's own file without a background selection says where its S comes from; a generated
demo (whose look-alikes the shipped table was measured on) and a scan with a selection do not."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from hps_bayes.cli.config import _plain, load_config, settings_from_config
from hps_bayes.cli.inputs import warn_without_selection

NOTE = "without background.selection"


@pytest.mark.parametrize(("overrides", "warned"), [
    (["dataset=hps2015", "dataset.path=/data/hps2015.root"], True),  # the user's file, default background
    (["dataset=demo2016"], False),  # a generated demo: the table was measured on such spectra
    (["dataset=hps2015", "dataset.path=/data/hps2015.root", "background.selection=/sel/selection_2015.json"], False),
    (["dataset=hps2015", "dataset.path=/data/hps2015.root", "background.spurious=off"], False),  # S off: said elsewhere
])
def test_the_source_of_s_is_named_where_it_was_not_measured_on_the_file(
        overrides: list[str], warned: bool, caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config(overrides)
    with caplog.at_level(logging.WARNING, logger="hps_bayes"):
        warn_without_selection(settings_from_config(cfg), _plain(cfg))
    assert (NOTE in caplog.text) is warned
    if warned:
        assert "task=select" in caplog.text and "selection_2015.json" in caplog.text


def test_a_combination_member_of_ones_own_file_says_it_too(caplog: pytest.LogCaptureFixture) -> None:
    from hps_bayes.cli.config import task_settings
    from hps_bayes.cli.task_combine import combination_members

    datasets = "[{preset: hps2015, enabled: true, path: /data/hps2015.root}, {preset: demo2016, enabled: true}]"
    cfg = load_config(["task=combine", f"task.datasets={datasets}"])
    members = combination_members(task_settings(cfg).datasets, _plain(cfg))  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger="hps_bayes"):
        for settings, plain in members.values():
            warn_without_selection(settings, plain)
    assert caplog.text.count(NOTE) == 1 and "dataset 2015 without" in caplog.text


def test_a_scan_whose_pulls_spread_far_beyond_one_is_warned_about(caplog):
    """A_hat/sigma_A spreading by 4.7 (a spectrum whose structure the default background did not follow, local Z up
    to 7.7 with status ok) is said in the log; a spread of about 1 is not."""
    import logging

    from hps_bayes.cli.task_scan import MAX_Z_SPREAD, _warn_z_spread

    rng = np.random.default_rng(1)
    for scale, warned in ((1.0, False), (4.7, True)):
        pulls = scale * rng.standard_normal(40)
        rows = [{"status": "ok", "A_hat": 100.0 * z, "sigma_A": 100.0} for z in pulls]
        rows.append({"status": "input_error", "A_hat": float("nan"), "sigma_A": float("nan")})
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hps_bayes"):
            _warn_z_spread(rows)
        assert ("does not follow this spectrum's shape" in caplog.text) is warned
        assert bool(np.std(pulls, ddof=1) > MAX_Z_SPREAD) is warned
