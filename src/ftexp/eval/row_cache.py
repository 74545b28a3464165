"""Evaluations shared between jobs: the same weights scored on the same data give the same row.

Every job of a sweep scores the untouched model first (row 0), and arms that share a stage (E3's
none / EWC / replay after stage 1) score the same weights again. On a CPU a row of a pretrained model
takes minutes, so an evaluator's metrics and outputs are cached under
``<cache_dir>/rows/<content hash>``, keyed by everything they depend on: every weight of the model
(frozen ones included), the task's examples, labels and slices, the evaluator's settings, the
tokenizer, the prompt length and the run's seed (sampled answers draw from it), and the library
versions. Evaluators that measure the machine rather than the model (``cacheable = False``: latency,
cost) always run.

Evaluation leaves the run's random streams as it found them, cached or not, so that whether a row
came from the cache never changes how the next stage trains.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch

from ftexp.eval.base import EvalContext, Evaluator, Output
from ftexp.utils.cache import file_lock, read_entry, update_with_tensors
from ftexp.utils.io import publish_dir

log = logging.getLogger(__name__)

VERSION = "row-v1"


@contextlib.contextmanager
def random_state_kept() -> Iterator[None]:
    """Run the block and put torch's, Python's and NumPy's random states back as they were."""
    from ftexp.training.stage_cache import rng_state, set_rng_state

    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


def weights_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    update_with_tensors(h, model.state_dict())
    return h.hexdigest()


def task_identity(task: Any, split: str) -> Dict[str, Any]:
    """What scoring ``split`` of a task depends on besides the model: its examples, the label set, the
    slices and the red team (not the training split: jobs that train on different subsets share row 0)."""
    h = hashlib.sha256()
    for ex in task.splits.get(split, []):
        item = [ex.prompt, ex.completion, ex.label, ex.meta]
        if ex.messages is not None:  # a conversation: its roles, and which turns the loss (perplexity) is on
            item += [ex.messages, ex.train_all_turns]
        h.update(json.dumps(item, sort_keys=True, default=str).encode())
    for ex in task.red_team:
        h.update(json.dumps(["red_team", ex.prompt], default=str).encode())
    return {"name": task.name, "kind": task.kind, "examples": h.hexdigest(), "labels": list(getattr(task, "labels", [])),
            "slices": task.slices, "red_team_slices": list(task.red_team_slices), "prefix": task.completion_prefix,
            "chat": task.chat_template}


def plain(cfg: Any) -> Any:
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    try:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True)
    except ValueError:
        return str(cfg)


class RowCache:
    """Metrics and outputs of (weights, task, evaluator) triples, shared through ``cache_dir``."""

    def __init__(self, cache_dir: Optional[Path], tokenizer: Any = None) -> None:
        self.root = Path(cache_dir) / "rows" if cache_dir is not None else None
        self._tokenizer = _tokenizer_identity(tokenizer) if tokenizer is not None and self.root else None
        self._weights: Optional[Tuple[int, str]] = None  # (row, hash): one hash of the weights per row
        self.hits = 0

    def evaluate(self, evaluator: Evaluator, model: torch.nn.Module, task: Any, ctx: EvalContext) -> Dict[str, float]:
        """``evaluator.evaluate(model, task, ctx)``, from the cache where these inputs were scored before."""
        with random_state_kept():
            if self.root is None or not getattr(evaluator, "cacheable", True):
                return evaluator.evaluate(model, task, ctx)
            key = self._key(evaluator, model, task, ctx)
            folder = self.root / key
            with file_lock(self.root / f"{key}.lock"):  # parallel jobs: one scores, the others wait and reuse
                found = read_entry(folder, lambda: _read(folder))
                if found is not None:
                    metrics, outputs = found
                    ctx.outputs.setdefault(_task_name(task), []).extend(outputs)
                    self.hits += 1
                    log.info("row %d: %s on %s reused from %s", ctx.row, evaluator.name, _task_name(task), folder)
                    return metrics
                before = len(ctx.outputs.get(_task_name(task), []))
                metrics = evaluator.evaluate(model, task, ctx)
                _write(folder, metrics, ctx.outputs.get(_task_name(task), [])[before:])
                return metrics

    def _key(self, evaluator: Evaluator, model: torch.nn.Module, task: Any, ctx: EvalContext) -> str:
        import peft
        import transformers

        if self._weights is None or self._weights[0] != ctx.row:
            self._weights = (ctx.row, weights_hash(model))
        identity = {
            "version": VERSION, "libs": [torch.__version__, transformers.__version__, peft.__version__],
            "weights": self._weights[1], "model": type(model).__name__, "tokenizer": self._tokenizer,
            "evaluator": [type(evaluator).__name__, plain(evaluator.cfg)],
            "task": task_identity(task, getattr(evaluator.cfg, "split", "test")) if task is not None else None,
            "max_length": ctx.max_length, "pretrained": ctx.pretrained,
            # sampled answers draw from the run's seed; greedy scoring does not, and is shared across seeds
            "seed": ctx.seed if evaluator.uses_seed else None,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _task_name(task: Any) -> str:
    return task.name if task is not None else ""


def _tokenizer_identity(tokenizer: Any) -> str:
    h = hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(str(getattr(tokenizer, "chat_template", "")).encode())
    h.update(json.dumps([tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id]).encode())
    return h.hexdigest()[:24]


def _read(folder: Path) -> Tuple[Dict[str, float], List[Output]]:
    saved = json.loads((folder / "row.json").read_text(encoding="utf-8"))
    return saved["metrics"], [Output(**o) for o in saved["outputs"]]


def _write(folder: Path, metrics: Dict[str, float], outputs: List[Output]) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    (tmp / "row.json").write_text(json.dumps({"metrics": metrics, "outputs": [dataclasses.asdict(o) for o in outputs]},
                                             default=str), encoding="utf-8")
    publish_dir(tmp, folder)
