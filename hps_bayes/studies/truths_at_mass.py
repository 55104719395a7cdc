"""The selection's truths at each mass, free of a signal at that mass.

A truth is a smooth shape fitted to the whole spectrum (:func:`hps_bayes.studies.spurious.fit_truth`).
A signal in the data pulls it: 15,000 events added at 50 MeV to a 2015-like demo spectrum moved the
``smooth`` fit by 13,200 events and the ``flexible`` one by 14,500 within ±2σ(m) of the signal.  A
candidate's noise-free Â on such a truth then counts the signal as bias, and a selection made on a
spectrum with a signal swallowed it (a 5σ signal at 100 MeV on a 2016-like spectrum was found at 1.5σ).

So at each grid mass m every truth is refitted with a signal of free size at m added (the scan's binned
Gaussian of width σ(m)), and, where the data's ``smooth`` fit finds such a signal (:data:`MIN_SIGNAL_Z`),
the selection also uses its background part: a truth at m describes the spectrum
as background plus a signal at m, so that a signal there is not taken for background.  On the spectrum
above, the refits of the ``smooth`` and ``flexible`` truths moved by 900 and 2,600 events (their turn-ons,
held at the whole fits', differ).  :func:`hps_bayes.studies.selection_cell.data_cell` judges each truth against
the data on the window's sidebands alone, and the GP's η, ℓ come from the evidence with a signal at m free
(:func:`hps_bayes.model.window.make_window`): the choices made at m do not see a signal at m.
Structure of a signal's shape at m is then not seen either; no single spectrum tells the two apart.

The refit is Gauss–Newton from the whole fit (:meth:`hps_bayes.studies.truth_noise.Linearised.with_signal`;
it matches SciPy's least squares of the same model); the factor of a refit's noise
(:mod:`hps_bayes.studies.truth_noise`) is that of the background part with the signal's size free.

Written by hand: the refit reuses the linearisation the package makes of its own truth fits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.core import FloatArray
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.inputs.turnon import ShapeFit, fit_shape
from hps_bayes.physics.signal import sigma_m, signal_template
from hps_bayes.studies.spurious import fit_truth, truth_of_fit
from hps_bayes.studies.truth_noise import Linearised, TruthNoise

#: The truths' refits with a signal free count at a mass where the data's ``smooth`` fit (:data:`GATE`) finds a
#: signal there of at least this many times its error.  Where it finds none, a refit differs from the whole fit
#: by noise, and the smaller of a candidate's two biases would be chance: near the 2016 range's upper end
#: (160–166 MeV on the smooth demo) the refits found 0.6–0.9 σ of "signal", took the range end's shape up with
#: it, and cut the S of a degree-3 window from 580 to 100 events where its bias on the true shape was 1.4 σ_tot.
#: The ``flexible`` fit is not asked: it takes a signal up without finding it (a 5σ signal at 40 MeV on the
#: 2016 demo was 1.8 errors of its own fit, 4.1 of ``smooth``'s).  At 2 errors that signal came out at 2.8σ
#: and one at 24 MeV on a 2015-like file at 1.5σ (3.8σ and 2.1σ now); at 1.0 the refits counted where the fit
#: follows noise, and the 2021 demo's highest P(Z > 2) rose from 0.04 to 0.20 (docs/background_selection.md).
MIN_SIGNAL_Z = 1.5
#: The truth whose refit decides whether the refits count (the selection always fits it; without it, none count:
#: each truth deciding for itself lost the 40 MeV signal above).
GATE = "smooth"


@dataclass
class TruthsAtMass:
    """The truths ``names`` of ``whole`` (the data's whole range), and at each mass their refits with a signal
    there free (:meth:`at`), with the factor of their noise for the truths ``noisy``."""

    whole: Spectrum
    settings: AnalysisSettings
    fits: dict[str, Linearised]
    truths: dict[str, Spectrum]
    noisy: frozenset[str]
    _at: dict[float, dict[str, TruthNoise]] = field(default_factory=dict, repr=False)

    @classmethod
    def fit(cls, whole: Spectrum, settings: AnalysisSettings, names: list[str], noisy: list[str]) -> TruthsAtMass:
        """Each of ``names`` fitted to ``whole`` (as :func:`~hps_bayes.studies.spurious.fit_truth` fits it)."""
        fits, truths = {}, {}
        edges, counts = np.asarray(whole.edges, float), np.asarray(whole.counts, float)
        for name in dict.fromkeys(names):
            if name == "demo":  # the reference itself: nothing is fitted, nothing to refit
                truths[name] = fit_truth(whole, name)
                continue
            shape = fit_shape(edges, counts, name)
            truths[name] = fit_truth(whole, name, shape=shape)
            fits[name] = Linearised.at(whole, shape)
        return cls(whole, settings, fits, truths, frozenset(noisy))

    def noise(self, name: str) -> TruthNoise:
        """The whole fit of truth ``name`` with the factor of its noise (:mod:`hps_bayes.studies.truth_noise`)."""
        return TruthNoise(self.truths[name], self.fits[name].factor())

    def at(self, mass: float) -> dict[str, TruthNoise]:
        """The truths refitted with a signal at ``mass`` free, less that signal, where :data:`GATE` finds one
        (|a| ≥ :data:`MIN_SIGNAL_Z` times its error; none elsewhere); with the factor of their noise for the truths
        ``noisy`` (an empty one for the others)."""
        key = round(mass, 9)
        if key not in self._at:
            tpl = signal_template(self.whole.edges, mass, float(sigma_m(mass, self.settings.dataset)))

            def refit(name: str) -> tuple[ShapeFit, float, float, FloatArray]:
                return self.fits[name].with_signal(tpl, with_factor=name in self.noisy)

            def found(fit: tuple[ShapeFit, float, float, FloatArray]) -> bool:
                return abs(fit[1]) >= MIN_SIGNAL_Z * fit[2]

            # the others are refitted only where the gate truth finds a signal; without it ("demo" alone) none is
            gate = refit(GATE) if GATE in self.fits else None
            refits = ({name: gate if name == GATE else refit(name) for name in self.fits}
                      if gate is not None and found(gate) else {})
            self._at[key] = {name: TruthNoise(truth_of_fit(self.whole, shape, note=(
                f" less a signal of {size:.0f} ± {error:.0f} events at {mass * 1e3:.1f} MeV")), factor)
                for name, (shape, size, error, factor) in refits.items()}
        return self._at[key]
