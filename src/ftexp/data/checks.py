"""Leakage checks: the same input text in train and in validation or test.

Texts are compared exactly and after normalisation (case, punctuation, whitespace), the way
near-verbatim copies usually differ.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, List, Set, Tuple

from ftexp.data.base import Example

_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


def text_keys(examples: Iterable[Example]) -> Set[str]:
    return {normalise(ex.text) for ex in examples}


def drop_overlap(examples: List[Example], against: Set[str]) -> Tuple[List[Example], int]:
    """``examples`` without those whose normalised text is in ``against``, and how many were dropped."""
    kept = [ex for ex in examples if normalise(ex.text) not in against]
    return kept, len(examples) - len(kept)


def overlap_fraction(examples: List[Example], against: Set[str]) -> float:
    """Fraction of ``examples`` whose normalised text is in ``against``."""
    return sum(normalise(ex.text) in against for ex in examples) / max(1, len(examples))
