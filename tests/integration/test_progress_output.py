"""Long work shows its progress while it runs: plain lines in a file, Rich bars in a terminal that log
lines never share a line with; a stage shorter than log_every_n_steps still logs its loss (slow tier)."""

from __future__ import annotations

import csv
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time

import pytest

from tests.helpers.cli import ftexp, small

pytestmark = pytest.mark.slow

# Two stages (Fisher between them), classification and generation rows: every kind of long work.
WORK = ["experiment=forgetting", "mitigation=ewc", "+data@tasks.medquad=medquad",
        "evaluator=[classification,generation]", "trainer.enable_progress_bar=true",
        "cache_rows=false", "cache_stages=false"]  # the work itself, not scores or weights from an earlier test
KINDS = {"training": r"stage 2 · cuad · training", "evaluation": r"row 1 · classification · cuad",
         "generation": r"row 1 · generation · medquad", "Fisher": r"EWC Fisher · stage 1 · banking77"}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def command(data_dir, cache_dir, run_dir, *extra):
    return [sys.executable, "-m", "ftexp", *small(data_dir, cache_dir, logger="none"), *WORK,
            f"hydra.run.dir={run_dir}", *extra]


def test_progress_lines_reach_a_file_while_the_work_runs(data_dir, cache_dir, tmp_path):
    out = tmp_path / "job.log"
    with open(out, "w") as file:
        proc = subprocess.Popen(command(data_dir, cache_dir, tmp_path / "run", "progress.every_s=0"),
                                stdout=file, stderr=subprocess.STDOUT, env={**os.environ, "TERM": "dumb"})
        seen_while_running = set()
        while proc.poll() is None:
            text = out.read_text()
            seen_while_running |= {kind for kind, what in KINDS.items() if f"{what}:" in text}
            time.sleep(0.2)
    text = out.read_text()
    assert proc.returncode == 0, text[-3000:]
    # Lines arrive as the job goes, not in one piece at its end ...
    assert {"training", "evaluation"} <= seen_while_running, seen_while_running
    # ... and say how far each piece of work is while it is not yet done, with the time it has left.
    for kind, what in KINDS.items():
        partial = [m for m in re.finditer(rf"\]\[ftexp\.progress\]\[INFO\] - {what}: (\d+)/(\d+) (\w+) .*\n", text)
                   if 0 < int(m.group(1)) < int(m.group(2))]
        assert partial and "left" in partial[0].group(0), (kind, text[-2000:])
    assert "epoch 1/1, train/loss " in text
    assert "━" not in text and "\r" not in text  # no bar drawn into the file


def run_in_terminal(cmd, columns=120):
    """``cmd``'s output as a terminal of ``columns`` columns shows it (a pseudo-terminal)."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns)}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(cmd, stdin=child, stdout=child, stderr=child, env=env, close_fds=True)
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


def test_terminal_bars_and_log_lines_never_share_a_line(data_dir, cache_dir, tmp_path):
    rc, raw = run_in_terminal(command(data_dir, cache_dir, tmp_path / "run"))
    lines = [s for s in re.split(r"[\r\n]", ANSI.sub("", raw)) if s.strip()]
    assert rc == 0, "\n".join(lines[-40:])
    bars = [s for s in lines if "━" in s]
    logs = [s for s in lines if re.search(r"\]\[[\w.]+\]\[(INFO|WARNING)\] - ", s)]
    assert any(s.startswith("stage 2 · cuad · epoch 1/1 ") for s in bars)  # the stage names its bar
    for what in ("row 1 · classification · cuad", "row 1 · generation · medquad", "EWC Fisher · stage 1"):
        assert any(s.startswith(what) and re.search(r"\d+/\d+ ", s) for s in bars), what
    assert any("row 1 (banking77): " in s for s in logs)
    # A log line starts its own line and holds no bar; a bar holds no log line.
    assert all(s.startswith("[20") and "━" not in s for s in logs), [s for s in logs if not s.startswith("[20")]
    assert not any("][INFO] - " in s for s in bars)
    assert not any("v_num" in s or "Epoch 0/0" in s for s in lines)


def test_a_stage_shorter_than_log_every_n_steps_logs_its_loss_curve(data_dir, cache_dir, tmp_path):
    proc = ftexp(*small(data_dir, cache_dir, logger="csv"), f"hydra.run.dir={tmp_path}", "data.n_train=80",
                 "trainer.log_every_n_steps=1000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "csv" / "metrics.csv", newline="") as file:
        losses = [row["train/loss"] for row in csv.DictReader(file) if row.get("train/loss")]
    assert len(losses) >= 2, losses  # 80 examples / batch 16 = 5 steps: a point at least every 2
