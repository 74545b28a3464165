"""Several raters: agreement between people, the outputs they disagree on, and the one human verdict per
output that is compared with the metrics.

Agreement on correctness is Krippendorff's alpha for nominal data over the outputs that at least two
people rated (an output one person rated cannot be compared and drops out; raters need not rate the
same outputs). With ``n_cu`` the number of raters giving output ``u`` the value ``c``, ``m_u`` its number
of ratings, ``N_c = sum_u n_cu`` and ``n = sum_c N_c``:

    alpha = 1 - (n - 1) * D / (n^2 - sum_c N_c^2),  D = sum_u (m_u^2 - sum_c n_cu^2) / (m_u - 1)

(observed over expected disagreement, Krippendorff 2011, "Computing Krippendorff's alpha-reliability").
Its 95 % interval is a percentile bootstrap over outputs (the units), resamples where everyone gave one
value (alpha undefined) left out, with a fixed seed as for Cohen's kappa.

The human verdict per output: correctness by majority of its raters, a tie left out of the
human-vs-metrics statistics (listed for adjudication); helpfulness and tone the mean over its raters.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ftexp.review.schema import NOTES, RATINGS, SCALES
from ftexp.review.stats import BOOTSTRAP_SEED, RESAMPLES

HUMAN_VERDICT = ("correctness: majority of the raters of each output (ties left out until adjudicated); "
                 "helpfulness, tone: mean over its raters")
ONE_RATER = "one rater: agreement between people needs at least two raters' files"


def rater_name(path: Path) -> str:
    """``ratings-ann.jsonl`` -> ``ann`` (the serve's files), else the file's stem."""
    m = re.match(r"^ratings-(.+)$", Path(path).stem)
    return m.group(1) if m else Path(path).stem


def counts(by_rater: Dict[str, Dict[str, Dict[str, Any]]], ids: Sequence[str]) -> np.ndarray:
    """Units x categories: how many raters gave each correctness value, for outputs rated at least twice."""
    lo, hi = SCALES["correctness"]
    rows = []
    for rid in ids:
        values = [r[rid]["correctness"] for r in by_rater.values() if rid in r]
        if len(values) >= 2:
            rows.append([values.count(c) for c in range(lo, hi + 1)])
    return np.asarray(rows, dtype=float).reshape(-1, hi - lo + 1)


def alpha_of(units: np.ndarray) -> Optional[float]:
    """Krippendorff's alpha (nominal) of a units x categories count matrix; None when undefined."""
    if units.shape[0] == 0:
        return None
    m = units.sum(axis=1)
    d = ((m ** 2 - (units ** 2).sum(axis=1)) / (m - 1)).sum()
    totals = units.sum(axis=0)
    n = totals.sum()
    expected = n ** 2 - (totals ** 2).sum()
    return None if expected == 0 else float(1 - (n - 1) * d / expected)


def alpha_interval(units: np.ndarray, level: float = 0.95) -> Optional[List[float]]:
    if alpha_of(units) is None:
        return None
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    draws = [alpha_of(units[rng.integers(0, len(units), len(units))]) for _ in range(RESAMPLES)]
    alphas = [a for a in draws if a is not None]
    if len(alphas) < RESAMPLES // 2:  # most resamples undefined: too few outputs to say
        return None
    low, high = np.percentile(alphas, [50 * (1 - level), 50 * (1 + level)])
    return [float(low), float(high)]


def alpha_undefined(by_rater: Dict[str, Any], units: np.ndarray) -> Optional[str]:
    if len(by_rater) < 2:
        return ONE_RATER
    if units.shape[0] == 0:
        return "no output was rated by two raters or more"
    if alpha_of(units) is None:
        return f"every rating of the {units.shape[0]} outputs rated twice or more is the same value"
    return None


def disagreements(by_rater: Dict[str, Dict[str, Dict[str, Any]]], ids: Sequence[str]) -> List[Dict[str, Any]]:
    """The outputs whose raters gave different correctness, in export order, with each rater's value."""
    out = []
    for rid in ids:
        given = {name: r[rid]["correctness"] for name, r in by_rater.items() if rid in r}
        if len(set(given.values())) > 1:
            out.append({"id": rid, "correctness": given})
    return out


def combine(by_rater: Dict[str, Dict[str, Dict[str, Any]]], ids: Sequence[str]) -> Tuple[Dict[str, Any], List[str]]:
    """The human verdict per output (see the module's notes), and the ids whose correctness is a tie."""
    combined: Dict[str, Dict[str, Any]] = {}
    ties = []
    for rid in ids:
        given = [r[rid] for r in by_rater.values() if rid in r]
        if not given:
            continue
        yes = sum(g["correctness"] for g in given)
        if 2 * yes == len(given):
            ties.append(rid)
            continue
        notes = [f"{name}: {r[rid][NOTES]}" for name, r in by_rater.items() if rid in r and r[rid][NOTES]]
        combined[rid] = {"correctness": int(2 * yes > len(given)),
                         **{c: sum(g[c] for g in given) / len(given) for c in RATINGS if c != "correctness"},
                         NOTES: "; ".join(notes) or None}
    return combined, ties


def between_raters(by_rater: Dict[str, Dict[str, Dict[str, Any]]], ids: Sequence[str]) -> Dict[str, Any]:
    """What ``results.json`` records under ``review.raters``."""
    units = counts(by_rater, ids)
    several = len(by_rater) >= 2
    _, ties = combine(by_rater, ids)
    return {
        "n_raters": len(by_rater), "names": sorted(by_rater),
        "n_rated_by": {name: len(r) for name, r in sorted(by_rater.items())},
        "n_units": int(units.shape[0]),
        "krippendorff_alpha": alpha_of(units) if several else None,
        "krippendorff_alpha_ci95": alpha_interval(units) if several else None,
        "krippendorff_alpha_undefined": alpha_undefined(by_rater, units),
        "disagreements": disagreements(by_rater, ids),
        "ties": ties,
        "human_verdict": HUMAN_VERDICT if several else "the one rater's ratings",
    }
