"""The ``report`` node: what ``python -m ftexp.compare`` shows for a sweep of an experiment.

An experiment file (``conf/experiment/*.yaml``) or a sweep file (``sweeps/*.yaml``) declares it, e.g.

    report:
      plot: learning_curve  # one of PLOTS
      x: data.n_train       # the swept key along the curve's x axis

Every job records it in its composed config (results.json -> ``config.report``, and its W&B run's
config), and the compare command reads it from there. Import-light: no omegaconf, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, List, Optional

# The plots compare can draw (ftexp.compare.plots.TITLES has one title for each).
PLOTS = ("learning_curve", "share_curve", "mitigation", "pareto", "review", "generic")
CURVES = ("learning_curve", "share_curve")  # the plots with a swept key along their x axis


@dataclass
class ReportConfig:
    """What the compare report of this experiment's sweeps shows. A declared plot is drawn when the
    jobs allow it (its x key swept, costs measured, continual-learning metrics present), else one bar
    per cell; the review plot is added to any sweep whose jobs hold imported human ratings."""

    # learning_curve: score vs training-set size (E2); share_curve: score vs synthetic share (E1);
    # mitigation: ACC and forgetting per cell (E3); pareto: score vs cost, latency and size (E5);
    # review: human vs automated verdicts (E4); generic: one bar per cell. None: guessed from the
    # swept keys (data.n_train, data.synthetic.share, mitigation, model).
    plot: Optional[str] = None
    # The swept key along a curve's x axis (learning_curve, share_curve only); None: the swept key that
    # ends in n_train (learning_curve) or share (share_curve).
    x: Optional[str] = None
    metric: Optional[str] = None  # the primary metric; None: test/accuracy (or the first the jobs have); --metric wins
    metrics: List[str] = field(default_factory=list)  # more columns in report.md, after the plot's own


def report_problems(report: Any) -> List[str]:
    """Every problem of a ``report`` node (a config node or a plain dict), each naming its key."""
    out: List[str] = []
    plot, x = report.get("plot"), report.get("x")
    if plot is not None and plot not in PLOTS:
        out.append(f"report.plot={plot!r}: must be one of {', '.join(PLOTS)} (or null: guessed from the swept keys)")
    for key in ("x", "metric"):  # the schema types these; a results.json written elsewhere may not
        if report.get(key) is not None and not isinstance(report.get(key), str):
            out.append(f"report.{key}={report.get(key)!r}: must be a key name (or null)")
    metrics = report.get("metrics") or []
    if isinstance(metrics, str) or not isinstance(metrics, Sequence) or not all(isinstance(m, str) for m in metrics):
        out.append(f"report.metrics={metrics!r}: must be a list of metric names")
    if x is not None and plot is not None and plot not in CURVES:
        out.append(f"report.x={x!r}: sets the x axis of report.plot={' or '.join(CURVES)}, not of {plot!r}; "
                   "drop it, or declare a curve")
    return out
