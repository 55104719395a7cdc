"""The background model chosen per mass from the user's own spectrum (``task=select``).

No single background suits a whole HPS spectrum: a flexible one is safe and loses
sensitivity, a stiff one is sensitive and fakes signals where the spectrum has structure.
This study chooses at every mass, on the spectrum to be analysed:

1. *Truths of that spectrum*: smooth families fitted to its whole range
   (:func:`hps_bayes.studies.spurious.fit_truth`, including ``smooth``, its own
   high-flexibility fit, which keeps the spectrum's few-percent structure).
2. For every candidate background (``task.candidates``: windows of several widths and
   degrees, the whole-range model, a turn-on-aware model, a GP-carried model, ...) and mass:
   - its **spurious signal** S: the largest |Â| of the noise-free fits of the truths that describe
     the data in the window (the precise bias; the largest over the neighbouring grid masses, in
     units of the background ρ(m)σ(m) as the scan carries S, and between grid masses the scan uses
     the larger of the two neighbours', covers the bias between grid masses); where none does (very
     precise data), the data's ``flexible`` fit (:data:`FALLBACK_TRUTH`) is tried, with a note.
     A candidate whose window has no active GP (η = 0) needs a truth that describes the window well
     (p ≥ ``truth_min_p_without_gp``): structure the truths leave in the data biases a polynomial by
     more than its S, while a GP-carried window absorbs it and pays for it in σ_stat.  For a GP-carried window, S counts only the bias beyond
     the variance its GP prior already puts into σ_stat (``spurious_beyond_prior``:
     S² → max(S² − σ_prior², 0), σ_prior² = [H⁻¹]_AA − [H⁻¹(H − P)H⁻¹]_AA, P the weights' unit
     constraint, :func:`hps_bayes.studies.gp_prior.prior_share`): the prior is there to cover
     the bias of structure it cannot follow exactly, and counting it twice loses sensitivity.
     A truth of ``beyond_noise`` (``flexible`` by default) counts, for a window without an active GP, only
     beyond the noise of its own fit (:mod:`hps_bayes.studies.truth_noise`): it resolves structure the
     other truths smooth over, which biases a polynomial window beyond their S; a GP-carried window leaves it
     out, as its prior covers such structure (counted there, it cost σ_A and took up part of a real signal).
     Where the data's ``smooth`` fit finds a signal at the mass, each truth also counts by its refit with that
     signal free, less it (:mod:`hps_bayes.studies.truths_at_mass`), and the smaller of its two biases is taken
     (:mod:`hps_bayes.studies.selection_cell`): a truth fitted to data with a signal takes part of it up, and
     S would swallow it.  Whether a truth describes the data is judged on the window's sidebands
     (|m_i − m| > 2σ(m), :attr:`hps_bayes.model.window.Window.sidebands`), and a GP-carried window's η, ℓ
     come from the evidence with a signal at the mass free: nothing chosen at a mass takes a signal there up;
   - its **adequacy on the data**: the window's goodness of fit (Poisson deviance of the
     signal-plus-background fit, p-value with n_bins − n_free degrees of freedom), the agreement of
     its Asimov σ_A with the Hessian error (as the scan's checks demand), the largest
     signal-scale residual sum in the sidebands (|x − m| > 2σ), and, over the masses, the
     **Z spread**: the standard deviation of Â/σ_A on the data over the neighbouring grid masses
     (± ``spread_window``), leaving out the largest |Â/σ_A| there and :data:`PEAK_HALF` grid masses on
     each side of it (where a signal would sit: a signal must not make every candidate fail around it),
     divided by the same spread of the candidate on noise alone (:func:`spread_reference`, from Poisson
     toys of the ``smooth`` truth with the candidate's bias taken out: the windows overlap, so the Z
     values are correlated) — local, so that a candidate that fails in one part of the spectrum may
     still serve the rest;
   - σ_tot = √(σ_stat² + S²) and σ_tot/σ_A⁰, σ_A⁰ = (Σ T²/n)^(−1/2) from the observed counts.
3. At each mass, the passing candidate (window p ≥ ``gof_min_p``, sideband ≤ ``sideband_max_z``,
   corrected Z spread ≤ max(``spread_max``, 1 + ``spread_sigmas`` × the relative scatter of the toys'
   spreads): a spread measured on one spectrum scatters) with the smallest σ_tot.  Where every
   candidate fails the Z spread and some fail it alone, the cause is in the data, not in
   one model (two large fluctuations within the local window: the check leaves out only the largest
   |Â/σ_A|, and a signal next to a fluctuation looks the same), so refusing the mass would lose it
   for every model: the candidate nearest its allowed spread is used and the mass carries a note (in
   the selection and in the scan's ``message``); likewise the best-fitting where every window fit has
   p < ``gof_min_p`` (:func:`_gof_fallback`).  None: the mass gets the reason.

Written by hand: no library selects a background by spurious signal and data adequacy.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from hps_bayes.analysis.checks import MAX_LOG_STAT, MIN_GOF_P
from hps_bayes.analysis.grid import default_grid_ends, guard_turn_on, prepare_spectrum, whole_range_spectrum
from hps_bayes.analysis.seeds import SELECT, run_rng
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.core import FloatArray
from hps_bayes.errors import ConfigError, FitError, InputError
from hps_bayes.inputs.spectrum import Spectrum, crop, edge_index
from hps_bayes.inputs.turnon import SHAPES
from hps_bayes.model.objective import WindowObjective
from hps_bayes.model.selection import CANDIDATE_KEYS, SELECTION_FORMAT
from hps_bayes.model.settings import BackgroundSettings
from hps_bayes.results.progress import progress_bar
from hps_bayes.studies.selection_cell import FALLBACK_TRUTH, PLAUSIBLE_P, data_cell
from hps_bayes.studies.truths_at_mass import TruthsAtMass
from hps_bayes.studies.zspread import local_spreads, spread_reference, toy_z

log = logging.getLogger(__name__)


#: The Asimov σ_A must agree with the Hessian error within this fraction of the scan's tolerance
#: (:data:`hps_bayes.analysis.checks.MAX_LOG_STAT`): masses between the grid's use the same model.
SIGMA_MARGIN = 0.6


@dataclass(frozen=True)
class Criteria:
    """What a candidate must meet on the data to be chosen (module docstring, step 3)."""

    gof_min_p: float = 0.01
    sideband_max_z: float = 3.5
    spread_max: float = 1.15
    spread_sigmas: float = 2.33
    spread_window: int = 8
    spurious_beyond_prior: bool = True
    truth_min_p_without_gp: float = 0.1
    beyond_noise: tuple[str, ...] = ("flexible",)


def candidate_settings(base: AnalysisSettings, name: str, overrides: Mapping[str, Any],
                       data: Spectrum) -> AnalysisSettings:
    """``base`` with candidate ``name``'s background settings, its turn-on measured on ``data``."""
    unknown = sorted(set(overrides) - CANDIDATE_KEYS)
    if unknown:
        raise ConfigError(f"task.candidates.{name} sets {unknown}; a candidate may set {sorted(CANDIDATE_KEYS)}")
    bkg = BackgroundSettings.from_dict(base.background.to_dict() | dict(overrides) | {
        "selection": "", "spurious": "off", "degree_table": ()})
    return guard_turn_on(data, replace(base, background=bkg))


