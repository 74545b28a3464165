"""Synthetic training examples: how many, written by whom, filtered how, cached where.

``add_synthetic`` adds exactly the configured number of synthetic examples to a task's training
split (validation and test stay real), per label in proportion to the real subset, and records
what it requested, generated and dropped in ``task.report["synthetic"]``. Generated texts are
cached under a content hash of (generator, prompts' source, sampling settings): sample *k* of a
label is fixed by its own seed, so a sweep generates each sample once and a cache hit gives
exactly what a fresh run would.

Imports data, models and training; nothing imports it but the orchestrator.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import torch
from tqdm.auto import tqdm

from ftexp.data.augment import edit_words
from ftexp.data.base import DataError, Example, Task
from ftexp.data.checks import normalise, text_keys
from ftexp.data.mixture import apportion, derived_rng, synthetic_count
from ftexp.data.pipeline import format_prompt
from ftexp.synthesis.prompts import clean
from ftexp.utils.cache import file_lock
from ftexp.utils.io import atomic_write_text

log = logging.getLogger(__name__)

METHODS = ("model", "augment")


# Bump when the prompt format, the sampler or the text clean-up changes what sample k is.
CACHE_VERSION = 1


class Pool:
    """Generated texts per label, in sample order; kept in a JSONL file when ``path`` is given.

    Use it as a context manager: the file is locked while in use, so parallel jobs with the same
    key wait for each other instead of writing the same samples twice.
    """

    def __init__(self, path: Optional[Path], persist: bool = True) -> None:
        self.path, self.persist = path, persist
        self.texts: Dict[str, List[str]] = {}
        self._lock: Optional[contextlib.ExitStack] = None

    def __enter__(self) -> "Pool":
        if self.path is not None and self.persist:
            self._lock = contextlib.ExitStack()
            self._lock.enter_context(file_lock(self.path.with_suffix(".lock")))
        if self.path is not None and self.path.is_file():
            self._read()
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _read(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                # A job killed mid-write leaves a partial last line: keep the good prefix. Every
                # sample is fixed by its seed, so what is cut is regenerated identically.
                log.warning("synthetic cache %s, line %d is incomplete; regenerating from there", self.path, n + 1)
                if self._lock is not None:
                    atomic_write_text(self.path, "".join(x + "\n" for x in lines[:n]))
                return
            self.texts.setdefault(rec["label"], []).append(rec["text"])

    def extend(self, new: Dict[str, List[str]]) -> None:
        for label, texts in new.items():
            self.texts.setdefault(label, []).extend(texts)
        if self.path is None or not self.persist:
            return
        with self.path.open("a", encoding="utf-8") as f:
            for label, texts in new.items():
                for t in texts:
                    f.write(json.dumps({"label": label, "text": t}) + "\n")

# (label, first sample index, how many) -> texts per label
Requests = List[Tuple[str, int, int]]


def add_synthetic(task: Task, syn_cfg: Any, run_cfg: Any, model_source: Any, tokenizer: Any, cache_dir: Path,
                  device: Any = "cpu", persist: bool = True) -> None:
    """Add the configured synthetic examples to ``task``'s training split (``persist``: write the
    cache; only one process of a distributed job should)."""
    real = task.splits["train"]
    count = synthetic_count(len(real), syn_cfg.share, syn_cfg.n)
    if count == 0:
        return
    if syn_cfg.method not in METHODS:
        raise DataError(f"data.synthetic.method='{syn_cfg.method}': must be one of {', '.join(METHODS)}")
    if not hasattr(task, "labels"):
        raise DataError(f"data.synthetic: synthetic data is made per label, for classification tasks; "
                        f"'{task.name}' has no labels")
    by_label: Dict[str, List[str]] = {}
    for ex in real:
        by_label.setdefault(ex.label, []).append(ex.text)
    quotas = apportion(count, {label: len(texts) for label, texts in by_label.items()})
    seen = text_keys(ex for split in task.splits.values() for ex in split)  # real train, val and test

    if syn_cfg.method == "augment":
        def produce(requests: Requests) -> Dict[str, List[str]]:
            seed = run_cfg.seed
            return {label: [edit_words(derived_rng(seed, "augment", label, k).choice(by_label[label]),
                                       derived_rng(seed, "augment-edit", label, k)) for k in range(start, start + n)]
                    for label, start, n in requests}
        source_name, pool = "augment", Pool(None)  # cheap: not cached
    else:
        from ftexp.synthesis.generator import Generator
        from ftexp.utils.cache import content_hash
        from ftexp.models.decoding import sample

        gen = Generator(syn_cfg, run_cfg, model_source, tokenizer, task, cache_dir)
        # Everything sample k depends on. (Not oversample or batch size: they change how many are made.)
        settings = {"version": CACHE_VERSION, "generator": gen.identity, "task": task.name, "shots": gen.shots,
                    "max_new_tokens": syn_cfg.max_new_tokens, "temperature": syn_cfg.temperature,
                    "top_p": syn_cfg.top_p, "seed": run_cfg.seed, "device": torch.device(device).type,
                    "real": content_hash(sorted(by_label.items()))}
        pool = Pool(Path(cache_dir) / "synthetic" / f"{content_hash(settings)}.jsonl", persist)
        source_name = f"generator:{gen.identity['model'].get('name', 'model')}"

        def produce(requests: Requests) -> Dict[str, List[str]]:
            prompts, seeds, owners = [], [], []
            for label, start, n in requests:
                p, sd = gen.prompts(label, list(range(start, start + n)), by_label[label], run_cfg.seed)
                prompts += p
                seeds += sd
                owners += [label] * n
            with tqdm(total=len(prompts), desc="synthetic examples", unit="ex", disable=None) as bar:
                texts = sample(gen.model.to(device), gen.tokenizer, prompts, seeds, syn_cfg.max_new_tokens,
                               syn_cfg.temperature, syn_cfg.top_p, syn_cfg.batch_size, progress=bar.update)
            out: Dict[str, List[str]] = {}
            for label, text in zip(owners, texts):
                out.setdefault(label, []).append(text)
            return out

    stats = {"requested": count, "generated": 0, "dropped_empty": 0, "dropped_duplicate": 0,
             "cache": str(pool.path) if pool.path else None}
    with pool:
        chosen = fill(quotas, pool, produce, seen, stats, syn_cfg)
    made = []
    for label in sorted(chosen):
        for t in chosen[label]:
            prompt = format_prompt(task.cfg.prompt_template, {"text": t, "label": label}, "a synthetic example")
            made.append(Example(prompt=prompt, completion=label, label=label, origin="synthetic",
                                source=source_name, text=t))
    task.splits["train"] = real + made
    stats.update(kept=len(made), method=syn_cfg.method, source=source_name,
                 share=len(made) / len(task.splits["train"]))
    task.report["synthetic"] = stats
    log.info("synthetic: %d examples added (%.1f%% of train); %d newly generated, %d empty and %d duplicates dropped",
             len(made), 100 * stats["share"], stats["generated"], stats["dropped_empty"], stats["dropped_duplicate"])


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
