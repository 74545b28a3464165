"""The ``report`` node: what ``python -m ftexp.compare`` shows for a sweep of an experiment.

An experiment file (``conf/experiment/*.yaml``) or a sweep file (``sweeps/*.yaml``) declares it, e.g.

    report:
      plot: learning_curve  # one of PLOTS
      x: data.n_train       # the swept key along the curve's x axis

Every job records it in its composed config (results.json -> ``config.report``, and its W&B run's
config), and the compare command reads it from there. ``ReportConfig.problems`` holds its value rules,
for the pre-flight and for compare (which reads them from files). Import-light: no omegaconf, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Iterator, List, Optional, Tuple

# The plots compare can draw (ftexp.compare.plots.TITLES has one title for each).
PLOTS = ("learning_curve", "share_curve", "mitigation", "pareto", "review", "generic")
CURVES = ("learning_curve", "share_curve")  # the plots with a swept key along their x axis


@dataclass
class ReportConfig:
    """What the compare report of this experiment's sweeps shows. A declared plot is drawn when the
    jobs allow it (its x key swept, costs measured, continual-learning metrics present), else the one
    the swept keys call for (report.md says why); the review plot is added to any sweep whose jobs hold
    imported human ratings."""

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

    @classmethod
    def problems(cls, node: Any) -> Iterator[Tuple[str, Any, str]]:
        """``(key, value, rule)`` for each problem of one report node (a config node or a plain dict)."""
        plot, x, metrics = node.get("plot"), node.get("x"), node.get("metrics") or []
        if plot is not None and plot not in PLOTS:
            yield "plot", plot, f"must be one of {', '.join(PLOTS)} (or null: guessed from the swept keys)"
        for key in ("x", "metric"):  # the schema types these; a results.json written elsewhere may not
            if node.get(key) is not None and not isinstance(node.get(key), str):
                yield key, node.get(key), "must be a key name (or null)"
        listed = isinstance(metrics, Sequence) and not isinstance(metrics, str)
        if not (listed and all(isinstance(m, str) for m in metrics)):
            yield "metrics", metrics, "must be a list of metric names"
        if x is not None and plot in PLOTS and plot not in CURVES:
            yield "x", x, (f"sets the x axis of report.plot={' or '.join(CURVES)}, not of {plot!r}; drop it, or "
                           "declare a curve")


def report_problems(report: Any) -> List[str]:
    """Every problem of a ``report`` node (a config node or a plain dict), each naming its key and value."""
    return [f"report.{key}={value!r}: {rule}" for key, value, rule in ReportConfig.problems(report)]
