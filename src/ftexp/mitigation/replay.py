"""``mitigation=replay``: earlier stages' training examples mixed into every later step.

The buffer holds at most ``buffer_size`` examples of everything trained on so far: a seeded
reservoir sample (uniform over all examples seen) or, ``balanced``, a reservoir per label with an
equal share each. ``ratio`` is the fraction of each step's examples that are replayed; ``mode``
says whether they replace part of the step (the batch keeps its size) or come on top of it.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Dict, List

import torch

from ftexp.data.base import Example
from ftexp.data.replay_batches import ReplayMix, ReplayRows
from ftexp.mitigation.base import Mitigation, StageContext


class Reservoir:
    """Algorithm R: after n offers, each offered item is kept with probability capacity / n."""

    def __init__(self, capacity: int, rng: random.Random) -> None:
        self.capacity, self.rng, self.seen, self.items = capacity, rng, 0, []

    def offer(self, item: Any) -> None:
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(item)
        else:
            j = self.rng.randrange(self.seen)
            if j < self.capacity:
                self.items[j] = item


class Replay(Mitigation):
    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        if cfg.sampling not in ("reservoir", "balanced"):
            raise ValueError(f"mitigation.sampling='{cfg.sampling}': must be 'reservoir' or 'balanced'")
        self.rng = random.Random(0)
        self.pool = Reservoir(cfg.buffer_size, self.rng)  # sampling=reservoir
        self.by_label: Dict[str, Reservoir] = {}  # sampling=balanced
        self.replayed = 0
        self.total = 0

    def buffer(self) -> List[Any]:
        if self.cfg.sampling == "reservoir":
            return list(self.pool.items)
        share = max(1, self.cfg.buffer_size // max(1, len(self.by_label)))
        return [ex for label in sorted(self.by_label) for ex in self.by_label[label].items[:share]]

    def before_stage(self, ctx: StageContext) -> None:
        self.rng.seed(ctx.seed * 7_919 + ctx.index)
        self.replayed = self.total = 0
        examples = self.buffer()
        if examples and self.cfg.ratio > 0:
            ctx.datamodule.install(ReplayRows(ctx.encode(examples), ReplayMix(self.cfg.ratio, self.cfg.mode)))
            ctx.extras["replay_buffer"] = len(examples)

    def after_stage(self, ctx: StageContext) -> None:
        for ex in ctx.task.splits["train"]:
            if ex.origin == "replay":
                continue
            replayed = ex.__class__(**{**ex.__dict__, "origin": "replay"})
            if self.cfg.sampling == "reservoir":
                self.pool.offer(replayed)
            else:
                key = f"{ctx.task.name}/{ex.label}"
                self.by_label.setdefault(key, Reservoir(self.cfg.buffer_size, self.rng)).offer(replayed)

    def state_dict(self) -> Dict[str, Any]:
        """The reservoirs (examples as plain dicts). The generator is reseeded at every stage start."""
        def dump(r: Reservoir) -> Dict[str, Any]:
            return {"seen": r.seen, "items": [dataclasses.asdict(ex) for ex in r.items]}

        return {"pool": dump(self.pool), "by_label": {k: dump(r) for k, r in self.by_label.items()}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        def load(saved: Dict[str, Any]) -> Reservoir:
            r = Reservoir(self.cfg.buffer_size, self.rng)
            r.seen, r.items = saved["seen"], [Example(**ex) for ex in saved["items"]]
            return r

        self.pool = load(state["pool"])
        self.by_label = {k: load(v) for k, v in state["by_label"].items()}

    def training_loss(self, loss: torch.Tensor, batch: Dict[str, torch.Tensor], model, outputs=None):
        mark = batch.get("is_replay")
        if mark is None:
            return loss, {}
        # a tensor sum, not int(): reading it back every step would stall the GPU
        self.replayed = self.replayed + mark.sum()
        self.total += mark.numel()
        return loss, {"replay_ratio": self.replayed / max(1, self.total)}