def resolved(settings: AnalysisSettings) -> dict[str, Any]:
    """The candidate's background settings as the selection file stores them (turn-on measured)."""
    full = settings.background.to_dict()
    return {k: full[k] for k in sorted(CANDIDATE_KEYS)}


def run_selection(data: Spectrum, base: AnalysisSettings, candidates: Mapping[str, Mapping[str, Any]], *,
                  families: Sequence[str], step: float, n_toys: int, seed: int, criteria: Criteria,
                  mass_min: float | None = None, mass_max: float | None = None,
                  progress: bool | None = None) -> tuple[Any, dict[str, Any]]:
    """The study on ``data`` (raw, in effective counts): every cell and the selection file's content."""
    import pandas as pd

    if not candidates or "smooth" not in families or not set(criteria.beyond_noise) <= set(SHAPES):
        raise ConfigError(f"task.candidates={list(candidates)}, task.families={list(families)}, task.beyond_noise="
                          f"{list(criteria.beyond_noise)}: name at least one candidate, keep 'smooth' among the truths "
                          f"(the Z-spread toys are drawn from it), and take beyond_noise from {list(SHAPES)}")
    # counted beyond their fit's noise; a truth also among the families counts in full (the stricter S)
    noisy = [f for f in criteria.beyond_noise if f not in families]
    # where no truth describes a window (very precise data), S comes from the data's most flexible fit
    spare = [] if FALLBACK_TRUTH in families else [FALLBACK_TRUTH]
    at_mass = TruthsAtMass.fit(whole_range_spectrum(data, base), base, [*families, *noisy, *spare], noisy)
    truths = {f: at_mass.truths[f] for f in [*families, *noisy]}
    noise = {f: at_mass.noise(f) for f in noisy}
    own = {name: candidate_settings(base, name, ov, data) for name, ov in candidates.items()}
    ends = [default_grid_ends(s) for s in own.values()]
    lo = min(e[0] for e in ends) if mass_min is None else mass_min
    hi = max(e[1] for e in ends) if mass_max is None else mass_max
    masses = np.round(np.arange(math.ceil(round(lo / step, 9)) * step, hi + 1e-9, step), 7)
    if len(masses) < 3:
        raise InputError(f"the selection grid [{lo:.4f}, {hi:.4f}] GeV in steps of {step} has {len(masses)} masses; "
                         "the Z spread needs at least 3: a smaller task.step or a wider range")
    rng = run_rng(seed, SELECT)
    toys = rng.poisson(truths["smooth"].counts, size=(n_toys, truths["smooth"].n_bins)).astype(float)
    rows, spreads = [], {}
    for name, settings in progress_bar(own.items(), progress, desc="select", unit="model", leave=False):
        spec = prepare_spectrum(data, settings)
        span = (float(spec.edges[0]), float(spec.edges[-1]))
        cut = {f: crop(t, *span) for f, t in at_mass.truths.items()}
        # the truths' own turn-on, measured on their whole fits (a refit at a mass keeps it: truths_at_mass)
        on_truth = {f: _truth_settings(t, settings) for f, t in cut.items()}
        cells: list[dict[str, Any]] = []
        fitted: list[tuple[WindowObjective, FloatArray] | None] = []
        fallback = (cut[spare[0]], on_truth[spare[0]]) if spare else None
        for mass in masses:
            cell = {"model": name, "mass": float(mass), "available": True, "reason": ""}
            try:
                values, objective, theta = data_cell(
                    spec, [cut[f] for f in truths], float(mass), settings, [on_truth[f] for f in truths],
                    fallback=fallback, min_p_without_gp=criteria.truth_min_p_without_gp, noise=noise,
                    free=at_mass.at(float(mass)))
                cells.append(cell | values)
                fitted.append((objective, theta))
            except (InputError, FitError, np.linalg.LinAlgError, FloatingPointError, ValueError) as exc:
                why = str(exc).split(";")[0]
                if isinstance(exc, np.linalg.LinAlgError):  # numpy's words ("Matrix is not positive definite")
                    why = f"the window's fit has no positive-definite Hessian ({why}): no minimum, or too little data"
                cells.append(cell | {"available": False, "reason": why})
                fitted.append(None)
        i0 = edge_index(truths["smooth"].edges, float(spec.edges[0]))
        z_toys = toy_z(fitted, spec.edges, toys[:, i0:i0 + spec.n_bins])
        z_data = np.array([c["z"] if c["available"] else np.nan for c in cells])
        spreads[name] = spread_reference(z_toys)
        for cell, (corrected, expected, scatter) in zip(cells, local_spreads(z_data, z_toys, criteria.spread_window)):
            cell |= {"z_spread_corrected": corrected, "z_spread_expected": expected, "z_spread_toys_sd": scatter}
        rows.extend(cells)
    frame = pd.DataFrame(rows)
    frame = _with_totals(frame, spreads, criteria)
    return frame, selection_content(frame, own, spreads, criteria, families)


