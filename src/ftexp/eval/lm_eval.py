"""lm-evaluation-harness tasks on the model of each row (``evaluator=lm_eval``).

Model-scoped: it scores the model alone, once per row, whatever the run's tasks are. The model is
handed to lm-eval in memory (``HFLM(pretrained=<module>)``), so fine-tuned and LoRA weights are
what it measures; a PEFT model goes in as its underlying transformers model, which keeps the
injected LoRA layers. lm-eval is an optional extra (``pip install 'ftexp[lm-eval]'``).
"""

from __future__ import annotations

import difflib
import logging
import random
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Mapping

import torch

from ftexp.errors import FtexpError
from ftexp.eval.base import EvalContext, Evaluator
from ftexp.models.base import unwrap_adapter

log = logging.getLogger(__name__)


class LmEvalEvaluator(Evaluator):
    """``evaluator=lm_eval``: metrics ``lm_eval/<task>/<metric>`` (standard errors left out)."""

    scope = "model"
    cacheable = False  # its tasks read datasets (include_path, the hub cache) that the row cache cannot see

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        try:
            import lm_eval  # noqa: F401 - fail at construction, before any training
        except ImportError as exc:
            raise FtexpError("evaluator=lm_eval needs lm-evaluation-harness: pip install 'ftexp[lm-eval]'") from exc
        self._warned_untrained = False
        self.task_manager = self._task_manager()  # indexes every task YAML: once, and typos fail before training

    def _task_manager(self) -> Any:
        from lm_eval.tasks import TaskManager

        tasks, include = list(self.cfg.tasks), self.cfg.include_path
        if include:
            # Indexing lm-eval's own ~15,000 task files takes seconds; skip it when the local
            # folder has every task asked for.
            local = TaskManager(include_path=include, include_defaults=False)
            if tasks and set(tasks) <= set(local.all_tasks):
                return local
        manager = TaskManager(include_path=include)
        _check_task_names(tasks, manager.all_tasks, include)
        return manager

    def evaluate(self, model: torch.nn.Module, task: Any, ctx: EvalContext) -> Dict[str, float]:
        if not ctx.pretrained:
            # Benchmarks of a model trained from scratch on a few thousand examples say nothing.
            if not self._warned_untrained:
                log.warning("evaluator=lm_eval: skipped, the model was not pretrained (model=tiny?); "
                            "lm-eval benchmarks need a hub model")
                self._warned_untrained = True
            return {}
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        base = unwrap_adapter(model)
        was_training = model.training
        try:
            # lm-eval seeds Python, NumPy and torch globally: the run's own random streams (data
            # order, dropout of the next stage) must not depend on whether this evaluator is on.
            with _preserved_random_state():
                lm = HFLM(pretrained=base, tokenizer=ctx.tokenizer, batch_size=self.cfg.batch_size)
                # lm-eval's fixed default seeds, not the run's: every job of a sweep gets the same
                # few-shot examples. bootstrap_iters=0: no standard errors (left out anyway).
                results = lm_eval.simple_evaluate(
                    model=lm, tasks=list(self.cfg.tasks), num_fewshot=self.cfg.num_fewshot, limit=self.cfg.limit,
                    task_manager=self.task_manager, bootstrap_iters=0, log_samples=False)
        finally:
            model.train(was_training)  # HFLM puts the model in eval mode
        return flatten_results(results["results"]) if results else {}


def flatten_results(results: Mapping[str, Mapping[str, Any]]) -> Dict[str, float]:
    """``{task: {"acc,none": 0.5, "acc_stderr,none": 0.1, "alias": ...}}`` -> ``{"lm_eval/task/acc": 0.5}``.

    Standard errors and non-numbers are left out; lm-eval's default filter suffix ``,none`` is
    dropped and any other filter becomes a path part (``exact_match,strict-match`` ->
    ``exact_match/strict-match``)."""
    out: Dict[str, float] = {}
    for task, metrics in results.items():
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            metric, _, filter_name = key.partition(",")
            if metric.endswith("_stderr"):
                continue
            metric = "n" if metric == "sample_len" else metric  # examples scored, as ftexp's own `<split>/n`
            name = metric if filter_name in ("", "none") else f"{metric}/{filter_name}"
            out[f"lm_eval/{task}/{name}"] = float(value)
    return out


def _check_task_names(tasks: list, known: list, include_path: Any) -> None:
    """A typo in a task name fails here, with suggestions, instead of deep inside lm-eval."""
    if not tasks:
        raise FtexpError("evaluator.lm_eval.tasks is empty: name at least one lm-eval task (e.g. [arc_easy])")
    known_set = set(known)
    for name in tasks:
        if name not in known_set:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            where = (f", nor one in include_path={include_path}" if include_path
                     else " (for tasks of your own, set evaluator.lm_eval.include_path to their folder)")
            raise FtexpError(f"evaluator.lm_eval.tasks: '{name}' is not a task, group or tag of lm-eval{where}.{hint}")


@contextmanager
def _preserved_random_state() -> Iterator[None]:
    import numpy as np

    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
