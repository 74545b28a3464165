"""From sources to splits: the one loading pipeline every record-based task shares.

    primary train ─ task rules ─ drop test duplicates ─ validation split (split_seed) ─ drop val duplicates ─┐
    extra sources' train ─ task rules ─ drop val/test duplicates ─────────────────────────────────────────────┴─ n_train, by weight, seeded ─ train
    primary test ─ task rules ─ fixed n_test subset (seed 0) ─ test, and its named slices

Validation and test depend on the data and ``split_seed`` only — never on the run's seed,
``n_train``, the source weights or synthetic data — so every job of a sweep is scored on the same
examples. Subclasses say how a record becomes an :class:`Example` and how to subsample.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ftexp.data.base import DataError, Example, Task
from ftexp.data.checks import drop_overlap, normalise, overlap_fraction, text_keys
from ftexp.data.mixture import derived_rng, source_quotas
from ftexp.data.sources import Row, map_fields, source_rows

log = logging.getLogger(__name__)


class SourcedTask(Task):
    """A task whose examples are records read from sources (files or hub datasets)."""

    text_fields: Tuple[str, ...] = ("text",)  # task fields that must be non-empty strings
    other_fields: Tuple[str, ...] = ()  # task fields that must be present

    def __init__(self, cfg: Any, data_dir: str, seed: int) -> None:
        super().__init__(name=cfg.name, completion_prefix=cfg.completion_prefix, eval_only=cfg.eval_only,
                         chat_template=cfg.chat_template)
        self.cfg, self.seed = cfg, seed
        self.report = {"files": [], "dropped": {}, "checks": {}}
        test = self.load(cfg, "test", data_dir)
        pool = [] if cfg.train_file is None else self.load(cfg, "train", data_dir)
        if not test:
            raise DataError(f"data '{cfg.name}': the test split is empty ({self._origin('test')})")
        if not pool and not cfg.eval_only:
            raise DataError(f"data '{cfg.name}': the training split is empty ({self._origin('train')})")
        self.check_splits(pool, test)

        test_keys = text_keys(test)
        self._check_overlap(test, pool, self.primary_name, "the training file")
        pool = self._dedupe(pool, test_keys, "train_test_duplicates", "test")
        train, val = self._split_val(pool) if pool else ([], [])
        train = self._dedupe(train, text_keys(val), "train_val_duplicates", "validation")

        pools = {self.primary_name: train}
        weights = {self.primary_name: cfg.weight}
        held_out = test_keys | text_keys(val)
        for extra in cfg.extra_sources:
            name = extra.name or f"{cfg.name}:{extra.train_file}"
            if name in pools:
                raise DataError(f"data.extra_sources: two sources are named '{name}'; give each a distinct name")
            examples = self.load(extra, "train", data_dir, name=name)
            self._check_overlap(test, examples, name, f"extra source '{name}'")
            pools[name] = self._dedupe(examples, held_out, f"{name}_heldout_duplicates", "validation or test")
            weights[name] = extra.weight
        # Everything real the run may train on, before n_train: what the tokenizer is fitted to and
        # what label sets and rarity are counted on, so they do not change with n_train.
        self.available: List[Example] = [ex for examples in pools.values() for ex in examples]
        if pool:
            quotas = source_quotas({k: len(v) for k, v in pools.items()}, weights, cfg.n_train)
            train = [ex for k, examples in pools.items() for ex in self.subsample(examples, quotas[k], self.seed)]
            self.report["sources"] = {k: {"weight": weights[k], "available": len(pools[k]), "used": quotas[k]}
                                      for k in pools}

        if cfg.n_test is not None:
            if cfg.n_test < 1:
                raise DataError(f"data.n_test={cfg.n_test}: must be at least 1 (or null for the whole test split)")
            # seed 0, not the run's seed: every job of a sweep is scored on the same examples.
            test = self.subsample(test, min(cfg.n_test, len(test)), seed=0)
        if cfg.n_val is not None and val:
            val = self.subsample(val, min(cfg.n_val, len(val)), seed=cfg.split_seed)  # the same for every job
        self.splits = {"train": train, "val": val, "test": test}
        self.slices = resolve_slices(cfg.slices, test, self.available, cfg.name)
        self.red_team, self.red_team_slices = self.red_team_set(cfg.red_team)

    def tokenizer_corpus(self) -> Iterator[str]:
        """All real training texts before ``n_train``: a tokenizer fitted per run is the same at
        every training-set size and synthetic share."""
        for ex in self.available:
            yield ex.prompt + self.completion_prefix + ex.completion

    def red_team_set(self, red_team: Any) -> Tuple[List[Example], List[str]]:
        """The configured adversarial inputs, rendered like the task's prompts, and the red-team slices."""
        unknown = [name for name in red_team.slices if name not in self.slices]
        if unknown:
            raise DataError(f"data '{self.cfg.name}': red_team.slices names '{unknown[0]}', which is not one of "
                            f"data.slices ({', '.join(self.slices) or 'none'})")
        field_name = self.text_fields[0]
        examples = []
        for i, text in enumerate(red_team.prompts):
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"data '{self.cfg.name}': red_team.prompts[{i}] is empty")
            where = f"data '{self.cfg.name}' red_team.prompts[{i}]"
            examples.append(Example(prompt=format_prompt(self.cfg.prompt_template, {field_name: text}, where),
                                    completion="", origin="red_team", source="red_team", text=text, where=where))
        return examples, list(red_team.slices)

    # ---------------------------------------------------------------------------------- hooks

    @property
    def primary_name(self) -> str:
        return self.cfg.name

    def field_map(self, source: Any) -> Dict[str, str]:
        """Task field -> the source's field name (the task's ``*_field`` settings, then the source's ``fields``)."""
        return dict(source.fields)

    def to_example(self, row: Row, source: str, split: str) -> Optional[Example]:
        """The example of one (field-mapped) record; None drops it (count it with :meth:`drop`)."""
        raise NotImplementedError

    def check_splits(self, train: List[Example], test: List[Example]) -> None:
        """Task-specific sanity checks of the loaded splits (e.g. labels in test never seen in train)."""

    def _split_val(self, pool: List[Example]) -> Tuple[List[Example], List[Example]]:
        cfg = self.cfg
        if not 0.0 <= cfg.val_fraction < 1.0:
            raise DataError(f"data.val_fraction must be in [0, 1), got {cfg.val_fraction}")
        if cfg.group_field is None:
            return self.split_off(pool, cfg.val_fraction, cfg.split_seed)
        missing = next((ex for ex in pool if cfg.group_field not in ex.meta), None)
        if missing is not None:
            raise DataError(f"{missing.where}: field '{cfg.group_field}' (data.group_field) is missing")
        return grouped_split(pool, lambda ex: str(ex.meta[cfg.group_field]), cfg.val_fraction, cfg.split_seed)

    def split_off(self, examples: List[Example], fraction: float, seed: int) -> Tuple[List[Example], List[Example]]:
        """(rest, held out), about ``fraction`` held out, seeded. Examples with the same normalised
        text (one question asked twice) land on the same side, so none is lost to deduplication."""
        return grouped_split(examples, lambda ex: normalise(ex.text), fraction, seed)

    def subsample(self, examples: List[Example], n: int, seed: int) -> List[Example]:
        """``n`` examples: a prefix of one seeded order (so smaller subsets nest in larger ones)."""
        order = list(range(len(examples)))
        derived_rng(seed, "subsample").shuffle(order)
        return [examples[i] for i in sorted(order[:n])]

    # ---------------------------------------------------------------------------------- helpers

    def load(self, source: Any, split: str, data_dir: str, name: Optional[str] = None) -> List[Example]:
        rows, origin = source_rows(source, split, data_dir, self.cfg.name)
        if origin:
            self.report["files"].append({"source": name or self.primary_name, "split": split, **origin,
                                         "records": len(rows)})
        rows = map_fields(rows, self.field_map(source), self.text_fields, self.other_fields)
        out = []
        for row in rows:
            ex = self.to_example(row, name or self.primary_name, split)
            if ex is not None:
                ex.where = row.where
                out.append(ex)
        return out

    def _origin(self, split: str) -> str:
        """Where a split of the primary source was read from, and how many records it held."""
        for f in self.report["files"]:
            if f["source"] == self.primary_name and f["split"] == split:
                where = _read_from(f)
                return f"{where}: {f['records']} record(s), none usable" if f["records"] else f"{where} holds no records"
        return "no file configured"

    def read_from(self, split: str) -> str:
        """The files (or hub datasets) a split was read from, every source's."""
        return ", ".join(_read_from(f) for f in self.report["files"] if f["split"] == split)

    def drop(self, reason: str, split: str, n: int = 1) -> None:
        entry = self.report["dropped"].setdefault(reason, {})
        entry[split] = entry.get(split, 0) + n

    def _check_overlap(self, test: List[Example], train: List[Example], source: str, what: str) -> None:
        overlap = overlap_fraction(test, text_keys(train))
        self.report["checks"].setdefault("test_in_train_fraction", {})[source] = overlap
        limit = self.cfg.checks.max_test_overlap
        if overlap > limit:
            raise DataError(
                f"data '{self.cfg.name}': {overlap:.1%} of the test examples also occur (up to case, punctuation "
                f"and spacing) in {what} — more than data.checks.max_test_overlap={limit}. Is test data among "
                f"the training files?"
            )

    def _dedupe(self, examples: List[Example], against: set, reason: str, held_out: str) -> List[Example]:
        if not self.cfg.checks.dedupe or not examples:
            return examples
        kept, dropped = drop_overlap(examples, against)
        if dropped:
            self.drop(reason, "train", dropped)
            log.warning("data '%s': dropped %d training examples whose text also occurs in %s", self.cfg.name,
                        dropped, held_out)
        return kept