def _truth_settings(truth: Spectrum, settings: AnalysisSettings) -> AnalysisSettings:
    """``settings`` as data shaped like ``truth`` would get them: a ``factor`` turn-on measured on the truth
    (the guarded range start stays the data's, so that the windows match)."""
    bkg = settings.background
    if bkg.turn_on != "factor":
        return settings
    fresh = replace(settings, background=replace(bkg, turn_on_mass=None, turn_on_width=None))
    return guard_turn_on(truth, fresh, prepared=True)


def _with_totals(frame: Any, spreads: Mapping[str, tuple[float, float]], criteria: Criteria) -> Any:
    """S (the largest over ±1 grid mass per model), σ_tot, ratios and the pass flags of every cell."""
    frame = frame.sort_values(["model", "mass"]).reset_index(drop=True)
    for col in ("z_spread_corrected", "z_spread_expected", "z_spread_toys_sd", "spurious_raw", "truth_min_p", "sigma_prior",
                "sigma_stat", "sigma_asimov", "sigma_floor", "z", "gof_p", "sideband_z", "rho", "sigma_m", "n_truths"):
        if col not in frame:
            frame[col] = np.nan
    # the largest over ±1 grid mass: the bias of the model chosen at a grid mass varies between grid masses,
    # and a scan mass between two grid masses takes the nearer one's model (without it, injections at such
    # masses on the smooth 2015 truth left 0.49 σ_tot of bias uncovered, with it 0.12).  Taken in units of
    # ρ(m)σ(m), the units in which the scan carries S between grid masses: in events, the turn-on's steep
    # rise handed a grid mass the bias of a neighbour with twice its background
    scale = frame.rho * frame.sigma_m
    scale = scale.where(scale > 0)  # an empty window: NaN, not ±inf
    frame["spurious"] = scale * (frame.spurious_raw / scale).groupby(frame.model).transform(
        lambda s: s.rolling(3, center=True, min_periods=1).max())
    if criteria.spurious_beyond_prior:  # a GP-carried window's prior already holds σ_prior of bias (module docstring)
        frame["spurious"] = np.sqrt(np.maximum(frame.spurious**2 - frame.sigma_prior.fillna(0.0)**2, 0.0))
    frame["spurious_rel"] = frame.spurious / scale
    frame["sigma_tot"] = np.hypot(frame.sigma_stat, frame.spurious)
    frame["ratio_stat"] = frame.sigma_stat / frame.sigma_floor
    frame["ratio"] = frame.sigma_tot / frame.sigma_floor
    stats = frame[frame.available].groupby("model").z.agg(["std", "count"])
    frame["z_spread"] = frame.model.map(stats["std"])
    frame["z_spread_allowed"] = np.maximum(criteria.spread_max, 1.0 + criteria.spread_sigmas
                                           * frame.z_spread_toys_sd / frame.z_spread_expected)
    gof_fails = f"window goodness of fit p < {criteria.gof_min_p:g}"
    checks = [
        (~frame.available.astype(bool), frame.reason.astype(str)),
        (frame.n_truths == 0, np.where(frame.truth_min_p > PLAUSIBLE_P, NO_TRUTH_WITHOUT_GP, NO_TRUTH)),
        (~(frame.gof_p >= criteria.gof_min_p), gof_fails),
        (~(frame.sideband_z <= criteria.sideband_max_z), f"sideband residuals above {criteria.sideband_max_z:g}"),
        (~(frame.z_spread_corrected <= frame.z_spread_allowed), SPREAD_FAILS),
        (~(np.abs(np.log(frame.sigma_asimov / frame.sigma_stat)) <= SIGMA_MARGIN * MAX_LOG_STAT),
         "sigma_A of the Asimov likelihood disagrees with the Hessian error (the scan would flag it)"),
        (~np.isfinite(frame.sigma_tot), "no finite sigma_A"),
    ]
    frame["fails"] = _first_failure(checks)
    frame["fails_besides_spread"] = _first_failure([c for c in checks if c[1] is not SPREAD_FAILS])
    frame["fails_besides_gof"] = _first_failure([c for c in checks if c[1] is not gof_fails])
    frame["passes"] = frame.fails == ""
    return frame


