"""Calibrated intervals of ring parameters (issue #17, task 6): split-conformal inflation of the posterior samples'
intervals.

The raw intervals (:func:`~ambient_science.pipelines.eht_eval.ring_intervals`: central 68 % / 95 % quantiles of
the kept samples' ring diameter and PA) come from a prior that was never trained on the source; they can be too
narrow. Split-conformal calibration, per quantity and level ``q``:

* score of a calibration case (truth known): ``s = |truth − median| / h``, with ``h`` the half-width of the raw
  interval on the truth's side (``median − lo`` or ``hi − median``; PA differences taken on the circle), floored at
  ``min_half`` (0.25 µas, 0.5°) so that a collapsed posterior gives a finite score;
* factor ``f``: the ``⌈(n + 1) · 0.68⌉``-th smallest of the ``n`` scores of the 68 % intervals (the split-conformal
  quantile: the inflated 68 % interval holds a new exchangeable case's truth with probability ≥ 0.68); ``inf``
  when ``n`` is too small (n < 2);
* calibrated intervals: ``median ± f · h`` on each side, for the 68 % AND the 95 % interval (one factor scales the
  samples' spread: a conformal 95 % factor needs n ≥ 19 calibration cases, more than a CPU benchmark runs, so the
  95 % coverage of the calibrated intervals is a check of this one-factor model, not a guarantee).

The factors are learned on cases of generator images only (never the independent evaluation models) and stored
in the prior's card (``card["calibration"]``); coverage must be measured on DISJOINT cases (other families /
seeds): :func:`cross_fit_coverage` learns on every split but one and tests on the one left out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["QUANTITIES", "apply", "card_entry", "cross_fit_coverage", "factors", "inside", "score", "write_card"]

QUANTITIES = {"diameter_uas": 0.25, "pa_deg": 0.5}  # name -> the half-width floor (its units)
LEVELS = ("68", "95")


def _diff(truth: float, median: float, angle: bool) -> float:
    d = truth - median
    return (d + 180.0) % 360.0 - 180.0 if angle else d


def score(truth: float, interval: Mapping[str, float], level: str, quantity: str) -> float:
    """The conformity score of one case (module docstring)."""
    angle = quantity == "pa_deg"
    d = _diff(truth, interval["median"], angle)
    side = (interval[f"hi{level}"] - interval["median"]) if d >= 0 else (interval["median"] - interval[f"lo{level}"])
    if angle:
        side = side % 360.0
    return abs(d) / max(side, QUANTITIES[quantity])


def factors(scores: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """``{quantity: f}`` from ``{quantity: [scores of the 68 % intervals]}`` (split-conformal quantile)."""
    out: dict[str, float] = {}
    for quantity, s in scores.items():
        s = np.sort(np.asarray(s, dtype=np.float64))
        k = math.ceil((len(s) + 1) * 0.68)
        out[quantity] = float(s[k - 1]) if 0 < k <= len(s) else math.inf
    return out


def apply(interval: Mapping[str, float], f: float, quantity: str) -> dict[str, float]:
    """The calibrated interval: ``median ± f · h`` per side and level (floored half-widths as in :func:`score`);
    a diameter's lower end no lower than 0 (an inflated asymmetric interval could otherwise go negative)."""
    out = dict(interval)
    m, floor = interval["median"], QUANTITIES[quantity]
    for level in LEVELS:
        lo_side = (m - interval[f"lo{level}"]) % 360.0 if quantity == "pa_deg" else m - interval[f"lo{level}"]
        hi_side = (interval[f"hi{level}"] - m) % 360.0 if quantity == "pa_deg" else interval[f"hi{level}"] - m
        out[f"lo{level}"] = m - f * max(lo_side, floor)
        out[f"hi{level}"] = m + f * max(hi_side, floor)
        if quantity != "pa_deg":
            out[f"lo{level}"] = max(out[f"lo{level}"], 0.0)
    return out


