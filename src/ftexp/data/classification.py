"""Text classification as prompt -> label text (``data=banking77`` and friends)."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Dict, List, Optional

from ftexp.data.base import DataError, Example, Task, resolve_folder
from ftexp.data.sources import Record, load_hub_split, read_records, require_fields


class ClassificationTask(Task):
    """Loads train and test, fixes the label set from train, carves a seeded stratified
    validation split out of train. The test split is the official test file, untouched."""

    def __init__(self, cfg, data_dir: str, seed: int) -> None:
        super().__init__(name=cfg.name, completion_prefix=cfg.completion_prefix, eval_only=cfg.eval_only)
        self.cfg = cfg
        self.seed = seed
        self.folder = resolve_folder(cfg.path, data_dir, cfg.subdir)
        train = self._examples(self._records("train"), "train")
        test = self._examples(self._records("test"), "test")
        if not train:
            raise DataError(f"data '{cfg.name}': the training split is empty")
        if not test:
            raise DataError(f"data '{cfg.name}': the test split is empty")
        self.labels: List[str] = sorted({ex.label for ex in train})
        unknown = sorted({ex.label for ex in test} - set(self.labels))
        if unknown:
            raise DataError(
                f"data '{cfg.name}': the test split has labels that never occur in train: {', '.join(unknown[:10])}"
            )
        train, val = stratified_split(train, cfg.val_fraction, seed)
        if cfg.n_train is not None:
            if not 0 < cfg.n_train <= len(train):
                raise DataError(
                    f"data.n_train={cfg.n_train}: '{cfg.name}' has {len(train)} training examples after the "
                    f"validation split (data.val_fraction={cfg.val_fraction}); choose 1 to {len(train)}"
                )
            _, train = stratified_split(train, cfg.n_train / len(train), seed, exact=cfg.n_train)
        if cfg.n_test is not None and cfg.n_test < 1:
            raise DataError(f"data.n_test={cfg.n_test}: must be at least 1 (or null for the whole test split)")
        if cfg.n_test is not None and cfg.n_test < len(test):
            # A fixed subset (seed 0, not the run's seed): every job of a sweep is scored on the same examples.
            _, test = stratified_split(test, cfg.n_test / len(test), seed=0, exact=cfg.n_test)
        self.splits = {"train": train, "val": val, "test": test}

    # ----------------------------------------------------------------------------- loading

    def _records(self, split: str) -> List[Record]:
        cfg = self.cfg
        file_name = cfg.train_file if split == "train" else cfg.test_file
        path = self.folder / file_name
        if path.is_file():
            records = read_records(path)
            require_fields(records, [cfg.text_field, cfg.label_field], str(path))
            return records
        if cfg.hub_id:
            try:
                records = load_hub_split(cfg.hub_id, split)
            except DataError as exc:
                raise DataError(
                    f"data '{cfg.name}': {path} does not exist (set FTEXP_DATA_DIR or data_dir to the folder that "
                    f"holds '{cfg.subdir}/', or data.path to the dataset folder), and the hub copy is not "
                    f"available either: {exc}"
                ) from None
            text_field = cfg.hub_text_field or cfg.text_field
            label_field = cfg.hub_label_field or cfg.label_field
            require_fields(records, [text_field, label_field], f"hub dataset {cfg.hub_id} ({split})")
            return [{cfg.text_field: r[text_field], cfg.label_field: r[label_field]} for r in records]
        raise DataError(
            f"data '{cfg.name}': {path} does not exist. Set FTEXP_DATA_DIR (or data_dir=...) to the folder "
            f"that holds '{cfg.subdir}/', or data.path to the dataset folder."
        )

    def _examples(self, records: List[Record], split: str) -> List[Example]:
        cfg = self.cfg
        out = []
        for rec in records:
            try:
                prompt = cfg.prompt_template.format(**rec)
            except (KeyError, IndexError) as exc:
                raise DataError(
                    f"data '{cfg.name}': data.prompt_template '{cfg.prompt_template}' uses {exc}, "
                    f"which the {split} records do not have (fields: {', '.join(sorted(rec))})"
                ) from None
            label = str(rec[cfg.label_field]).strip()
            out.append(Example(prompt=prompt, completion=label, label=label, source=cfg.name))
        return out


def stratified_split(examples: List[Example], fraction: float, seed: int, exact: Optional[int] = None):
    """Split off ``fraction`` of every label's examples (at least one per label when the label has
    two or more), deterministically for a seed. With ``exact``, the held-out part has exactly that
    many examples (largest remainders decide the rounding). Returns (rest, held_out) in the
    original order."""
    if not 0.0 <= fraction <= 1.0 or (fraction == 1.0 and exact is None):
        raise DataError(f"data.val_fraction must be in [0, 1), got {fraction}")
    by_label: Dict[str, List[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_label[ex.label].append(i)
    rng = random.Random(seed)
    labels = sorted(by_label)
    if exact is None:
        quota = {}
        for label in labels:
            n = round(len(by_label[label]) * fraction)
            quota[label] = 1 if fraction > 0 and n == 0 and len(by_label[label]) >= 2 else n
    else:
        want = {label: len(by_label[label]) * exact / len(examples) for label in labels}
        quota = {label: int(w) for label, w in want.items()}
        by_remainder = sorted(labels, key=lambda lb: (want[lb] - quota[lb], lb), reverse=True)
        for label in by_remainder[: exact - sum(quota.values())]:
            quota[label] += 1
    held = set()
    for label in labels:
        held.update(rng.sample(by_label[label], quota[label]))
    rest = [ex for i, ex in enumerate(examples) if i not in held]
    out = [ex for i, ex in enumerate(examples) if i in held]
    return rest, out