#: The reason of a cell where no truth (the fallback included) describes the data in the window.
NO_TRUTH = f"none of the truths describes the data in this window (Pearson chi2 p < {PLAUSIBLE_P:g}): S cannot be measured"


#: The reason of a cell without a GP where the truths describe the data only loosely (p below
#: ``Criteria.truth_min_p_without_gp``): structure they leave out biases such a model beyond its S.
NO_TRUTH_WITHOUT_GP = ("no truth describes the data in this window well enough to measure the S of a background "
                       "without a GP (structure the truths do not resolve would bias it beyond S)")


def masses_without_a_good_truth(frame: Any) -> list[float]:
    """The grid masses where some candidate without a GP lost its truth to the stricter bound
    (:data:`NO_TRUTH_WITHOUT_GP`): the spectrum has structure there that the truths do not resolve."""
    return sorted({float(m) for m in frame.mass[frame.fails == NO_TRUTH_WITHOUT_GP]})


#: The reason of a cell that fails the Z-spread check alone.
SPREAD_FAILS = "Z spread on the data above what noise gives"


def _first_failure(checks: Sequence[tuple[Any, Any]]) -> Any:
    """Per cell, the message of the first failing ``(mask, message)`` check ("" where all pass)."""
    why = np.full(len(checks[0][0]), "", dtype=object)
    for failing, message in checks:
        why = np.where((why == "") & np.asarray(failing, bool), message, why)
    return why


def _spread_fallback(group: Any, window: int) -> tuple[Any, str]:
    """Where every candidate fails the Z spread and some pass the other checks (two large fluctuations of the
    data within ±``window`` grid masses, which no background absorbs, or structure none does): the one
    nearest its allowed spread, and the note that says so; ``(None, "")`` where none passes the others or
    some candidate passes the Z spread (a failure of that check is then the model's, not the data's)."""
    spread_only = group[group.fails_besides_spread == ""]
    if spread_only.empty or (group.z_spread_corrected <= group.z_spread_allowed).any():
        return None, ""
    best = spread_only.loc[(spread_only.z_spread_corrected / spread_only.z_spread_allowed).idxmin()]
    note = (f"every candidate's Z spread within ±{window} grid masses is above what noise gives (large "
            f"fluctuations of the data there, or structure no candidate absorbs): {best.model} is used, the one "
            f"nearest its allowed spread ({best.z_spread_corrected:.2f} against {best.z_spread_allowed:.2f})")
    return best, note