def _read_from(entry: Dict[str, Any]) -> str:
    """A file entry of ``report["files"]`` as a message names it."""
    return entry.get("path") or f"hub dataset {entry.get('hub_id')}"


def grouped_split(examples: List[Example], key, fraction: float, seed: int) -> Tuple[List[Example], List[Example]]:
    """(rest, held out): whole groups (by ``key``) in a seeded order are held out until about
    ``fraction`` of the examples are."""
    groups: Dict[str, List[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(key(ex), []).append(i)
    keys = sorted(groups)
    derived_rng(seed, "split").shuffle(keys)
    target, held = round(len(examples) * fraction), set()
    for k in keys:
        if len(held) >= target:
            break
        held.update(groups[k])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def format_prompt(template: str, record: Dict[str, Any], where: str) -> str:
    try:
        return template.format(**record)
    except (KeyError, IndexError) as exc:
        raise DataError(
            f"{where}: data.prompt_template '{template}' uses {exc}, which this record does not have "
            f"(fields: {', '.join(sorted(record))})"
        ) from None


def resolve_slices(slices: Sequence[Any], test: List[Example], train: List[Example], data: str) -> Dict[str, List[int]]:
    """Indices into ``test`` of every declared slice (every criterion that is set must hold).
    Label rarity is counted on ``train`` (the whole real pool, so slices do not move with n_train)."""
    train_counts = Counter(ex.label for ex in train)
    out: Dict[str, List[int]] = {}
    for s in slices:
        if s.name in out:
            raise DataError(f"data.slices: two slices are named '{s.name}'")
        if s.field is not None and not any(s.field in ex.meta for ex in test):
            fields = sorted({k for ex in test for k in ex.meta})
            raise DataError(f"data.slices '{s.name}': field '{s.field}' is not a field of the test records "
                            f"(fields: {', '.join(fields) or 'none'})")

        def member(ex: Example) -> bool:
            words = len(ex.text.split())
            return (
                (s.min_words is None or words >= s.min_words)
                and (s.max_words is None or words <= s.max_words)
                and (s.labels is None or ex.label in s.labels)
                and (s.max_train_count is None or train_counts.get(ex.label, 0) <= s.max_train_count)
                and (s.field is None or s.values is None or str(ex.meta.get(s.field)) in s.values)
            )

        out[s.name] = [i for i, ex in enumerate(test) if member(ex)]
        if not out[s.name]:
            log.warning("data '%s': slice '%s' matches no test example", data, s.name)
    return out
