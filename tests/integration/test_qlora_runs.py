"""peft=qlora end to end on a CPU (bitsandbytes' CPU backend): a two-stage run with each mitigation, every
row scored, the quantization recorded and the adapter saved with it (slow tier)."""

from __future__ import annotations

import json
import math

import pytest

from tests.helpers.cli import ftexp, small

pytestmark = [pytest.mark.slow]
pytest.importorskip("bitsandbytes", reason="pip install 'ftexp[qlora]'")

# Widths bitsandbytes' CPU kernels pack (multiples of 64 inputs); a few batches per stage.
QLORA = ["peft=qlora", "model.hidden_size=64", "model.intermediate_size=128", "experiment=forgetting",
         "trainer.limit_train_batches=4", "limit_eval_examples=32", "cache_stages=false", "cache_rows=false"]


@pytest.mark.parametrize("mitigation, extra", [
    ("ewc", ["+data@tasks.medquad=medquad", "evaluator=[classification,perplexity,generation]"]),
    ("lwf", []), ("replay", [])])
def test_a_two_stage_qlora_run_with_each_mitigation(mitigation, extra, data_dir, cache_dir, tmp_path):
    proc = ftexp(*small(data_dir, cache_dir, logger="none"), *QLORA, f"mitigation={mitigation}", *extra,
                 f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    q = results["model"]["quantization"]
    assert q["bits"] == 4 and q["quant_type"] == "nf4" and q["quantized_modules"] == 7  # every decoder linear
    assert q["unquantized_linears"] == ["lm_head"]
    assert len(results["rows"]) == 3 and results["continual"]["R"]
    assert all(s["steps"] == 4 and math.isfinite(s["train/loss"]) for s in results["stages"])
    assert json.loads((tmp_path / "adapter" / "quantization.json").read_text())["bits"] == 4
    if mitigation == "ewc":
        assert "test/rougeL" in results["rows"][-1]["metrics"]["medquad"]
    assert "Traceback" not in proc.stderr and "kernels-community" not in proc.stdout + proc.stderr