def inside(truth: float, interval: Mapping[str, float], level: str, quantity: str) -> bool:
    """Whether ``truth`` lies in the interval (PA: brought next to the median on the circle first; an interval
    of 360° or more holds every PA)."""
    if quantity == "pa_deg":
        if interval[f"hi{level}"] - interval[f"lo{level}"] >= 360.0:
            return True
        truth = interval["median"] + _diff(truth, interval["median"], True)
    return bool(interval[f"lo{level}"] <= truth <= interval[f"hi{level}"])


def cross_fit_coverage(cases: Sequence[Mapping[str, Any]], group: str = "split") -> dict[str, Any]:
    """Raw and calibrated coverage of ``cases`` (each with ``group``, ``truth {quantity: value}`` and ``raw
    {quantity: interval}``): the factors of every group are learned on the OTHER groups' cases; also the factors
    learned on all cases (what a prior's card stores)."""
    groups = sorted({c[group] for c in cases})

    def scores_of(rows):
        return {q: [score(c["truth"][q], c["raw"][q], "68", q) for c in rows] for q in QUANTITIES}

    raw = {f"{q}_in{lv}": [] for q in QUANTITIES for lv in LEVELS}
    cal = {f"{q}_in{lv}": [] for q in QUANTITIES for lv in LEVELS}
    per_group = {}
    for g in groups:
        train = [c for c in cases if c[group] != g]
        test = [c for c in cases if c[group] == g]
        f = factors(scores_of(train)) if train else None
        per_group[g] = f
        for c in test:
            for q in QUANTITIES:
                for lv in LEVELS:
                    raw[f"{q}_in{lv}"].append(inside(c["truth"][q], c["raw"][q], lv, q))
                    if f is not None:
                        cal[f"{q}_in{lv}"].append(inside(c["truth"][q], apply(c["raw"][q], f[q], q), lv, q))
    return {
        "cases": len(cases),
        "raw": {k: float(np.mean(v)) if v else math.nan for k, v in raw.items()},
        "calibrated_cross_fit": {k: float(np.mean(v)) if v else math.nan for k, v in cal.items()},
        "factors_by_held_out_group": per_group,
        "factors_all": factors(scores_of(cases)) if cases else None,
    }


def pooled_cases(paths: Sequence[str | Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The results files of ``benchmarks/eht_out_of_family.py`` (``results.json``) and their cases pooled:
    ``(runs, cases)``. ``ValueError`` when the files were made with different priors or DAPS settings (cases of
    two priors are not one calibration set)."""
    if not paths:
        raise ValueError("pooled_cases: no results files given")
    runs = [json.loads(Path(q).read_text()) for q in paths]
    for q, r in zip(paths[1:], runs[1:], strict=True):
        if (r.get("prior"), r.get("daps")) != (runs[0].get("prior"), runs[0].get("daps")):
            raise ValueError(f"{q} was made with another prior or DAPS setting than {paths[0]}")
    return runs, [c for r in runs for c in r["cases"]]


def card_entry(conformal: Mapping[str, Any], *, command: str, results: str) -> dict[str, Any]:
    """The card's ``calibration`` entry from a benchmark's ``summary["conformal"]``: the factors learned on all
    its cases, how many, the raw and cross-fitted calibrated coverage (learned on the other family; and, when the
    benchmark gives them, learned on the other groups of exchangeable cases: noise seeds, images, tracks), and
    where they come from."""
    return {
        "factors": dict(conformal["factors_all"]),
        "method": "split-conformal inflation of the kept samples' ring intervals around their median "
        "(pipelines.eht_calibration); one factor per quantity, from the 68 % scores",
        "cases": int(conformal["cases"]),
        "coverage_raw": dict(conformal["raw"]),
        "coverage_calibrated_cross_fit": dict(conformal["calibrated_cross_fit"]),
        "coverage_calibrated_cross_fit_by": dict(conformal.get("calibrated_cross_fit_by", {})),
        "command": command,
        "results": results,
    }


def write_card(prior_dir: Path, entry: Mapping[str, Any]) -> Path:
    """Store ``entry`` as ``card["calibration"]`` in ``prior_dir/prior.json`` (the weights are untouched)."""
    path = Path(prior_dir) / "prior.json"
    info = json.loads(path.read_text())
    info["card"]["calibration"] = dict(entry)
    path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")  # the layout export_prior writes
    return path
