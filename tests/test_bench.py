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
    assert [(r[0], r[1]) for r in table] == [(case, side) for case in ("lora7b", "full1b")
                                            for side in ("plain", "ftexp", "ftexp+f", "ftexp+m")]
    assert all(float(r[2]) > 0 for r in table)  # tokens/s
    assert all(float(r[-1]) > 0 for r in table if r[1] != "plain")  # each ftexp side's ratio to the plain loop


@pytest.mark.slow
def test_gpu_throughput_script_adds_the_compiled_sides():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_throughput.py"), "--tiny", "--case", "full1b",
                           "--compile", "--sides", "plain+c", "ftexp+c", "ftexp+cs", "--steps", "4", "--warmup", "2"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line.split() for line in done.stdout.splitlines() if line.startswith("full1b")]
    assert [r[1] for r in table] == ["plain+c", "ftexp+c", "ftexp+cs"]
    assert all(float(r[2]) > 0 for r in table) and all(float(r[-1]) > 0 for r in table[1:])  # vs compiled plain


@pytest.mark.slow
def test_fused_loss_benchmark_runs_on_a_short_model():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "fused_loss.py"), "--layers", "1", "--steps", "3",
                           "--warmup", "1", "--repeats", "1", "--batch-size", "4"], capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 layers" in done.stdout and float(done.stdout.split("ratio fused/plain (time per step): ")[1].split()[0]) > 0


@pytest.mark.slow
def test_compile_time_benchmark_compares_the_scopes():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "compile_time.py"), "--layers", "1", "--steps", "3",
                           "--batch-size", "2", "--seq", "16"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    table = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()
             if line.startswith(("eager ", "layers ", "step "))}
    assert list(table) == ["eager", "layers", "step"]
    assert float(table["eager"][0]) < min(float(table["layers"][0]), float(table["step"][0]))  # compiling: 1st step
    assert "layers/step: first step" in done.stdout
