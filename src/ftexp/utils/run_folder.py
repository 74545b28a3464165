"""One run per folder, and folders that can be written.

A run holds an exclusive lock on its folder from before it writes anything until it has written its
results, so a second run started into the same folder (at the same moment, or while the first is
training) is refused, naming the holder, instead of mixing the two runs' files or deleting the first
one's checkpoints. The kernel drops the lock when the holder exits, so a killed run leaves none behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Iterator, Optional

from filelock import FileLock, Timeout

from ftexp.errors import FtexpError

LOCK_FILE = ".ftexp.lock"


class RunFolderError(FtexpError):
    """The run folder is in use by another run, or cannot be written."""


@contextlib.contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """Create ``run_dir`` and hold its lock for the body; refused (one paragraph) when another run holds
    it or the folder cannot be written."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK_FILE
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        path.touch()  # an unwritable folder is said here, not inside the lock's retries
    except OSError as exc:
        raise RunFolderError(unwritable(run_dir, exc)) from None
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunFolderError(f"{run_dir} is in use by another run ({holder(path)}). Two runs in one folder "
                             "would mix their files, and the second would delete the first one's checkpoints. "
                             "Wait for it to end, or start this run in another hydra.run.dir / "
                             "hydra.sweep.dir.") from None
    try:
        path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}), encoding="utf-8")
        yield
    finally:
        lock.release()


def holder(path: Path) -> str:
    """The process that holds the lock, as it wrote itself into the lock file."""
    try:
        who = json.loads(path.read_text(encoding="utf-8"))
        return f"process {who['pid']} on {who['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet said which"


def unwritable(folder: Path, exc: OSError) -> str:
    return (f"cannot write to the run folder {folder} ({exc.strerror or exc}). Make it writable, or give the run "
            f"another folder with hydra.run.dir=... (a sweep: hydra.sweep.dir=...).")


def unwritable_reason(folder: Path) -> Optional[str]:
    """Why ``folder`` (which need not exist yet) could not be created and written, or None."""
    folder = Path(folder).absolute()
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None:
        return None
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None
