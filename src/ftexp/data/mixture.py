"""How many examples of each kind: seeded subsamples, source weights and the synthetic share.

Subsamples are *prefixes* of one seeded order per label (or per source), so for one seed a
smaller training set is, up to rounding, contained in a larger one: a learning curve then varies
only the number of examples, not which examples.
"""

from __future__ import annotations

import hashlib
import random
from fractions import Fraction
from collections import defaultdict
from typing import Callable, Dict, Hashable, List, Optional, Sequence, TypeVar

from ftexp.data.base import DataError

T = TypeVar("T")


def derived_rng(seed: int, *keys: object) -> random.Random:
    """An RNG for (seed, keys) that does not depend on how many other draws were made before."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def apportion(total: int, weights: Dict[Hashable, float]) -> Dict[Hashable, int]:
    """Split ``total`` into integer parts proportional to ``weights`` (largest remainders; ties by key)."""
    wsum = sum(weights.values())
    if total <= 0 or wsum <= 0:
        return {k: 0 for k in weights}
    want = {k: total * w / wsum for k, w in weights.items()}
    parts = {k: int(v) for k, v in want.items()}
    order = sorted(weights, key=lambda k: (want[k] - parts[k], str(k)), reverse=True)
    for k in order[: total - sum(parts.values())]:
        parts[k] += 1
    return parts


def grouped_order(items: Sequence[T], key: Callable[[T], Hashable], seed: int) -> Dict[Hashable, List[int]]:
    """Indices of ``items`` by group, each group shuffled with its own seeded RNG."""
    groups: Dict[Hashable, List[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[key(item)].append(i)
    for g, idx in groups.items():
        derived_rng(seed, "group", str(g)).shuffle(idx)
    return dict(groups)


def stratified_take(items: Sequence[T], n: int, key: Callable[[T], Hashable], seed: int) -> List[int]:
    """Indices of ``n`` items, the groups in proportion to their sizes, each group's part a prefix
    of its seeded order. Returned in the items' original order."""
    groups = grouped_order(items, key, seed)
    quota = apportion(n, {g: len(idx) for g, idx in groups.items()})
    return sorted(i for g, idx in groups.items() for i in idx[: quota[g]])


def synthetic_count(n_real: int, share: float, n: Optional[int]) -> int:
    """Synthetic examples to add to ``n_real`` real ones so that they make up ``share`` of the
    whole (within half an example), or exactly ``n``."""
    if n is not None:
        if n < 0:
            raise DataError(f"data.synthetic.n={n}: must be >= 0")
        return n
    if not 0.0 <= share <= 0.9:
        raise DataError(f"data.synthetic.share={share}: must be in [0, 0.9] (the share of the training set that is synthetic)")
    return int(round(n_real * share / (1.0 - share)))


def source_quotas(sizes: Dict[str, int], weights: Dict[str, float], n_train: Optional[int]) -> Dict[str, int]:
    """Real training examples to draw from each source. With ``n_train`` they are apportioned by
    weight; without it, the largest total the weights allow (all of a single source)."""
    bad = {k: w for k, w in weights.items() if w < 0}
    if bad or sum(weights.values()) <= 0:
        raise DataError(f"source weights {weights}: must be >= 0 and not all zero")
    active = {k: w for k, w in weights.items() if w > 0}
    if n_train is None:
        # exact rational arithmetic: a float product like 43 * 1.0 / 0.1 may land just below 430
        ws = {k: Fraction(str(w)) for k, w in active.items()}
        n_train = int(min(sizes[k] * sum(ws.values()) / w for k, w in ws.items()))
    quotas = apportion(n_train, active)
    if len(active) == 1:
        (k,) = active
        if quotas[k] > sizes[k]:
            raise DataError(f"data.n_train={n_train}: '{k}' has {sizes[k]} training examples after the validation "
                            f"split and leakage checks; choose 1 to {sizes[k]}")
    for k, q in quotas.items():
        if q > sizes[k]:
            avail = ", ".join(f"'{s}' has {sizes[s]}" for s in sizes)
            raise DataError(
                f"data.n_train={n_train}: with weights {dict(active)} source '{k}' must give {q} training examples "
                f"but has only {sizes[k]} after the validation split and leakage checks ({avail}); "
                f"lower data.n_train or change the weights"
            )
    return {k: quotas.get(k, 0) for k in sizes}
