"""Multiple-choice questions as prompt -> the correct choice (``data=truthfulqa_mc``).

Each record is a question, its choices and the index of the correct one (MC1), and optionally a
second list of choices with 0/1 truth labels (MC2, several true answers). The example's completion
is the correct choice, so the task can also be trained on or scored by perplexity; the choices
themselves live in ``Example.meta`` for :mod:`ftexp.eval.multiple_choice`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ftexp.data.base import DataError, Example
from ftexp.data.pipeline import SourcedTask, format_prompt
from ftexp.data.sources import Row

# Task field -> the data config setting that names it in the source records.
SETTINGS = {"question": "question_field", "choices": "choices_field", "answer_index": "answer_field",
            "mc2_choices": "mc2_choices_field", "mc2_labels": "mc2_labels_field"}


class MultipleChoiceTask(SourcedTask):
    kind = "multiple_choice"
    text_fields = ("question",)

    def __init__(self, cfg: Any, data_dir: str, seed: int) -> None:
        if (cfg.mc2_choices_field is None) != (cfg.mc2_labels_field is None):
            raise DataError(f"data '{cfg.name}': data.mc2_choices_field and data.mc2_labels_field go together "
                            f"(got {cfg.mc2_choices_field!r} and {cfg.mc2_labels_field!r}); set both or neither")
        self.has_mc2 = cfg.mc2_choices_field is not None
        self.other_fields = ("choices", "answer_index") + (("mc2_choices", "mc2_labels") if self.has_mc2 else ())
        super().__init__(cfg, data_dir, seed)

    def field_map(self, source: Any) -> Dict[str, str]:
        mapping = {task_field: getattr(self.cfg, setting) for task_field, setting in SETTINGS.items()}
        return {**{k: v for k, v in mapping.items() if v is not None}, **source.fields}

    def to_example(self, row: Row, source: str, split: str) -> Optional[Example]:
        rec, where = row.fields, row.where
        names = self.field_map(self.cfg)  # the source's names, for error messages
        choices = _choice_list(rec["choices"], names["choices"], where)
        if len(set(choices)) < len(choices):
            raise DataError(f"{where}: field '{names['choices']}' lists the same choice twice; "
                            f"the correct one would be ambiguous")
        answer = rec["answer_index"]
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise DataError(f"{where}: field '{names['answer_index']}' must be an integer index into the "
                            f"{len(choices)} choices (0 to {len(choices) - 1}), got {answer!r:.60}")
        meta = {k: v for k, v in rec.items() if k not in SETTINGS and k not in names.values()}
        meta.update(choices=choices, answer_index=answer)
        if self.has_mc2:
            meta.update(_mc2(rec, names, where))
        prompt = format_prompt(self.cfg.prompt_template, rec, where)
        return Example(prompt=prompt, completion=choices[answer], source=source, text=rec["question"], meta=meta)


def _choice_list(value: Any, field: str, where: str) -> List[str]:
    if not isinstance(value, (list, tuple)) or not value:
        raise DataError(f"{where}: field '{field}' must be a non-empty list of strings, got {value!r:.60}")
    for i, choice in enumerate(value):
        if not isinstance(choice, str) or not choice.strip():
            raise DataError(f"{where}: field '{field}' item {i} must be a non-empty string, got {choice!r:.60}")
    return [c.strip() for c in value]


def _mc2(rec: Dict[str, Any], names: Dict[str, str], where: str) -> Dict[str, Any]:
    """The MC2 choices and their 0/1 labels, checked."""
    choices = _choice_list(rec["mc2_choices"], names["mc2_choices"], where)
    labels = rec["mc2_labels"]
    if not isinstance(labels, (list, tuple)) or len(labels) != len(choices):
        n = len(labels) if isinstance(labels, (list, tuple)) else type(labels).__name__
        raise DataError(f"{where}: field '{names['mc2_labels']}' must be a list of one 0/1 label per "
                        f"'{names['mc2_choices']}' choice ({len(choices)}), got {n}")
    bad = [i for i, x in enumerate(labels) if type(x) is not int or x not in (0, 1)]  # noqa: E721 - no bools
    if bad:
        raise DataError(f"{where}: field '{names['mc2_labels']}' must hold 0 or 1 only; item {bad[0]} is "
                        f"{labels[bad[0]]!r:.60}")
    if 1 not in labels:
        raise DataError(f"{where}: field '{names['mc2_labels']}' marks no choice true (at least one label must be 1)")
    return {"mc2_choices": choices, "mc2_labels": list(labels)}