def _gof_fallback(group: Any, criteria: Criteria) -> tuple[Any, str]:
    """Where every candidate's window fit has p < ``gof_min_p`` and some pass every other check: the one that fits
    best, if its p is at least the scan's own bound (:data:`hps_bayes.analysis.checks.MIN_GOF_P`), and the note that
    says so; ``(None, "")`` otherwise (where some candidate fits well, a failure of the fit is that model's own).
    The candidates share the data, so a fluctuation of it, or structure none of them follows, fails them together."""
    fits_only = group[(group.fails_besides_gof == "") & (group.gof_p >= MIN_GOF_P)]
    if fits_only.empty or (group.gof_p >= criteria.gof_min_p).any():
        return None, ""
    best = fits_only.loc[fits_only.gof_p.idxmax()]
    note = (f"every candidate's window goodness of fit is below p = {criteria.gof_min_p:g} here (structure no "
            f"candidate follows, or a fluctuation of the data): {best.model} is used, the one that fits best "
            f"(p = {best.gof_p:.2g}; the scan flags p < {MIN_GOF_P:g})")
    return best, note


def selection_content(frame: Any, own: Mapping[str, AnalysisSettings], spreads: Mapping[str, tuple[float, float]],
                      criteria: Criteria, families: Sequence[str]) -> dict[str, Any]:
    """What ``selection_<dataset>.json`` holds: the models, one row per mass, per-model summaries."""
    rows = []
    for mass, group in frame.groupby("mass"):
        ok = group[group.passes]
        best, note = (ok.loc[ok.sigma_tot.idxmin()], "") if not ok.empty else _spread_fallback(
            group, criteria.spread_window)
        if best is None:
            best, note = _gof_fallback(group, criteria)
        if best is None:
            reason = "; ".join(f"{r.model}: {r.fails}" for r in group.itertuples())
            rows.append({"mass": float(mass), "model": "", "reason": reason, "note": "", "spurious_rel": 0.0})
            continue
        truth_note = best.get("truth_note", "")
        note = "; ".join(x for x in (note, truth_note if isinstance(truth_note, str) else "") if x)
        rows.append({"mass": float(mass), "model": str(best.model), "reason": "", "note": note,
                     **{k: float(best[k]) for k in ("spurious_rel", "spurious", "sigma_stat", "sigma_tot",
                                                    "sigma_floor", "ratio", "ratio_stat", "z", "gof_p",
                                                    "sideband_z")},
                     **{k: _f(best.get(k, math.nan)) for k in ("eta", "lengthscale")}})  # the scan reuses them
    used = {str(r["model"]) for r in rows if r["model"]}
    starts = [float(own[m].background.fit_range_min or own[m].dataset.mass_range[0]) for m in used]
    summary = {}
    for name, group in frame.groupby("model"):
        avail = group[group.available]
        summary[str(name)] = {
            "label": own[str(name)].background.label(), "masses_served": int(avail.shape[0]),
            "masses_passing": int(group.passes.sum()), "z_spread": _f(avail.z.std()),
            "z_spread_expected": _f(spreads[str(name)][0]), "z_spread_toys_sd": _f(spreads[str(name)][1]),
            "z_spread_corrected": _f(avail.z.std() / spreads[str(name)][0]),
            "z_spread_local_max": _f(avail.z_spread_corrected.max()),
            "ratio_median": _f(avail.ratio.median()), "ratio_stat_median": _f(avail.ratio_stat.median()),
            "spurious_over_sigma_median": _f((avail.spurious / avail.sigma_stat).median()),
            "max_abs_z": _f(avail.z.abs().max()), "chosen_at": sum(r["model"] == name for r in rows)}
    return {"format": SELECTION_FORMAT, "dataset": next(iter(own.values())).dataset.name,
            "range_lo": min(starts) if starts else float(next(iter(own.values())).dataset.mass_range[0]),
            "criteria": vars(criteria), "truths": list(families),
            "models": {m: resolved(own[m]) for m in sorted(used)}, "candidates": summary, "rows": rows}


def _f(value: Any) -> float | None:
    v = float(value)
    return v if math.isfinite(v) else None
