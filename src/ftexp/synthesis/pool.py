"""A pool of generated texts per label, in sample order, optionally kept in a locked JSONL file."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional

from ftexp.utils.cache import file_lock
from ftexp.utils.io import atomic_write_text

log = logging.getLogger(__name__)


class Pool:
    """Generated texts per label, in sample order; kept in a JSONL file when ``path`` is given.

    Use it as a context manager: the file is locked while in use, so parallel jobs with the same
    key wait for each other instead of writing the same samples twice.
    """

    def __init__(self, path: Optional[Path], persist: bool = True) -> None:
        self.path, self.persist = path, persist
        self.texts: Dict[str, List[str]] = {}
        self._lock: Optional[contextlib.ExitStack] = None

    def __enter__(self) -> "Pool":
        if self.path is not None and self.persist:
            self._lock = contextlib.ExitStack()
            self._lock.enter_context(file_lock(self.path.with_suffix(".lock")))
        if self.path is not None and self.path.is_file():
            self._read()
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _read(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                # A job killed mid-write leaves a partial last line: keep the good prefix. Every
                # sample is fixed by its seed, so what is cut is regenerated identically.
                log.warning("synthetic cache %s, line %d is incomplete; regenerating from there", self.path, n + 1)
                if self._lock is not None:
                    atomic_write_text(self.path, "".join(x + "\n" for x in lines[:n]))
                return
            self.texts.setdefault(rec["label"], []).append(rec["text"])

    def extend(self, new: Dict[str, List[str]]) -> None:
        for label, texts in new.items():
            self.texts.setdefault(label, []).extend(texts)
        if self.path is None or not self.persist:
            return
        with self.path.open("a", encoding="utf-8") as f:
            for label, texts in new.items():
                for t in texts:
                    f.write(json.dumps({"label": label, "text": t}) + "\n")
