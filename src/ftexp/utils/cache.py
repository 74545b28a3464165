"""Content addressing for the cache folder: stable hashes of settings and tensors, a lock so that
concurrent jobs compute a shared artefact once (the others wait, then reuse it), and the reading of
an entry, which treats a damaged one as missing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, TypeVar

import torch
from filelock import FileLock

from ftexp.errors import FtexpError

log = logging.getLogger(__name__)

T = TypeVar("T")


class CacheDirError(FtexpError):
    """The cache folder (cache_dir) cannot be written."""


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
    """An exclusive advisory lock on ``path`` (created if missing), waited for. The kernel drops it when
    the holder exits, so a killed job never leaves a stale lock behind. A cache folder that cannot be
    written ends the job with a :class:`CacheDirError` naming it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()  # every cache entry is locked before it is read or written: the one place to say so
    except OSError as exc:
        raise CacheDirError(_unwritable(path, exc)) from None
    with FileLock(path):
        yield


def _unwritable(path: Path, exc: OSError) -> str:
    folder = next(p for p in path.parents if p.exists())  # the folder that refused the new file or folder
    return (f"cannot write to the cache folder {folder} ({exc.strerror or exc}): ftexp keeps tokenizers, trained "
            f"stages, evaluation rows and other shared artefacts under cache_dir, and must write there. Make "
            f"{folder} writable, or point FTEXP_CACHE_DIR (or cache_dir=...) at a folder you can write to")


def read_entry(entry: Path, read: Callable[[], T]) -> Optional[T]:
    """``read()`` of the cache entry ``entry`` (a file or a folder); None when there is none, or when
    it cannot be read: a damaged entry (cut short by a kill, a full disk or a copy) is deleted, with a
    warning naming it, and the caller builds it again as on a miss. Call it holding the entry's lock."""
    if not entry.exists():
        return None
    try:
        return read()
    # An entry holds nothing that cannot be made again, so whatever reading it raises means "build it
    # again"; the warning carries the error, so a fault of the reader itself still shows.
    except Exception as exc:  # noqa: BLE001
        reason = str(exc).splitlines()[0] if str(exc) else ""
        log.warning("cache: %s cannot be read (%s: %s); deleting it and building it again", entry,
                    type(exc).__name__, reason)
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        return None
