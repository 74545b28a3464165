"""What each rank holds, for state that parts ways between the ranks of a DDP run."""

from __future__ import annotations

from typing import Any, List, Sequence

import torch


def every_rank(value: Any) -> List[Any]:
    """``value`` from every rank, rank k's at k (a collective under DDP: call it on every rank); in one
    process, ``[value]``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    values: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def own(values: List[Any], rank: int) -> Any:
    """Rank ``rank``'s entry of :func:`every_rank`'s list; a run resumed on more ranks than saved it
    gives the extra ones rank 0's."""
    return values[rank] if rank < len(values) else values[0]


def summed(values: Sequence[float], world_size: int, device: torch.device) -> List[float]:
    """``values`` added up over the ranks (a collective under DDP: call it on every rank), in float64."""
    if world_size == 1:
        return [float(v) for v in values]
    import torch.distributed as dist

    total = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()
