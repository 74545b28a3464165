"""Adding synthetic examples to a task: how many, per label, from whichever writer, filtered how.

Imports data and the writer's base; nothing imports it but the orchestrator.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Callable, Dict, List, Set

from omegaconf import DictConfig, OmegaConf

from ftexp.data.base import DataError, Example, Task
from ftexp.data.checks import normalise, text_keys
from ftexp.data.mixture import apportion, synthetic_count
from ftexp.data.pipeline import format_prompt
from ftexp.synthesis.pool import Pool
from ftexp.synthesis.prompts import clean
from ftexp.synthesis.writer import Requests, SynthesisInputs, SyntheticWriter
from ftexp.utils.build import build

log = logging.getLogger(__name__)


def add_synthetic(task: Task, cfg: Any, run: SynthesisInputs) -> None:
    """Add the synthetic examples that ``cfg`` (``data.synthetic``) asks for to ``task``'s training
    split, written by the writer it names, and record what was requested, generated and dropped in
    ``task.report["synthetic"]``."""
    real = task.splits["train"]
    count = synthetic_count(len(real), cfg.share, cfg.n)
    if count == 0:
        return
    if not hasattr(task, "labels"):
        raise DataError(f"data.synthetic: synthetic data is made per label, for classification tasks; "
                        f"'{task.name}' has no labels")
    seen = text_keys(ex for split in task.splits.values() for ex in split)  # real train, val and test
    writer: SyntheticWriter = build(writer_config(cfg), task, run)
    quotas = apportion(count, {label: len(texts) for label, texts in writer.by_label.items()})
    pool = writer.pool()
    stats = {"requested": count, "generated": 0, "dropped_empty": 0, "dropped_duplicate": 0,
             "cache": str(pool.path) if pool.path else None}
    with pool:
        chosen = fill(quotas, pool, writer.produce, seen, stats, cfg)
    made = synthetic_examples(task, chosen, writer.source)
    task.splits["train"] = real + made
    stats.update(kept=len(made), method=cfg.method, source=writer.source, share=len(made) / len(task.splits["train"]))
    task.report["synthetic"] = stats
    log.info("synthetic: %d examples added (%.1f%% of train); %d newly generated, %d empty and %d duplicates dropped",
             len(made), 100 * stats["share"], stats["generated"], stats["dropped_empty"], stats["dropped_duplicate"])


def writer_config(cfg: Any) -> Any:
    """The typed ``data.synthetic`` with its writer's ``_target_`` filled in (null: the one ``method`` names)."""
    typed = OmegaConf.to_object(cfg) if isinstance(cfg, DictConfig) else cfg
    return dataclasses.replace(typed, _target_=typed.writer_target())


def synthetic_examples(task: Task, texts: Dict[str, List[str]], source: str) -> List[Example]:
    """Examples of ``task`` from texts per label, rendered by its prompt template (labels in order)."""
    made = []
    for label in sorted(texts):
        for t in texts[label]:
            prompt = format_prompt(task.cfg.prompt_template, {"text": t, "label": label}, "a synthetic example")
            made.append(Example(prompt=prompt, completion=label, label=label, origin="synthetic", source=source,
                                text=t))
    return made


def fill(quotas: Dict[str, int], pool: Pool, produce: Callable[[Requests], Dict[str, List[str]]], seen: Set[str],
         stats: Dict[str, Any], cfg: Any) -> Dict[str, List[str]]:
    """The first ``quotas[label]`` usable texts of each label's pool, generating more (for all
    labels that are short, in one batched call) when the pool runs out. Empty texts and copies of a
    real or an earlier synthetic text are dropped and counted."""
    kept: Dict[str, List[str]] = {label: [] for label in quotas}
    used = {label: 0 for label in quotas}
    for round_ in range(cfg.max_rounds + 1):
        for label, need in sorted(quotas.items()):
            texts = pool.texts.get(label, [])
            while used[label] < len(texts) and len(kept[label]) < need:
                text = clean(texts[used[label]])
                used[label] += 1
                key = normalise(text)
                if not key:
                    stats["dropped_empty"] += 1
                elif key in seen:
                    stats["dropped_duplicate"] += 1
                else:
                    seen.add(key)
                    kept[label].append(text)
        short = {label: need - len(kept[label]) for label, need in quotas.items() if len(kept[label]) < need}
        if not short:
            return kept
        if round_ == cfg.max_rounds:
            label, missing = max(short.items(), key=lambda kv: kv[1])
            raise DataError(
                f"data.synthetic: could not make enough usable synthetic examples in {cfg.max_rounds} rounds: "
                f"{len(short)} labels are short, '{label}' by {missing} ({stats['dropped_empty']} empty and "
                f"{stats['dropped_duplicate']} duplicate texts dropped). Raise data.synthetic.temperature, "
                f"data.synthetic.oversample or data.synthetic.max_rounds, or lower data.synthetic.share"
            )
        requests = [(label, len(pool.texts.get(label, [])), max(1, math.ceil(n * cfg.oversample)))
                    for label, n in sorted(short.items())]
        new = produce(requests)
        stats["generated"] += sum(len(v) for v in new.values())
        pool.extend(new)
    return kept
