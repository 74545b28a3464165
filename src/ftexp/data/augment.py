"""Cheap, non-LLM augmentation: word-level edits of a real example (EDA-style deletion, swap and
duplication), a baseline against which model-written synthetic data can be compared."""

from __future__ import annotations

import random
from typing import List


def edit_words(text: str, rng: random.Random, rate: float = 0.15) -> str:
    """One augmented variant of ``text``: each word may be deleted, swapped with its neighbour or
    repeated, at ``rate`` per word; at least one edit is made when the text has two or more words."""
    words = text.split()
    if len(words) < 2:
        return text
    out: List[str] = []
    i = 0
    edited = False
    while i < len(words):
        r = rng.random()
        if r < rate / 3 and len(words) > 2:  # delete
            edited = True
        elif r < 2 * rate / 3 and i + 1 < len(words):  # swap with the next word
            out.extend([words[i + 1], words[i]])
            i += 1
            edited = True
        elif r < rate:  # repeat
            out.extend([words[i], words[i]])
            edited = True
        else:
            out.append(words[i])
        i += 1
    if not edited:
        j = rng.randrange(len(words) - 1)
        out = words[:j] + [words[j + 1], words[j]] + words[j + 2:]
    return " ".join(out)
