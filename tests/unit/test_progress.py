"""Progress of long work: plain lines without a terminal, Rich bars and log lines apart in one."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from ftexp.utils import progress


@pytest.fixture
def plain_lines(caplog):
    """Progress as a job without a terminal shows it, a line per update; restored afterwards."""
    before = progress.mode(), progress._settings.every_s
    progress.configure("log", every_s=0)
    caplog.set_level(logging.INFO, logger="ftexp.progress")
    yield caplog
    progress._settings.mode, progress._settings.every_s = before


def messages(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "ftexp.progress"]


def test_work_logs_how_far_it_is_its_rate_and_the_time_left(plain_lines):
    with progress.track("row 1 · generation · medquad", total=40, unit="answers") as work:
        work.advance(10)
        work.advance(10, note="loss 2.5")
    lines = messages(plain_lines)
    assert lines[0].startswith("row 1 · generation · medquad: 10/40 answers (25%), ")
    assert "/s, " in lines[0] and lines[0].endswith(" left")
    assert lines[1].startswith("row 1 · generation · medquad: 20/40 answers (50%)") and lines[1].endswith(
        "left, loss 2.5")
    assert lines[-1].startswith("row 1 · generation · medquad: done, 20 answers in 0:0")


def test_work_of_unknown_size_counts_without_a_time_left(plain_lines):
    for _ in progress.iterate(iter(range(3)), "EWC Fisher · stage 1 · a", unit="batches"):
        pass
    lines = messages(plain_lines)
    assert lines[:3] == [line for line in lines[:3] if "left" not in line]
    assert lines[2].startswith("EWC Fisher · stage 1 · a: 3 batches, ")


def test_iterate_counts_an_item_done_when_the_next_is_asked_for(plain_lines):
    seen = []
    for item in progress.iterate([1, 2, 3], "work", unit="items"):
        seen.append((item, messages(plain_lines)[-1] if messages(plain_lines) else None))
    assert seen[0] == (1, None)
    assert seen[1][1].startswith("work: 1/3 items") and seen[2][1].startswith("work: 2/3 items")


def test_short_work_says_nothing_between_its_lines(caplog):
    progress.configure("log", every_s=3600)
    caplog.set_level(logging.INFO, logger="ftexp.progress")
    with progress.track("quick", total=5) as work:
        work.advance(5)
    assert messages(caplog) == []  # no line before every_s passed, so no "done" line either


def test_other_ranks_and_off_show_nothing(caplog):
    caplog.set_level(logging.INFO, logger="ftexp.progress")
    assert progress.configure("log", every_s=0, rank=1) == "off"
    assert progress.training_callbacks("stage 1 · a") == []
    with progress.track("hidden", total=2) as work:
        work.advance(2)
    assert messages(caplog) == []
    progress.configure("log", every_s=30)


def test_auto_is_plain_lines_without_a_terminal_and_a_bad_mode_is_refused(capsys):
    assert progress.configure("auto") == "log"  # pytest's captured stdout is no terminal
    with pytest.raises(ValueError, match="progress.mode='bars'"):
        progress.configure("bars")


def test_clock():
    assert [progress.clock(s) for s in (0, 59.6, 61, 3723)] == ["0:00", "1:00", "1:01", "1:02:03"]


def test_log_lines_go_through_rich_console_and_keep_format_level_and_filters(monkeypatch):
    """In a terminal the handler that wrote to stdout prints through Rich's console (so above a live bar);
    file handlers stay."""
    out = io.StringIO()
    monkeypatch.setattr(progress, "get_console", lambda: Console(file=out, width=60, force_terminal=True,
                                                                 color_system=None))
    root = logging.getLogger()
    saved = list(root.handlers)
    stream, file_handler = logging.StreamHandler(__import__("sys").stdout), logging.FileHandler(
        "/dev/null")
    stream.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
    stream.setLevel(logging.WARNING)
    stream.addFilter(lambda record: "secret" not in record.getMessage())
    try:
        root.handlers = [stream, file_handler]
        progress.route_console_logging()
        assert isinstance(root.handlers[1], progress.ConsoleHandler) and root.handlers[0] is file_handler
        log = logging.getLogger("ftexp.x")
        log.warning("a [bold]line[/bold] longer than the sixty columns of this console, kept on one line")
        log.warning("a secret")
        log.info("below the level")
    finally:
        root.handlers = saved
        file_handler.close()
    assert out.getvalue() == ("[ftexp.x] a [bold]line[/bold] longer than the sixty columns of this console, "
                              "kept on one line\n")
