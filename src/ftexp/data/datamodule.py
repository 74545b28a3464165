"""Tokenised splits -> padded batches for Lightning."""

from __future__ import annotations

import dataclasses
import itertools
import random
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler

from ftexp.data.packing import flatten_batch, long_tensor, pack_batch
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
        return {**row, "lent": True} if isinstance(index, Lent) else row


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


@dataclass
class Batching:
    """How a :class:`FineTuneDataModule` cuts its rows into batches."""

    pad_id: int
    batch_size: int  # rows of an optimiser step: the global batch, split over the devices
    seed: int  # shuffles each epoch's batches
    num_workers: int = 0  # loader processes (they change no batch)
    val_batch_size: Optional[int] = None  # None: twice batch_size
    group_by_length: bool = True  # batches of similar-length rows (see LengthGroupedBatches)
    pack_length: Optional[int] = None  # pack each training step's examples into rows of this many tokens
    pack_flat: bool = False  # ... or into one unpadded row (position_ids mark the examples)


class TrainingBatches:
    """How the training batches are drawn: as the DataModule draws them (this class), or as a strategy
    installed on it says (:meth:`FineTuneDataModule.install`; e.g. replay mixes earlier rows in). The
    DataModule asks it for the rows its loader indexes, the batches of indices into them (around its
    own seeded batches), and what to add to a collated batch."""

    def rows(self, train: List[Encoded]) -> List[Encoded]:
        """The rows the training loader indexes: ``train`` first."""
        return train

    def batches(self, own: Sampler, n_train: int, batching: Batching) -> Sampler:
        """The batches of indices into :meth:`rows`, given the DataModule's own over its ``n_train`` rows."""
        return own

    def finish(self, rows: List[Encoded], batch: Dict[str, Any]) -> Dict[str, Any]:
        """The batch collated from ``rows``, with what this plan adds to it."""
        return batch

    def identity(self) -> Tuple[Dict[str, List[Any]], Dict[str, Any]]:
        """The rows and settings of its own that decide the batches (for the stage cache's key; a plan
        names them so that no two plans give the same)."""
        return {}, {}


class FineTuneDataModule(pl.LightningDataModule):
    """Shuffled (seeded) training batches of similar lengths; ordered validation batches."""

    def __init__(self, train: List[Encoded], val: List[Encoded], batching: Batching) -> None:
        super().__init__()
        self.train, self.val, self.batching = train, val, batching
        self.val_batch_size = batching.val_batch_size or batching.batch_size * 2
        self.plan = TrainingBatches()
        self._resume_at: Optional[Tuple[int, int]] = None  # (epoch, batches done) from a checkpoint

    def install(self, plan: TrainingBatches) -> None:
        """Draw the training batches as ``plan`` says (e.g. :class:`ftexp.data.replay_batches.ReplayRows`)."""
        self.plan = plan

    def identity(self) -> Tuple[Dict[str, List[Any]], Dict[str, Any]]:
        """What decides this module's batches, for the stage cache's key: the rows by name, and the
        settings (the installed plan's among them; not num_workers, which changes no batch)."""
        plan_rows, plan_settings = self.plan.identity()
        settings = {k: v for k, v in dataclasses.asdict(self.batching).items() if k != "num_workers"}
        settings.update(val_batch_size=self.val_batch_size, **plan_settings)
        return {"train": self.train, "val": self.val, **plan_rows}, settings

    def _collate(self, rows: List[Encoded]) -> Dict[str, Any]:
        b = self.batching
        if b.pack_flat:
            batch = flatten_batch(rows)
        elif b.pack_length:
            batch = pack_batch(rows, b.pad_id, b.pack_length)
        else:
            batch = pad_batch(rows, b.pad_id)
        if any(r.get("lent") for r in rows):  # a lent row comes alone (RankShare)
            batch["lent"] = True
        return batch

    def _collate_train(self, rows: List[Encoded]) -> Dict[str, Any]:
        return self.plan.finish(rows, self._collate(rows))

    def train_dataloader(self) -> DataLoader:
        b = self.batching
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        if b.batch_size < world:
            raise FtexpError(f"optim.batch_size={b.batch_size} is the global batch of an optimiser step, split "
                             f"over the {world} devices of this run: each device needs at least one row. Set "
                             f"optim.batch_size to {world} or more (a multiple of {world} keeps the devices "
                             "equally busy), or run on fewer devices (trainer.devices).")
        lengths = [len(r["input_ids"]) for r in self.train]
        own = LengthGroupedBatches(lengths, b.batch_size, b.seed, window=64 if b.group_by_length else 0)
        rows: Any = self.plan.rows(self.train)
        batches: Sampler = self.plan.batches(own, len(self.train), b)
        if world > 1:
            batches, rows = RankShare(batches, rank, world), LendingRows(rows)
        if self.trainer is None:
            return DataLoader(rows, batch_sampler=batches, collate_fn=self._collate_train, num_workers=b.num_workers)
        trainer = self.trainer
        batches = AtEpoch(batches, lambda: trainer.current_epoch, self._take_resume_at)
        return ResumableLoader(rows, batch_sampler=batches, collate_fn=self._collate_train,
                               num_workers=b.num_workers)

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
                          num_workers=self.batching.num_workers)
