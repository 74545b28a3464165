"""How far long work is, and the time it has left: in a terminal and without one.

In a terminal (``progress.mode=auto`` where stdout is one, or ``rich``) each piece of work is a Rich
bar: what it is, how far, the time spent and the time left. The console's log handler is routed through
Rich's console (:func:`configure`), so log lines print above the bars and never share a line with one.
Without a terminal (SLURM, ``nohup``, output sent to a file) a bar would be written once, at its end;
there each piece of work logs a plain line every ``progress.every_s`` seconds instead, and a last one
when it ends, if it took that long.

Work reports itself with :func:`track` (or :func:`iterate` over its items)::

    with track("row 1 · generation on squad", total=len(prompts), unit="answers") as work:
        for batch in batches:
            ...
            work.advance(len(batch))

Training reports through a Lightning callback of the same two kinds (:func:`training_callbacks`).
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, List, Optional, Sized, TypeVar

from rich import get_console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

log = logging.getLogger("ftexp.progress")

MODES = ("auto", "rich", "log", "off")
T = TypeVar("T")


@dataclass
class _Settings:
    mode: str = "log"  # as resolved by configure(): rich | log | off (library use before it: plain lines)
    every_s: float = 30.0
    bars: Optional[Progress] = None  # the shared Rich display while some work is open
    open: int = 0


_settings = _Settings()


def configure(mode: str = "auto", every_s: float = 30.0, rank: int = 0) -> str:
    """Choose how this process shows progress (rank 0 only shows it) and return the mode chosen.
    With Rich bars, the log lines that went to the terminal go through Rich's console instead."""
    if mode not in MODES:
        raise ValueError(f"progress.mode={mode!r}: must be one of {', '.join(MODES)}")
    if rank != 0:
        mode = "off"
    elif mode == "auto":
        console = get_console()
        mode = "rich" if console.is_terminal and not console.is_dumb_terminal else "log"
    _settings.mode, _settings.every_s = mode, float(every_s)
    if mode == "rich":
        route_console_logging()
    return mode


def mode() -> str:
    return _settings.mode


class ConsoleHandler(logging.Handler):
    """A log handler that prints through Rich's console: above any live bar, never glued to it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            get_console().print(self.format(record), markup=False, highlight=False, emoji=False, soft_wrap=True)
        except Exception:  # noqa: BLE001 - as logging.StreamHandler does: report, never raise
            self.handleError(record)


def route_console_logging() -> None:
    """Replace the root logger's handlers that write to the terminal (Hydra's ``console``) with a
    :class:`ConsoleHandler` of the same level, format and filters; file handlers stay as they are."""
    root = logging.getLogger()
    streams = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler.stream in streams:
            console = ConsoleHandler(handler.level)
            console.setFormatter(handler.formatter)
            for f in handler.filters:
                console.addFilter(f)
            root.removeHandler(handler)
            root.addHandler(console)


class Work:
    """One piece of work being done: ``advance`` it as its units get done."""

    def __init__(self, description: str, total: Optional[int], unit: str) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.done, self.note, self.lines = 0, "", 0
        self.started = self.shown = time.monotonic()
        self.task: Optional[TaskID] = None
        if _settings.mode == "rich":
            self.task = _bars().add_task(escape(description), total=total, unit=unit)

    def advance(self, n: int = 1, note: str = "") -> None:
        self.update(self.done + n, note)

    def update(self, done: int, note: str = "") -> None:
        """``done`` units so far; ``note``: what else to show (e.g. the loss)."""
        self.done, self.note = done, note
        if self.task is not None:
            _bars().update(self.task, completed=done, unit=f"{self.unit} {escape(note)}".rstrip())
        elif _settings.mode == "log" and time.monotonic() - self.shown >= _settings.every_s:
            self.shown = time.monotonic()
            self.lines += 1
            log.info("%s: %s", self.description, self.status())

    def status(self) -> str:
        """E.g. ``96/500 examples (19%), 12.3/s, 0:33 left, loss 2.31``."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        parts = [f"{self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%)"
                 if self.total else f"{self.done} {self.unit}", f"{rate:.3g}/s"]
        if self.total and 0 < self.done < self.total:
            parts.append(f"{clock((self.total - self.done) / rate)} left")
        return ", ".join(parts + ([self.note] if self.note else []))

    def close(self) -> None:
        if self.task is not None:
            _bars().remove_task(self.task)
        elif self.lines:  # it ran long enough to show progress: say when it ended
            log.info("%s: done, %d %s in %s", self.description, self.done, self.unit,
                     clock(time.monotonic() - self.started))


@contextmanager
def track(description: str, total: Optional[int] = None, unit: str = "items") -> Iterator[Work]:
    """A piece of work shown while the block runs (nothing with ``progress.mode=off``)."""
    work = Work(description, total, unit)
    _settings.open += 1
    try:
        yield work
    finally:
        _settings.open -= 1
        work.close()
        if _settings.open == 0 and _settings.bars is not None:
            _settings.bars.stop()  # Lightning's training bar is a display of its own: none may stay live
            _settings.bars = None


def iterate(items: Iterable[T], description: str, total: Optional[int] = None, unit: str = "items") -> Iterator[T]:
    """``items``, one by one, each counted done when the next is asked for."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with track(description, total, unit) as work:
        for item in items:
            yield item
            work.advance()


def clock(seconds: float) -> str:
    """``1:02:03`` or ``2:03``."""
    minutes, s = divmod(int(round(seconds)), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}" if hours else f"{m}:{s:02d}"


def _bars() -> Progress:
    if _settings.bars is None:
        _settings.bars = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(), TextColumn("<"), TimeRemainingColumn(), console=get_console(), transient=True)
        _settings.bars.start()
    return _settings.bars


def training_callbacks(title: str) -> List[Any]:
    """The Lightning callback that shows a fit's progress as this process does ([] with ``off``)."""
    from ftexp.training.progress_bars import LogProgress, StageBar

    if _settings.mode == "rich":
        return [StageBar(title)]
    return [LogProgress(title)] if _settings.mode == "log" else []
