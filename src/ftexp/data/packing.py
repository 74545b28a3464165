"""Sequence packing: the examples of one training step in fewer, fuller rows, with no attention or
loss across example boundaries.

A step keeps its examples (the same global batch as without packing), so the loss of a step is the
same number: only padding is dropped. Within a row every example sees only itself (a block-diagonal
causal mask, 4-D, which transformers' SDPA and eager attention take as given), its positions start
at 0, and the first token of each example is never a target (it would be predicted from the end of
the previous one). Rows are filled first-fit-decreasing up to ``capacity`` tokens.

Attention kernels that read example boundaries from ``position_ids`` (flash-attention's varlen
kernels, flex attention) need no mask at all: :func:`flatten_batch` puts the step's examples in
one row without padding, and transformers derives the boundaries from where positions restart.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch

Encoded = Dict[str, List[int]]


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> List[List[int]]:
    """Indices grouped into bins of at most ``capacity`` total length (a longer item gets a bin alone)."""
    bins: List[List[int]] = []
    free: List[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = lengths[i]
        slot = next((b for b, space in enumerate(free) if n <= space), None)
        if slot is None:
            bins.append([i])
            free.append(capacity - n)
        else:
            bins[slot].append(i)
            free[slot] -= n
    return bins


def pack_batch(rows: List[Encoded], pad_id: int, capacity: int) -> Dict[str, torch.Tensor]:
    """``rows`` packed into as few rows as fit ``capacity``: input_ids, labels, position_ids, a 4-D
    boolean ``attention_mask`` (rows x 1 x L x L; True = may attend) and ``token_mask`` (rows x L,
    True on real tokens, for throughput counts)."""
    lengths = [len(r["input_ids"]) for r in rows]
    bins = first_fit_decreasing(lengths, capacity)
    width = max(sum(lengths[i] for i in members) for members in bins)
    shape = (len(bins), width)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    labels = torch.full(shape, -100, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    segment = torch.full(shape, -1, dtype=torch.long)
    for r, members in enumerate(bins):
        at = 0
        for k, i in enumerate(members):
            n = lengths[i]
            ids[r, at:at + n] = torch.tensor(rows[i]["input_ids"])
            labels[r, at:at + n] = torch.tensor(rows[i]["labels"])
            labels[r, at] = -100  # not predicted from the previous example's last token
            positions[r, at:at + n] = torch.arange(n)
            segment[r, at:at + n] = k
            at += n
    real = segment >= 0
    same = (segment[:, :, None] == segment[:, None, :]) & real[:, :, None]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    # Padding attends to itself only: a query row with nothing to attend to would give NaN.
    mask = (same & causal) | torch.eye(width, dtype=torch.bool)
    return {"input_ids": ids, "labels": labels, "position_ids": positions, "attention_mask": mask[:, None],
            "token_mask": real}


def flatten_batch(rows: List[Encoded]) -> Dict[str, Any]:
    """``rows`` end to end in a single row with no padding and no attention mask: input_ids, labels
    and position_ids (restarting at 0 for each example) of shape 1 x total, and ``token_mask``.
    The example boundaries also go in as flash-attention's varlen arguments (``cu_seq_lens_*``,
    ``max_length_*``), so no layer has to derive them from position_ids (a device sync each);
    other attention implementations ignore them."""
    lengths = [len(r["input_ids"]) for r in rows]
    ids = torch.tensor([t for r in rows for t in r["input_ids"]], dtype=torch.long)[None]
    labels = torch.tensor([t if k else -100 for r in rows for k, t in enumerate(r["labels"])], dtype=torch.long)[None]
    positions = torch.tensor([k for n in lengths for k in range(n)], dtype=torch.long)[None]
    bounds = torch.tensor([0, *lengths], dtype=torch.int32).cumsum(0, dtype=torch.int32)
    return {"input_ids": ids, "labels": labels, "position_ids": positions,
            "token_mask": torch.ones_like(ids, dtype=torch.bool),
            "cu_seq_lens_q": bounds, "cu_seq_lens_k": bounds, "max_length_q": max(lengths),
            "max_length_k": max(lengths)}


def model_inputs(batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The keys of a (padded or packed) batch that the model takes, labels aside."""
    keys = ("input_ids", "attention_mask", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q",
            "max_length_k")
    return {k: batch[k] for k in keys if k in batch}


def real_tokens(batch: Dict[str, torch.Tensor]) -> int:
    """Non-pad tokens of a padded (2-D attention mask) or packed (``token_mask``) batch."""
    mask = batch.get("token_mask")
    return int((mask if mask is not None else batch["attention_mask"]).sum())
