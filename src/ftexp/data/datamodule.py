"""Tokenised splits -> padded batches for Lightning."""

from __future__ import annotations

import itertools
import random
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler

from ftexp.data.packing import flatten_batch, long_tensor, pack_batch
from ftexp.data.replay_batches import ReplayBatches
from ftexp.errors import FtexpError

Encoded = Dict[str, List[int]]


def pad_batch(rows: List[Encoded], pad_id: int) -> Dict[str, torch.Tensor]:
    """Right-pad to the longest row of the batch; pads get label -100 and attention 0."""
    width = max(len(r["input_ids"]) for r in rows)
    gaps = [width - len(r["input_ids"]) for r in rows]
    ids = long_tensor([r["input_ids"] + [pad_id] * g for r, g in zip(rows, gaps)])
    labels = long_tensor([r["labels"] + [-100] * g for r, g in zip(rows, gaps)])
    mask = long_tensor([[1] * (width - g) + [0] * g for g in gaps])
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class LengthGroupedBatches(Sampler[List[int]]):
    """Shuffled batches of similar-length examples, so little of each batch is padding.

    Each epoch: shuffle, cut into windows of ``window`` batches, sort each window by length, cut it
    into batches, shuffle the batches. Seeded, and different every epoch. ``window=0`` gives plain
    shuffled batches. These are global batches: under DDP, :class:`RankShare` splits each one.
    """

    def __init__(self, lengths: List[int], batch_size: int, seed: int, window: int = 64) -> None:
        self.lengths, self.batch_size, self.seed, self.window = lengths, batch_size, seed, window
        self.epoch = 0

    def __len__(self) -> int:
        if not self.window:
            return (len(self.lengths) + self.batch_size - 1) // self.batch_size
        span, n = self.batch_size * self.window, len(self.lengths)
        full, rest = divmod(n, span)
        return full * self.window + (rest + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self._all_batches())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> List[List[int]]:
        rng = random.Random(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        if not self.window:
            return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        span = self.batch_size * self.window
        batches: List[List[int]] = []
        for start in range(0, len(order), span):
            window = sorted(order[start:start + span], key=self.lengths.__getitem__)
            batches.extend(window[i:i + self.batch_size] for i in range(0, len(window), self.batch_size))
        rng.shuffle(batches)
        return batches


class Lent(int):
    """The index of a row a rank computes on but does not learn from (see :class:`RankShare`)."""


class LendingRows:
    """``rows`` indexed by :class:`RankShare`'s batches: a :class:`Lent` row comes marked ``lent``, and its
    batch then adds no tokens to the loss (``ftexp.training.module.global_token_weight``)."""

    def __init__(self, rows: List[Any]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Any:
        row = self.rows[index]
        if not isinstance(index, Lent):
            return row
        if isinstance(row, tuple):  # (is_replay, row)
            return row[0], {**row[1], "lent": True}
        return {**row, "lent": True}


class RankShare(Sampler[List[int]]):
    """This rank's part of every global batch: rows ``rank``, ``rank + world``, ... So
    ``optim.batch_size`` is the batch of an optimiser step whatever the number of devices, and every
    rank takes the same number of steps. A batch with fewer rows than ranks (an epoch's last, short one)
    lends a row to each rank it leaves without one: that rank runs the forward and backward that DDP
    waits for, on a row marked :class:`Lent`, which adds nothing to the step (counted once, by its own
    rank, as in one process)."""

    def __init__(self, batches: Sampler, rank: int, world_size: int) -> None:
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __iter__(self) -> Iterator[List[int]]:
        for batch in self.batches:
            batch = list(batch)
            yield batch[self.rank::self.world_size] or [Lent(batch[self.rank % len(batch)])]


class AtEpoch(Sampler[List[int]]):
    """The batches of the epoch ``epoch()`` says (the trainer's): a run resumed at epoch k from a
    checkpoint draws the same batches as one that never stopped. ``resume_at()`` (epoch, batches
    done, from a checkpoint written inside an epoch; or None) makes that epoch skip what it had done."""

    def __init__(self, batches: Sampler, epoch: Callable[[], int],
                 resume_at: Callable[[], Optional[Tuple[int, int]]] = lambda: None) -> None:
        self.batches, self.epoch, self.resume_at = batches, epoch, resume_at

    def __len__(self) -> int:
        return len(self.batches)  # the whole epoch's: Lightning counts the skipped batches as done

    def __iter__(self) -> Iterator[List[int]]:
        # A generator: the epoch is read at the first batch, not when Lightning calls iter(), which
        # on resume happens before it has moved past the epoch the checkpoint closed (and before it
        # has restored the datamodule's position).
        epoch = self.epoch()
        self.batches.set_epoch(epoch)
        at = self.resume_at()
        yield from itertools.islice(self.batches, at[1] if at is not None and at[0] == epoch else 0, None)


class ResumableLoader(DataLoader):
    """The training loader, marked resumable inside an epoch for Lightning (it warns about a loader
    without ``state_dict``/``load_state_dict``). The position itself is the datamodule's state:
    Lightning builds this loader before it restores loader states (to count the steps), and would
    never hand them over."""

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass


class FineTuneDataModule(pl.LightningDataModule):
    """Shuffled (seeded) training batches of similar lengths; ordered validation batches."""

    def __init__(
        self,
        train: List[Encoded],
        val: List[Encoded],
        pad_id: int,
        batch_size: int,
        seed: int,
        num_workers: int = 0,
        val_batch_size: Optional[int] = None,
        group_by_length: bool = True,
        pack_length: Optional[int] = None,
        pack_flat: bool = False,
    ) -> None:
        super().__init__()
        self.group_by_length = group_by_length
        self.pack_length = pack_length  # pack each training step's examples into rows of this many tokens
        self.pack_flat = pack_flat  # ... or into one unpadded row (position_ids mark the examples)
        self.train, self.val = train, val
        self.pad_id, self.batch_size, self.seed = pad_id, batch_size, seed
        self.num_workers = num_workers
        self.val_batch_size = val_batch_size or batch_size * 2
        self.replay: List[Encoded] = []
        self._resume_at: Optional[Tuple[int, int]] = None  # (epoch, batches done) from a checkpoint
        self.replay_ratio, self.replay_mode = 0.0, "replace"

    def mix_in(self, rows: List[Encoded], ratio: float, mode: str) -> None:
        """Replay ``rows`` in every training step at ``ratio`` (see :class:`ReplayBatches`)."""
        self.replay, self.replay_ratio, self.replay_mode = list(rows), ratio, mode

    def _collate(self, rows: List[Encoded]) -> Dict[str, Any]:
        if self.pack_flat:
            batch = flatten_batch(rows)
        elif self.pack_length:
            batch = pack_batch(rows, self.pad_id, self.pack_length)
        else:
            batch = pad_batch(rows, self.pad_id)
        if any(r.get("lent") for r in rows):  # a lent row comes alone (RankShare)
            batch["lent"] = True
        return batch

    def _collate_marked(self, rows: List[Tuple[bool, Encoded]]) -> Dict[str, torch.Tensor]:
        batch = self._collate([r for _, r in rows])  # is_replay: one flag per example (not per packed row)
        batch["is_replay"] = torch.tensor([flag for flag, _ in rows], dtype=torch.bool)
        return batch

    def train_dataloader(self) -> DataLoader:
        lengths = [len(r["input_ids"]) for r in self.train]
        window = 64 if self.group_by_length else 0
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        if self.batch_size < world:
            raise FtexpError(f"optim.batch_size={self.batch_size} is the global batch of an optimiser step, split "
                             f"over the {world} devices of this run: each device needs at least one row. Set "
                             f"optim.batch_size to {world} or more (a multiple of {world} keeps the devices "
                             "equally busy), or run on fewer devices (trainer.devices).")
        batches: Sampler = LengthGroupedBatches(lengths, self.batch_size, self.seed, window=window)
        rows: List[Any] = self.train
        if self.replay:
            rows = [(False, r) for r in self.train] + [(True, r) for r in self.replay]
            batches = ReplayBatches(batches, len(self.train), len(self.replay), self.replay_ratio, self.replay_mode,
                                    self.batch_size, self.seed + 7919)
        if world > 1:
            batches, rows = RankShare(batches, rank, world), LendingRows(rows)
        collate = self._collate_marked if self.replay else self._collate
        if self.trainer is None:
            return DataLoader(rows, batch_sampler=batches, collate_fn=collate, num_workers=self.num_workers)
        trainer = self.trainer
        batches = AtEpoch(batches, lambda: trainer.current_epoch, self._take_resume_at)
        return ResumableLoader(rows, batch_sampler=batches, collate_fn=collate, num_workers=self.num_workers)

    # Checkpoints: the position inside the epoch (batches done), for a checkpoint written inside one.

    def state_dict(self) -> Dict[str, int]:
        if self.trainer is None:
            return {}
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed  # the trainer's count:
        return {"epoch": self.trainer.current_epoch, "batches_done": done}  # the loader fetches ahead

    def load_state_dict(self, state: Dict[str, int]) -> None:
        if state:
            self._resume_at = (state["epoch"], state["batches_done"])

    def _take_resume_at(self) -> Optional[Tuple[int, int]]:
        at, self._resume_at = self._resume_at, None
        return at

    def val_dataloader(self) -> DataLoader:
        rows = self.val
        if self.trainer is not None and self.trainer.world_size > 1:  # each rank a disjoint share
            rows = rows[self.trainer.global_rank::self.trainer.world_size]
        return DataLoader(rows, batch_size=self.val_batch_size, shuffle=False, collate_fn=self._collate,
                          num_workers=self.num_workers)
