"""What a sweep's report shows: the plot its experiment or sweep file declares (``report:``, see
ftexp.config.report_schema), else one its swept keys call for; which metrics go beside the primary one,
and each metric's unit and direction. No matplotlib here."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

from ftexp.compare.collect import CompareError, Sweep
from ftexp.compare.stats import Cell
from ftexp.config.report_schema import report_problems

# Sweep folders from before the ``report`` node record no declared plot: their tags choose it, as they did
# then (the findings page is built from such folders, so this stays while they are quoted).
LEGACY_TAG_PLOTS = {"E1": "share_curve", "synthetic_share": "share_curve", "synthetic_data": "share_curve",
                    "synthetic_trap": "share_curve", "E2": "learning_curve", "dataset_size": "learning_curve",
                    "E3": "mitigation", "forgetting": "mitigation", "mitigation": "mitigation",
                    "E4": "review", "human_review": "review", "E5": "pareto", "param_count": "pareto"}
GUESSES = [("learning_curve", ("n_train",)), ("share_curve", ("synthetic.share",)),  # plot, swept key
           ("mitigation", ("mitigation",)), ("pareto", ("model",))]
CURVE_KEYS = {"learning_curve": "n_train", "share_curve": "share"}  # a curve's x key ends so, unless declared
UNFIT = {"learning_curve": "its x key ({x}) is not swept", "share_curve": "its x key ({x}) is not swept",
         "mitigation": "no job has cl/acc (a run of two or more stages)",
         "pareto": "it needs a swept model or recipe, and costs, latencies or sizes that differ between cells"}
KAPPA = "review/sample/agreement/cohen_kappa"
REVIEW = [("review/sample/correctness", "human: correct"),
          ("review/sample/agreement/auto_pass_rate", "automated: pass")]
HUMAN_CI = [("review/sample/correctness_ci95_low", "human: correct, 95 % low"),
            ("review/sample/correctness_ci95_high", "human: correct, 95 % high")]  # Wilson, within a run
RATERS = [("review/raters/krippendorff_alpha", "Krippendorff's α between raters")]
AGREEMENT = [(KAPPA, "Cohen's κ"), ("review/sample/agreement/agreement_rate", "raw agreement"),
             ("review/sample/agreement/auto_pass_human_fail_rate", "auto pass, human fail")]


def declared(sweep: Sweep, key: str) -> Any:
    """``report.<key>`` as the jobs' config declares it (None: not declared, or a folder from before it)."""
    report = sweep.report or {}
    found = report_problems(report)
    if found:  # compose refuses these; a results.json written by hand or by another version may not
        raise CompareError(f"the jobs' config says {found[0]}")
    return report.get(key)


def has(cells: Sequence[Cell], metric: str) -> bool:
    return any(metric in j.metrics for c in cells for j in c.jobs)


def metrics_like(cells: Sequence[Cell], prefix: str, suffix: str = "") -> List[str]:
    return sorted({m for c in cells for j in c.jobs for m in j.metrics if m.startswith(prefix) and m.endswith(suffix)})


def key_ending(sweep: Sweep, *suffixes: str) -> Optional[str]:
    return next((k for k in sweep.keys for s in suffixes if k == s or k.endswith("." + s)), None)


def slices(cells: Sequence[Cell], metric: str) -> List[str]:
    """``test/slice/<name>/accuracy`` beside ``test/accuracy``."""
    split, _, leaf = metric.partition("/")
    return metrics_like(cells, f"{split}/slice/", f"/{leaf}") if leaf and "/" not in leaf else []


def higher_better(metric: str) -> bool:
    """Whether a larger value is the better one: not for losses, times, rates, costs, forgetting, or a
    model's size (a cost beside its score)."""
    leaf = metric.rsplit("/", 1)[-1]
    return not (leaf in ("loss", "perplexity", "bwt_loss") or leaf.endswith(("_ms", "_rate", "_s", "_mb"))
                or "cost" in leaf or leaf.startswith("params") or "forgetting" in metric) or "agreement_rate" in leaf


