"""Content addressing for the cache folder: stable hashes of settings and tensors, and a lock so
that concurrent jobs compute a shared artefact once (the others wait, then reuse it)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch


def content_hash(obj: Any) -> str:
    """A short hash of JSON-able settings (keys sorted, so dict order does not matter)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def update_with_tensors(h: "hashlib._Hash", tensors: Mapping[str, torch.Tensor]) -> None:
    """Feed names, dtypes, shapes and exact bytes of ``tensors`` (in name order) into ``h``."""
    for name in sorted(tensors):
        t = tensors[name].detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        t = t.to("cpu").contiguous()
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if missing). The kernel drops it when the
    holder exits, so a killed job never leaves a stale lock behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
