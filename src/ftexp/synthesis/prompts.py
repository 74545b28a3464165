"""Prompts that ask a generator for one more example of a label, built from real examples."""

from __future__ import annotations

from typing import Sequence


def label_prompt(dataset: str, label: str, shots: Sequence[str]) -> str:
    """``shots`` real texts of ``label`` and an open line for one more. With no shots (a generator
    fine-tuned in-run on exactly this format) only the header and the open line remain."""
    lines = [f'Texts from the dataset "{dataset}" with the label "{label}".']
    lines += [f"Text: {' '.join(s.split())}" for s in shots]
    lines.append("Text:")
    return "\n".join(lines)


def clean(text: str) -> str:
    """A generated text as an example: one line, inner whitespace collapsed."""
    return " ".join(text.split())
