"""A scan of the user's own file without a background selection says where its S comes from; a generated
demo (whose look-alikes the shipped table was measured on) and a scan with a selection do not."""

from __future__ import annotations

import logging

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
