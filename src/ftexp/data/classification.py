"""Text classification as prompt -> label text (``data=banking77``, ``data=cuad`` ...)."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

from ftexp.data.base import DataError, Example
from ftexp.data.mixture import stratified_take
from ftexp.data.pipeline import SourcedTask, format_prompt
from ftexp.data.sources import Row

log = logging.getLogger(__name__)


class ClassificationTask(SourcedTask):
    """The label set is ``data.labels`` or the labels seen in train; the validation split and every
    subsample are stratified by label."""

    kind = "classification"

    text_fields = ("text",)
    other_fields = ("label",)

    def __init__(self, cfg: Any, data_dir: str, seed: int) -> None:
        self.declared = set(cfg.labels) if cfg.labels is not None else None
        super().__init__(cfg, data_dir, seed)
        # From everything real that could be trained on, not the n_train subsample: the label set
        # a model is scored over must not change with the training-set size.
        seen = {ex.label for ex in (self.splits["test"] if self.eval_only else self.available)}
        self.labels: List[str] = sorted(self.declared if self.declared is not None else seen)
        if len(self.labels) < 2:  # nothing to choose between: refuse before a model loads
            split = "test" if self.eval_only else "train"
            holder = ("data.labels declares" if self.declared is not None
                      else f"the {split} data ({self.read_from(split)}) has")
            only = f"only the label '{self.labels[0]}'" if self.labels else "no label"
            raise DataError(
                f"data '{cfg.name}': {holder} {only}, and a classifier needs at least two to choose between. Add "
                f"examples of another label, or check that data.label_field='{cfg.label_field}' names the "
                f"column that holds the label"
            )
        missing = sorted(set(self.labels) - {ex.label for ex in self.splits["train"]})
        if missing and not self.eval_only:
            log.warning("data '%s': %d labels have no training example at data.n_train=%s (e.g. '%s')",
                        cfg.name, len(missing), cfg.n_train, missing[0])

    def field_map(self, source: Any) -> Dict[str, str]:
        return {"text": self.cfg.text_field, "label": self.cfg.label_field, **source.fields}

    def to_example(self, row: Row, source: str, split: str) -> Optional[Example]:
        rec = row.fields
        if isinstance(rec["label"], bool) or not isinstance(rec["label"], (str, int)):
            raise DataError(f"{row.where}: the label must be a string or an integer, got "
                            f"{type(rec['label']).__name__} {rec['label']!r:.60}")
        label = str(rec["label"]).strip()
        if self.declared is not None and label not in self.declared:
            raise DataError(f"{row.where}: label '{label}' is not one of data.labels ({len(self.declared)} labels)")
        multi = self.cfg.multi_label_field
        if multi is not None:
            value = rec.get(multi)
            if value is None:
                raise DataError(f"{row.where}: field '{multi}' (data.multi_label_field) is missing")
            if not isinstance(value, (list, tuple)):
                raise DataError(f"{row.where}: data.multi_label_field '{multi}' must be a list, got {value!r:.60}")
            if len(value) > 1:
                self.drop("multi_label", split)
                return None
        prompt = format_prompt(self.cfg.prompt_template, rec, row.where)
        meta = {k: v for k, v in rec.items() if k not in ("text", "label")}
        return Example(prompt=prompt, completion=label, label=label, source=source, text=rec["text"], meta=meta)

    def check_splits(self, train: List[Example], test: List[Example]) -> None:
        if self.eval_only:
            return
        seen = {ex.label for ex in train}
        unknown = sorted({ex.label for ex in test} - seen)
        if unknown:
            first = next(ex for ex in test if ex.label == unknown[0])
            raise DataError(
                f"{first.where}: the test label '{unknown[0]}' never occurs in the training data"
                + (f" (nor do {len(unknown) - 1} more test labels: {', '.join(unknown[1:6])})" if len(unknown) > 1 else "")
                + "; set data.labels to declare the label set, or fix the files"
            )

    def split_off(self, examples: List[Example], fraction: float, seed: int) -> Tuple[List[Example], List[Example]]:
        held = set(stratified_take(examples, round(len(examples) * fraction), _label, seed))
        return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]

    def subsample(self, examples: List[Example], n: int, seed: int) -> List[Example]:
        return [examples[i] for i in stratified_take(examples, n, _label, seed)]


def _label(ex: Example) -> str:
    return ex.label
