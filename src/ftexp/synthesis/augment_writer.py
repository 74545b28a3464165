"""``data.synthetic.method=augment``: word-level edits of real examples, for comparison with model-written ones."""

from __future__ import annotations

from typing import Dict, List

from ftexp.data.augment import edit_words
from ftexp.data.mixture import derived_rng
from ftexp.synthesis.writer import Requests, SyntheticWriter


class AugmentWriter(SyntheticWriter):
    """Sample k of a label: a real text of that label, chosen and edited with generators seeded by
    (seed, label, k). Cheap, so never cached."""

    @property
    def source(self) -> str:
        return "augment"

    def produce(self, requests: Requests) -> Dict[str, List[str]]:
        seed = self.run.seed
        return {label: [edit_words(derived_rng(seed, "augment", label, k).choice(self.by_label[label]),
                                   derived_rng(seed, "augment-edit", label, k)) for k in range(start, start + n)]
                for label, start, n in requests}
