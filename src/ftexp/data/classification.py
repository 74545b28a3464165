"""Text classification as prompt -> label text (``data=banking77``, ``data=cuad`` ...)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ftexp.data.base import DataError, Example
from ftexp.data.mixture import stratified_take
from ftexp.data.pipeline import SourcedTask, format_prompt
from ftexp.data.sources import Row


class ClassificationTask(SourcedTask):
    """The label set is ``data.labels`` or the labels seen in train; the validation split and every
    subsample are stratified by label."""

    text_fields = ("text",)
    other_fields = ("label",)

    def __init__(self, cfg: Any, data_dir: str, seed: int) -> None:
        self.declared = set(cfg.labels) if cfg.labels is not None else None
        super().__init__(cfg, data_dir, seed)
        seen = {ex.label for ex in self.splits["test" if self.eval_only else "train"]}
        self.labels: List[str] = sorted(self.declared if self.declared is not None else seen)

    def field_map(self, source: Any) -> Dict[str, str]:
        return {"text": self.cfg.text_field, "label": self.cfg.label_field, **source.fields}

    def to_example(self, row: Row, source: str, split: str) -> Optional[Example]:
        rec = row.fields
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
            raise DataError(
                f"data '{self.cfg.name}': the test split has labels that never occur in train: {', '.join(unknown[:10])}"
                + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            )

    def split_off(self, examples: List[Example], fraction: float, seed: int) -> Tuple[List[Example], List[Example]]:
        if not 0.0 <= fraction < 1.0:
            raise DataError(f"data.val_fraction must be in [0, 1), got {fraction}")
        held = set(stratified_take(examples, round(len(examples) * fraction), _label, seed))
        return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]

    def subsample(self, examples: List[Example], n: int, seed: int) -> List[Example]:
        return [examples[i] for i in stratified_take(examples, n, _label, seed)]


def _label(ex: Example) -> str:
    return ex.label
