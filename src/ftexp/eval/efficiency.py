"""``evaluator=efficiency``: what a model costs to train and to serve, measured on the run's device.

Per task (classification, generation and multiple-choice tasks; corpora have no requests), all
metrics under ``efficiency/``:

- ``params_total``, ``params_trainable``;
- ``train_tokens_per_s``, ``train_effective_tokens_per_s`` (non-pad tokens), ``train_time_s`` and
  ``train_cost``: over every stage trained so far (sum of tokens / sum of training time; validation
  time is not training time), the cost being price per hour x devices x hours;
- for each request kind, ``score`` (classification: every label scored by log-likelihood, as the
  classification evaluator does; other tasks: one forward pass over the prompt) and ``generate``
  (generation tasks: greedy decoding with a KV cache, exactly ``max_new_tokens`` tokens per request
  so that an early end-of-sequence never makes a model look faster):
  ``<kind>_b1_p50_ms`` / ``_p95_ms`` / ``_requests_per_s`` (one prompt per call) and
  ``<kind>_batched_p50_ms`` / ``_p95_ms`` / ``_requests_per_s`` (``batch_size`` prompts per call:
  the batched latency is the time of one whole batch, the latency each of its requests sees), and
  ``cost_per_1k_<kind>_b1`` / ``cost_per_1k_<kind>_batched`` (price of 1,000 requests at that
  throughput);
- ``peak_memory_mb`` (MiB): ``torch.cuda.max_memory_allocated`` over the measurement on CUDA; on a
  CPU the peak resident set size of the whole process since it started (``getrusage``), which
  includes training and data loading.

Every timing is warm-up excluded; p50 is the median over the timed repeats, p95 their 95th
percentile (numpy's linear interpolation); throughput is requests per call / median call time. Costs come
from ``price_per_hour``: the longest key found in the device name; without one, no cost metric is
reported (never a guessed price). No progress display runs here (ftexp.utils.progress): a live bar's
refresh thread would share the CPU with the calls being timed. The device, the memory measure and the settings
are returned by :meth:`EfficiencyEvaluator.finish`, i.e. recorded in results.json under ``evaluators.efficiency``.
"""

from __future__ import annotations

import logging
import statistics
import time
from contextlib import nullcontext
from functools import partial
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from ftexp.data.base import encode_completion, example_prompt
from ftexp.eval.base import EvalContext, Evaluator, model_device
from ftexp.eval.classification import label_logprobs, scoring_attention
from ftexp.models.base import count_parameters
from ftexp.models.decoding import left_pad
from ftexp.utils.devices import lookup as price_for  # longest whole device name wins

log = logging.getLogger(__name__)

KINDS = ("classification", "generation", "multiple_choice")


# ---------------------------------------------------------------------------------- pure helpers


def time_calls(fn: Union[Callable[[], Any], Sequence[Callable[[], Any]]], warmup: int, repeats: int,
               sync: Optional[Callable[[], Any]] = None) -> List[float]:
    """Seconds taken by each timed call. ``fn`` is one callable or a list of them (e.g. one per
    request): ``warmup`` untimed calls first (cycling through the list), then ``repeats`` rounds of
    every callable, each timed on its own. ``sync`` (e.g. ``torch.cuda.synchronize``) runs before
    each clock reading, so that queued device work is counted where it belongs."""
    calls = list(fn) if isinstance(fn, (list, tuple)) else [fn]
    for i in range(warmup):
        calls[i % len(calls)]()
    times: List[float] = []
    for _ in range(repeats):
        for call in calls:
            if sync:
                sync()
            start = time.perf_counter()
            call()
            if sync:
                sync()
            times.append(time.perf_counter() - start)
    return times


def latency_summary(times: Sequence[float], requests_per_call: int) -> Dict[str, float]:
    """p50 (median) and p95 of the call times in ms, and requests per second at the median call
    time. A batched call's latency is the time of the whole batch."""
    p50 = statistics.median(times)
    return {"p50_ms": p50 * 1e3, "p95_ms": float(np.percentile(times, 95)) * 1e3,
            "requests_per_s": requests_per_call / p50 if p50 > 0 else float("inf")}


def cost_per_1k(price_per_hour: float, requests_per_s: float) -> float:
    """Price of 1,000 requests served at ``requests_per_s`` on a device billed per hour."""
    return price_per_hour / 3600.0 * 1000.0 / requests_per_s


