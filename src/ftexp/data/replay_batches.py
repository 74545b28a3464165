"""Batches that mix replayed rows into each step at an exact ratio.

``replace``: a step keeps ``batch_size`` rows, of which about ``ratio`` are replayed (the new rows
of an epoch are spread over more steps). ``add``: a step has ``batch_size`` new rows plus replayed
ones on top, so that replayed rows are ``ratio`` of the step. The per-step replay count follows a
running total (k_i = floor((i+1)·q) − floor(i·q)), so over an epoch the realised ratio is the
configured one to within one row.
"""

from __future__ import annotations

import math
import random
from typing import Iterator, List

from torch.utils.data import Sampler


class ReplayBatches(Sampler[List[int]]):
    """Wraps a sampler of new-row batches (indices < ``n_new``); replayed rows are indices
    ``n_new + j`` into the buffer, drawn without repeats until the buffer is used up, then reshuffled."""

    def __init__(self, base: Sampler, n_new: int, n_replay: int, ratio: float, mode: str, batch_size: int,
                 seed: int) -> None:
        if mode not in ("replace", "add"):
            raise ValueError(f"mitigation.mode='{mode}': must be 'replace' or 'add'")
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"mitigation.ratio={ratio}: must be in [0, 1)")
        self.base, self.n_new, self.n_replay = base, n_new, n_replay
        self.ratio, self.mode, self.batch_size, self.seed = ratio, mode, batch_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.base.set_epoch(epoch)

    def _per_step(self) -> float:
        """Replayed rows per step, on average."""
        return self.batch_size * self.ratio if self.mode == "replace" else self.batch_size * self.ratio / (1 - self.ratio)

    def __len__(self) -> int:
        n_batches = len(self.base)
        if self.mode == "add" or not self.n_replay:
            return n_batches
        # the same cutting as __iter__, on counts only (rows of this rank: all but the last batch are full)
        rows, q, steps, pos = min(self.n_new, n_batches * self.batch_size), self._per_step(), 0, 0
        while pos < rows:
            k = math.floor((steps + 1) * q) - math.floor(steps * q)
            pos += max(1, self.batch_size - k)
            steps += 1
        return steps

    def __iter__(self) -> Iterator[List[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        replay_order: List[int] = []

        def take(k: int) -> List[int]:
            out = []
            while len(out) < k and self.n_replay:
                if not replay_order:
                    replay_order.extend(rng.sample(range(self.n_replay), self.n_replay))
                out.append(self.n_new + replay_order.pop())
            return out

        q = self._per_step() if self.n_replay else 0.0
        step = 0
        if self.mode == "add":
            for batch in self.base:
                k = math.floor((step + 1) * q) - math.floor(step * q)
                step += 1
                yield list(batch) + take(k)
            return
        # replace: re-cut the base order (which keeps similar lengths together) into steps of
        # batch_size - k_i new rows; exactly len(self) steps (the wrap-around below is a guard for a
        # base sampler that yields fewer rows than n_new).
        order = [i for batch in self.base for i in batch]
        pos = 0
        for step in range(len(self)):
            k = math.floor((step + 1) * q) - math.floor(step * q)
            want, remaining = max(1, self.batch_size - k), len(order) - pos
            n = min(want, remaining) if remaining > 0 else want  # past the end only under DDP: wrap around
            new = [order[(pos + j) % len(order)] for j in range(n)]
            pos += n
            yield new + take(k)
