"""What each rank holds, for state that parts ways between the ranks of a DDP run."""

from __future__ import annotations

from typing import Any, List


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
