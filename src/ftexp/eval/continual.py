"""Continual-learning metrics from the score matrix R[k][j] (score on task j after stage k; row 0 is
the model before any training). Pure functions of numbers: they never change their input.

Definitions (as in DESIGN.md; T = the last stage, s_j = the stage that first trains task j):
  ACC        = mean_j R[T][j] over trained tasks                          (GEM, Lopez-Paz & Ranzato 2017)
  BWT        = mean_{j: s_j < T} (R[T][j] - R[s_j][j])                     (GEM)
  FWT        = mean_{j: s_j > 1} (R[s_j - 1][j] - R[0][j])                 (GEM, with row 0 as the baseline b_j)
  forgetting f_j = max_{l < T} R[l][j] - R[T][j], for s_j < T              (Chaudhry et al. 2018)
  retention  rho_j = R[T][j] / R[s_j][j] for trained tasks, R[T][g] / R[0][g] for tasks never trained
For a score where lower is better (cross-entropy), the differences are negated and the ratio
inverted, so that for every score "positive BWT" and "retention > 1" mean the same thing.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

Matrix = Sequence[Sequence[Optional[float]]]

DEFINITIONS = {
    "acc": "mean over trained tasks of R[T][j] (GEM)",
    "bwt": "mean over tasks trained before the last stage of R[T][j] - R[s_j][j] (GEM)",
    "fwt": "mean over tasks first trained after stage 1 of R[s_j-1][j] - R[0][j] (GEM, row 0 as baseline)",
    "forgetting": "max over rows l < T of R[l][j] - R[T][j] (Chaudhry et al. 2018)",
    "retention": "R[T][j] / R[s_j][j] for trained tasks; R[T][g] / R[0][g] for tasks never trained",
}


def _mean(values: List[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def continual_metrics(R: Matrix, tasks: Sequence[str], first_trained: Dict[str, int],
                      higher_is_better: Dict[str, bool]) -> Dict[str, object]:
    """ACC, BWT, FWT, forgetting and retention. ``R[k][j]`` is task ``tasks[j]`` after stage k;
    ``first_trained[task]`` is the 1-based stage that first trains it (absent: never trained)."""
    T = len(R) - 1
    if T < 1:
        return {}
    sign = {t: 1.0 if higher_is_better.get(t, True) else -1.0 for t in tasks}
    col = {t: j for j, t in enumerate(tasks)}

    def r(k: int, t: str) -> Optional[float]:
        return R[k][col[t]]

    trained = [t for t in tasks if t in first_trained and r(T, t) is not None]
    acc = _mean([r(T, t) for t in trained])
    bwt = _mean([sign[t] * (r(T, t) - r(first_trained[t], t)) for t in trained if first_trained[t] < T])
    fwt = _mean([sign[t] * (r(first_trained[t] - 1, t) - r(0, t)) for t in trained
                 if first_trained[t] > 1 and r(0, t) is not None])
    forgetting = {t: max(sign[t] * r(l, t) for l in range(T) if r(l, t) is not None) - sign[t] * r(T, t)
                  for t in trained if first_trained[t] < T}
    retention = {}
    for t in tasks:
        ref = r(first_trained[t], t) if t in first_trained else r(0, t)
        last = r(T, t)
        if ref and last is not None:
            retention[t] = last / ref if sign[t] > 0 else ref / last
    return {
        "acc": acc,
        "bwt": bwt,
        "fwt": fwt,
        "forgetting": forgetting,
        "mean_forgetting": _mean(list(forgetting.values())),
        "retention": retention,
        "definitions": DEFINITIONS,
    }


def score_matrix(rows: Sequence[Dict], tasks: Sequence[str], keys: Dict[str, str]) -> List[List[Optional[float]]]:
    """R[k][j] from ``results.json`` rows: ``rows[k]["metrics"][task][keys[task]]`` (None where absent)."""
    return [[row["metrics"].get(t, {}).get(keys[t]) for t in tasks] for row in rows]
