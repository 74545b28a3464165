"""What a sweep's report shows: which plot its tags (else its swept keys) call for, which metrics
go beside the primary one, and each metric's unit and direction. No matplotlib here."""

from __future__ import annotations

from typing import List, Optional, Sequence

from ftexp.compare.collect import Sweep
from ftexp.compare.stats import Cell

TAG_KINDS = {"E1": "share_curve", "synthetic_share": "share_curve", "synthetic_data": "share_curve",
             "synthetic_trap": "share_curve", "E2": "learning_curve", "dataset_size": "learning_curve",
             "E3": "mitigation", "forgetting": "mitigation", "mitigation": "mitigation",
             "E4": "review", "human_review": "review", "E5": "pareto", "param_count": "pareto"}
KAPPA = "review/sample/agreement/cohen_kappa"
REVIEW = [("review/sample/correctness", "human: correct"),
          ("review/sample/agreement/auto_pass_rate", "automated: pass")]
AGREEMENT = [(KAPPA, "Cohen's κ"), ("review/sample/agreement/agreement_rate", "raw agreement"),
             ("review/sample/agreement/auto_pass_human_fail_rate", "auto pass, human fail")]


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
    leaf = metric.rsplit("/", 1)[-1]
    return not (leaf in ("loss", "perplexity", "bwt_loss") or leaf.endswith(("_ms", "_rate", "_s", "_mb"))
                or "cost" in leaf or "forgetting" in metric) or "agreement_rate" in leaf


def cost_axes(cells: Sequence[Cell]) -> List[str]:
    """x axes for the Pareto plot: cost per 1k requests, latency, parameters (those measured and
    differing between cells)."""
    first = lambda names: next((m for m in names if has(cells, m)), None)  # noqa: E731
    cost = first([f"efficiency/cost_per_1k_{k}_{b}" for k in ("score", "generate") for b in ("batched", "b1")])
    latency = first([f"efficiency/{k}_b1_p50_ms" for k in ("score", "generate")])
    params = first(["efficiency/params_total", "model/parameters_total"])
    return [m for m in (cost, latency, params) if m and len({c.summary(m).mean for c in cells if c.n}) > 1]


def choose(sweep: Sweep, cells: Sequence[Cell]) -> List[str]:
    """The sweep's plot (by its tags, else its swept keys), plus the review plot when ratings exist."""
    fits = {"learning_curve": lambda: key_ending(sweep, "n_train"),
            "share_curve": lambda: key_ending(sweep, "share"),
            "mitigation": lambda: has(cells, "cl/acc"),
            "pareto": lambda: cost_axes(cells) and any(k in ("model", "recipe") or k.startswith("model.")
                                                       for k in sweep.keys),
            "review": lambda: has(cells, KAPPA) or has(cells, REVIEW[0][0])}
    kind = next((TAG_KINDS[t] for t in sweep.tags if t in TAG_KINDS and fits[TAG_KINDS[t]]()), None)
    if kind is None:
        by_key = [("learning_curve", ("n_train",)), ("share_curve", ("synthetic.share",)),
                  ("mitigation", ("mitigation",)), ("pareto", ("model",))]
        kind = next((k for k, names in by_key if key_ending(sweep, *names) and fits[k]()), "generic")
    return [kind] + (["review"] if kind != "review" and fits["review"]() else [])


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
