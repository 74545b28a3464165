"""The benchmark scripts run (at CPU-sized shapes): a GPU-only script must not rot where CI has no GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_throughput_script_runs_both_cases_at_tiny_shapes():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_throughput.py"), "--tiny", "--steps", "4",
                           "--warmup", "1"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line.split() for line in done.stdout.splitlines() if line.startswith(("lora7b", "full1b"))]
    assert [(r[0], r[1]) for r in table] == [("lora7b", "plain"), ("lora7b", "ftexp"), ("full1b", "plain"),
                                            ("full1b", "ftexp")]
    assert all(float(r[2]) > 0 for r in table) and float(table[1][-1]) > 0  # tokens/s and the ratio


@pytest.mark.slow
def test_gpu_throughput_script_adds_the_compiled_sides():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_throughput.py"), "--tiny", "--case", "full1b",
                           "--compile", "--steps", "4", "--warmup", "2"], capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line.split() for line in done.stdout.splitlines() if line.startswith("full1b")]
    assert [r[1] for r in table] == ["plain", "ftexp", "plain+c", "ftexp+c"]
    assert all(float(r[2]) > 0 for r in table) and float(table[3][-1]) > 0