def peak_memory_mb(device: torch.device) -> float:
    """MiB: CUDA's max allocated since the last reset on a GPU; the process's peak RSS since it
    started on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def training_summary(stages: Sequence[Mapping[str, Any]], price: Optional[float]) -> Dict[str, float]:
    """Training throughput, time and cost over the stages so far (empty before any training)."""
    seconds = sum(float(s.get("train_time_s", 0.0)) for s in stages)
    if not stages or seconds <= 0:
        return {}
    out = {"train_tokens_per_s": sum(float(s.get("tokens", 0.0)) for s in stages) / seconds,
           "train_effective_tokens_per_s": sum(float(s.get("effective_tokens", 0.0)) for s in stages) / seconds,
           "train_time_s": seconds}
    if price is not None:  # every device of a multi-device stage is paid for
        out["train_cost"] = price * sum(float(s.get("train_time_s", 0.0)) * int(s.get("world_size", 1))
                                        for s in stages) / 3600.0
    return out


# ---------------------------------------------------------------------------------- the evaluator


class EfficiencyEvaluator(Evaluator):
    """``evaluator=efficiency``; see the module docstring for the metrics."""

    cacheable = False  # it times this machine, and reports the stages' training throughput

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.last_info: Dict[str, Any] = {}
        self._warned: set = set()

    def applies_to(self, task: Any) -> bool:
        return task.kind in KINDS

    def _price(self, device_name: str) -> Optional[float]:
        price = price_for(device_name, dict(self.cfg.price_per_hour or {}))
        if price is None and device_name not in self._warned:
            self._warned.add(device_name)
            log.warning("efficiency: no price in evaluator.efficiency.price_per_hour matches device '%s'; "
                        "cost metrics are left out", device_name)
        return price

    def _requests(self, model, task, ctx: EvalContext) -> Dict[str, Callable[[List[List[int]]], Any]]:
        """Request kind -> a function answering a list of encoded prompts."""
        tok, cfg = ctx.tokenizer, self.cfg
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        device = model_device(model)
        if task.kind == "classification":
            labels = [encode_completion(tok, label, task.completion_prefix) for label in task.labels]
            return {"score": lambda prompts: label_logprobs(model, prompts, labels, pad)}

        def score(prompts):
            return model(**left_pad(prompts, pad, device), logits_to_keep=1).logits

        def generate(prompts):
            n = cfg.max_new_tokens
            return model.generate(**left_pad(prompts, pad, device), max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False, use_cache=True, pad_token_id=pad)

        return {"score": score, "generate": generate} if task.kind == "generation" else {"score": score}

    def _prompts(self, task, ctx: EvalContext) -> Dict[str, List[List[int]]]:
        """Encoded prompts per request kind, cut from the left to leave room for what follows."""
        tok, cfg = ctx.tokenizer, self.cfg
        examples = task.splits.get(cfg.split, [])[: cfg.n_requests]
        ids = [example_prompt(tok, ex, task.chat_template, task.completion_prefix) for ex in examples]
        if task.kind == "classification":
            longest = max((len(encode_completion(tok, lab, task.completion_prefix)) for lab in task.labels), default=1)
            return {"score": [p[-max(1, ctx.max_length - longest):] for p in ids]}
        gen_keep = max(1, ctx.max_length - cfg.max_new_tokens)
        return {"score": [p[-ctx.max_length:] for p in ids], "generate": [p[-gen_keep:] for p in ids]}

    def evaluate(self, model: torch.nn.Module, task: Any, ctx: EvalContext) -> Dict[str, float]:
        cfg = self.cfg
        device = model_device(model)
        # The context's name when it describes this device; otherwise the device's own.
        name = ctx.device_name if ctx.device_name.startswith(device.type) else (
            f"cuda:{torch.cuda.get_device_name(device)}" if device.type == "cuda" else device.type)
        price = self._price(name)
        params = count_parameters(model)
        out: Dict[str, float] = {"params_total": float(params["total"]),
                                 "params_trainable": float(params["trainable"])}
        out.update(training_summary(ctx.stages, price))

        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
        prompts = self._prompts(task, ctx)
        was_training = model.training
        model.eval()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        attention = scoring_attention(model) if task.kind == "classification" else nullcontext()
        try:
            with torch.inference_mode(), attention:
                for kind, answer in self._requests(model, task, ctx).items():
                    requests = prompts[kind]
                    if not requests:
                        continue
                    bs = min(cfg.batch_size, len(requests))
                    modes = {"b1": ([partial(answer, [p]) for p in requests], 1),
                             "batched": ([partial(answer, requests[i:i + bs])
                                          for i in range(0, len(requests) - bs + 1, bs)], bs)}  # full batches
                    for mode, (calls, per_call) in modes.items():
                        summary = latency_summary(time_calls(calls, cfg.warmup, cfg.repeats, sync), per_call)
                        out.update({f"{kind}_{mode}_{k}": v for k, v in summary.items()})
                        if price is not None:
                            out[f"cost_per_1k_{kind}_{mode}"] = cost_per_1k(price, summary["requests_per_s"])
        finally:
            model.train(was_training)
        out["peak_memory_mb"] = peak_memory_mb(device)
        self.last_info = {
            "device": name,
            "memory": "cuda_max_allocated" if device.type == "cuda" else "cpu_peak_rss",
            "price_per_hour": price,
            "warmup": cfg.warmup,
            "repeats": cfg.repeats,
            "n_requests": cfg.n_requests,
            "batch_size": cfg.batch_size,
            "max_new_tokens": cfg.max_new_tokens,
            "torch_threads": torch.get_num_threads(),
            "batched_latency": "time of one whole batch",
        }
        return {f"efficiency/{k}": float(v) for k, v in out.items()}

    def finish(self, ctx: EvalContext, run_dir: Any, tracker: Any = None) -> Optional[Dict[str, Any]]:
        return dict(self.last_info) or None
