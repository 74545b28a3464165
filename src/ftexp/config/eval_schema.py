"""Typed schemas of the ``evaluator`` group (import-light: no torch), with their value rules (see
:mod:`ftexp.config.validate`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from omegaconf import MISSING, DictConfig

from ftexp.config.validate import Problems


@dataclass
class EvaluatorConfig:
    """An evaluator scores the model on the run's tasks after row 0 and after every stage."""

    _target_: str = MISSING
    batch_size: int = 64
    rows: str = "all"  # all: row 0 (before training) and after every stage | last: after the last stage only

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        if node.rows not in ("all", "last"):  # any other word would quietly mean "last"
            yield "rows", node.rows, "must be 'all' (row 0 and after every stage) or 'last' (after the last stage)"
        if not node.batch_size >= 1:
            yield "batch_size", node.batch_size, "must be >= 1"


@dataclass
class ClassificationEvalConfig(EvaluatorConfig):
    """Accuracy and macro-F1 on the test split; the prediction is the label whose text has the
    highest log-likelihood given the prompt (so it is always one of the labels)."""

    _target_: str = "ftexp.eval.classification.ClassificationEvaluator"
    split: str = "test"  # test | val
    label_chunk: int = 0  # at most this many labels per forward pass (0 = as many as max_logits allows)
    max_logits: int = 134217728  # logits elements per forward pass (2**27: 512 MB in fp32)


@dataclass
class PerplexityEvalConfig(EvaluatorConfig):
    """Per-token cross-entropy and perplexity of the completions of the test split (all of a text
    corpus's tokens): the general-knowledge row of the forgetting matrix. Applies to tasks without
    labels (text corpora, question answering)."""

    _target_: str = "ftexp.eval.perplexity.PerplexityEvaluator"
    split: str = "test"
    batch_size: int = 16


@dataclass
class GenerationEvalConfig(EvaluatorConfig):
    """Answers decoded with a KV cache (greedy, or sampled with a seed) for question-answering tasks,
    scored against the references: ROUGE-1/2/L (torchmetrics), BLEU (sacrebleu), exact match,
    mean length; per slice too. Red-team prompts of the task are answered as well, for review."""

    _target_: str = "ftexp.eval.generation.GenerationEvaluator"
    split: str = "test"
    batch_size: int = 16
    n: Optional[int] = None  # answer a fixed subset of this many examples (seed 0); None = the whole split
    max_new_tokens: int = 64
    do_sample: bool = False  # false: greedy decoding
    temperature: float = 1.0  # with do_sample
    top_p: float = 1.0  # with do_sample
    pass_threshold: float = 0.3  # automated verdict for review: correct when ROUGE-L F1 >= this (or exact match)


@dataclass
class MultipleChoiceEvalConfig(EvaluatorConfig):
    """Multiple-choice knowledge QA (``data=truthfulqa_mc``) by log-likelihood of each choice, as
    lm-evaluation-harness scores it: MC1 (the single correct choice has the highest log-likelihood)
    and MC2 (probability mass on the true choices). Choices are shuffled per question from
    ``shuffle_seed``, since the source puts the correct one first."""

    _target_: str = "ftexp.eval.multiple_choice.MultipleChoiceEvaluator"
    split: str = "test"
    shuffle_seed: int = 0
    batch_size: int = 1  # unused: one question (all its choices) per forward pass


@dataclass
class LmEvalConfig(EvaluatorConfig):
    """lm-evaluation-harness tasks on a hub model (needs ``pip install 'ftexp[lm-eval]'`` and the
    tasks' datasets, i.e. network or a local HF cache); their numbers land in the same results."""

    _target_: str = "ftexp.eval.lm_eval.LmEvalEvaluator"
    tasks: List[str] = field(default_factory=lambda: ["arc_easy", "hellaswag"])
    num_fewshot: Optional[int] = None  # None = each task's default
    limit: Optional[float] = None  # examples per task (>= 1) or a fraction (< 1); None = all
    batch_size: int = 8
    include_path: Optional[str] = None  # folder of extra task YAMLs (e.g. tasks over local files)


@dataclass
class EfficiencyEvalConfig(EvaluatorConfig):
    """Parameters, training throughput and cost, inference latency (p50/p95 over repeats, warm-up
    excluded) at batch 1 and batched, throughput, peak memory and cost per 1,000 requests."""

    _target_: str = "ftexp.eval.efficiency.EfficiencyEvaluator"
    rows: str = "last"
    split: str = "test"
    n_requests: int = 16  # test prompts timed (the first N of the split)
    batch_size: int = 16  # the batched measurement's batch size
    warmup: int = 2  # untimed calls before the timed repeats
    repeats: int = 5  # timed repetitions; medians and p95 are over these
    max_new_tokens: int = 32  # tokens generated per request in the generation measurement
    # Hourly price of one device by kind, matched against the device name (longest match first;
    # "cpu" for CPU runs). Example on-demand prices: set your own.
    price_per_hour: Dict[str, float] = field(
        default_factory=lambda: {"cpu": 0.10, "A100": 2.0, "H100": 3.0, "H200": 3.8, "L4": 0.8})


@dataclass
class HumanReviewConfig(EvaluatorConfig):
    """After the last row: a seeded sample of model outputs, stratified by task and automated
    verdict, plus every red-team output, exported for people to rate (CSV, JSONL, Label Studio).
    ``python -m ftexp.review import <ratings> <run dir>`` reads the ratings back."""

    _target_: str = "ftexp.review.export.HumanReview"
    rows: str = "last"
    n: int = 50  # sampled outputs per task, besides every red-team output
    seed: int = 0
    tasks: Optional[List[str]] = None  # tasks whose outputs are exported; None = every task with outputs
    folder: str = "review"  # under the run folder
