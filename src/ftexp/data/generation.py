"""Question answering / generation as prompt -> free-text answer (``data=medquad``, ``data=truthfulqa``)."""

from __future__ import annotations

from typing import Any, Dict, Optional

from ftexp.data.base import Example
from ftexp.data.pipeline import SourcedTask, format_prompt
from ftexp.data.sources import Row


class GenerationTask(SourcedTask):
    kind = "generation"
    text_fields = ("question", "answer")

    def field_map(self, source: Any) -> Dict[str, str]:
        return {"question": self.cfg.question_field, "answer": self.cfg.answer_field, **source.fields}

    def to_example(self, row: Row, source: str, split: str) -> Optional[Example]:
        rec = row.fields
        prompt = format_prompt(self.cfg.prompt_template, rec, row.where)
        meta = {k: v for k, v in rec.items() if k not in ("question", "answer")}
        return Example(prompt=prompt, completion=rec["answer"].strip(), source=source, text=rec["question"], meta=meta)
