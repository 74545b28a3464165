"""What a run prints: only what a user can act on, and a short summary at the end (slow tier)."""

from __future__ import annotations

import pytest

from tests.helpers.cli import ftexp, small

pytestmark = pytest.mark.slow

# Lines no user acts on: W&B's note on a setting nobody set, torch's deprecation inside Lightning, Lightning's
# hardware report and its step count.
NOISE = ("anonymous", "LeafSpec", "GPU available", "TPU available", "Loading `train_dataloader`")


def test_a_run_prints_no_noise_and_ends_with_a_short_summary(data_dir, cache_dir, tmp_path):
    proc = ftexp(*small(data_dir, cache_dir), f"hydra.run.dir={tmp_path}", env_extra={"WANDB_SILENT": "false"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = proc.stdout + proc.stderr
    assert not [line for line in printed.splitlines() if any(n in line for n in NOISE)]
    summary = proc.stdout[proc.stdout.index("ftexp: completed in"):].splitlines()
    assert 3 <= len(summary) <= 6 and all(len(line) < 120 for line in summary), summary
    assert summary[-2:] == [f"ftexp: results: {tmp_path / 'results.json'}", summary[-1]]
    assert summary[-1].startswith("ftexp: WandbLogger: ") and "test/accuracy=" in "".join(summary)