def cost_axes(cells: Sequence[Cell]) -> List[str]:
    """x axes for the Pareto plot: cost per 1k requests, latency, parameters (those measured and
    differing between cells)."""
    first = lambda names: next((m for m in names if has(cells, m)), None)  # noqa: E731
    cost = first([f"efficiency/cost_per_1k_{k}_{b}" for k in ("score", "generate") for b in ("batched", "b1")])
    latency = first([f"efficiency/{k}_b1_p50_ms" for k in ("score", "generate")])
    params = first(["efficiency/params_total", "model/parameters_total"])
    return [m for m in (cost, latency, params) if m and len({c.summary(m).mean for c in cells if c.n}) > 1]


def x_key(sweep: Sweep, kind: str) -> Optional[str]:
    """The swept key along a curve's x axis: ``report.x`` when declared, else the one ending in n_train
    (learning_curve) or share (share_curve); None when that key is not swept."""
    x = declared(sweep, "x")
    if x is not None:
        return x if x in sweep.keys else None
    return key_ending(sweep, CURVE_KEYS[kind])


def fitting(sweep: Sweep, cells: Sequence[Cell]) -> Dict[str, Callable[[], bool]]:
    """Per plot, whether these jobs allow it."""
    return {"learning_curve": lambda: x_key(sweep, "learning_curve") is not None,
            "share_curve": lambda: x_key(sweep, "share_curve") is not None,
            "mitigation": lambda: has(cells, "cl/acc"),
            "pareto": lambda: bool(cost_axes(cells)) and any(k in ("model", "recipe") or k.startswith("model.")
                                                             for k in sweep.keys),
            "review": lambda: has(cells, KAPPA) or has(cells, REVIEW[0][0]),
            "generic": lambda: True}


def wanted(sweep: Sweep) -> List[str]:
    """The plots the sweep asks for, in the order they are tried: the declared one; for a folder from
    before ``report`` existed, the ones its tags called for."""
    if sweep.report is None:
        return list(dict.fromkeys(LEGACY_TAG_PLOTS[t] for t in sweep.tags if t in LEGACY_TAG_PLOTS))
    plot = declared(sweep, "plot")
    return [plot] if plot else []


def choose(sweep: Sweep, cells: Sequence[Cell]) -> List[str]:
    """The sweep's plot (the one it asks for when the jobs allow it, else one its swept keys call for),
    plus the review plot when ratings exist."""
    fits = fitting(sweep, cells)
    kind = next((k for k in wanted(sweep) if fits[k]()), None)
    if kind is None:
        kind = next((k for k, names in GUESSES if key_ending(sweep, *names) and fits[k]()), "generic")
    return [kind] + (["review"] if kind != "review" and fits["review"]() else [])


def plot_notes(sweep: Sweep, tried: Sequence[str]) -> List[str]:
    """report.md's lines for a plot the sweep asks for that these jobs do not allow, with why (``tried``: the
    plots :func:`choose` gave, drawn or not)."""
    plot = declared(sweep, "plot")
    review = "review" in wanted(sweep)
    lines = []
    if sweep.completed and plot and plot not in ("review", *tried):
        x = declared(sweep, "x") or f"a key ending in {CURVE_KEYS.get(plot, '')}"
        lines.append(f"- {plot}: declared by report.plot, but not drawn: {UNFIT[plot].format(x=x)}.")
    if review and "review" not in tried:
        lines.append("- review: no human ratings in these results yet; import each job's with "
                     "`python -m ftexp.review import <ratings file> <job folder>`, then compare again.")
    return lines


# ------------------------------------------------------------------------------------ drawing


def axis_label(metric: str, sep: str = " ") -> str:
    leaf = metric.rsplit("/", 1)[-1]
    units = [(lambda: "cost_per_1k" in leaf, "price_per_hour currency per 1,000 requests"),
             (lambda: leaf.endswith("_ms"), "ms"), (lambda: leaf.endswith("_mb"), "MiB"),
             (lambda: "param" in leaf, "count"), (lambda: "tokens_per_s" in leaf, "tokens/s"),
             (lambda: leaf.endswith(("_s", "time")), "s"), (lambda: leaf == "loss", "nats/token"),
             (lambda: leaf == "bleu", "0–100"), (lambda: leaf == "kappa" or "bwt" in leaf, "−1…1"),
             (lambda: leaf in ("perplexity", "n", "tokens") or leaf.startswith("n_"), "")]
    unit = next((u for test, u in units if test()), "0–1")
    return f"{metric}{sep}({unit})" if unit else metric
