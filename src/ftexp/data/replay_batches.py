"""Batches that mix replayed rows into each step at an exact ratio.

``replace``: a step keeps ``batch_size`` rows, of which about ``ratio`` are replayed (the new rows
of an epoch are spread over more steps). ``add``: a step has ``batch_size`` new rows plus replayed
ones on top, so that replayed rows are ``ratio`` of the step. The per-step replay count follows a
running total (k_i = floor((i+1)·q) − floor(i·q)), so over an epoch the realised ratio is the
configured one to within one row.

:class:`ReplayRows` is what ``mitigation=replay`` installs on a stage's DataModule: the buffer's rows,
marked ``is_replay`` in each batch, drawn by :class:`ReplayBatches`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Tuple

import torch
from torch.utils.data import Sampler

from ftexp.data.datamodule import Batching, Encoded, TrainingBatches


@dataclass(frozen=True)
class ReplayMix:
    """How replayed rows join a step: ``ratio`` of its rows, replacing new ones or added on top (``mode``).
    ``ReplayConfig.problems`` holds the values to [0, 1) and replace | add before a run starts."""

    ratio: float
    mode: str = "replace"


class ReplayBatches(Sampler[List[int]]):
    """Wraps a sampler of new-row batches (indices < ``n_new``); replayed rows are indices
    ``n_new + j`` into the buffer, drawn without repeats until the buffer is used up, then reshuffled."""

    def __init__(self, base: Sampler, n_new: int, n_replay: int, mix: ReplayMix, batch_size: int, seed: int) -> None:
        self.base, self.n_new, self.n_replay = base, n_new, n_replay
        self.ratio, self.mode, self.batch_size, self.seed = mix.ratio, mix.mode, batch_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.base.set_epoch(epoch)

    def _per_step(self) -> float:
        """Replayed rows per step, on average."""
        if self.mode == "replace":
            return self.batch_size * self.ratio
        return self.batch_size * self.ratio / (1 - self.ratio)

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


class ReplayRows(TrainingBatches):
    """Training batches with ``rows`` (earlier stages' examples, encoded) replayed in every step as
    ``mix`` says; each batch marks its replayed examples in ``is_replay`` (one flag per example)."""

    def __init__(self, rows: List[Encoded], mix: ReplayMix) -> None:
        self.replay, self.mix = list(rows), mix

    def rows(self, train: List[Encoded]) -> List[Encoded]:
        return [{**r, "is_replay": False} for r in train] + [{**r, "is_replay": True} for r in self.replay]

    def batches(self, own: Sampler, n_train: int, batching: Batching) -> Sampler:
        return ReplayBatches(own, n_train, len(self.replay), self.mix, batching.batch_size, batching.seed + 7919)

    def finish(self, rows: List[Encoded], batch: Dict[str, Any]) -> Dict[str, Any]:
        batch["is_replay"] = torch.tensor([r["is_replay"] for r in rows], dtype=torch.bool)
        return batch

    def identity(self) -> Tuple[Dict[str, List[Any]], Dict[str, Any]]:
        return {"replay": self.replay}, {"replay_ratio": self.mix.ratio, "replay_mode": self.mix.mode}
