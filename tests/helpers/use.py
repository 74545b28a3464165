"""A run folder made in this process for ``ftexp merge`` / ``ftexp generate``: a tiny model, its adapter with
random (non-zero) LoRA weights or its full weights, saved as ``Run.finish`` saves them, and a results.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import torch
from omegaconf import OmegaConf

# Row 0 and the last row of the fake run: the card must show both.
ROWS = [{"index": 0, "stage": "base", "metrics": {"banking77": {"test/accuracy": 0.0125, "test/n": 80.0}}},
        {"index": 1, "stage": "finetune", "metrics": {"banking77": {"test/accuracy": 0.6375, "test/n": 80.0}}}]


def fake_run(run_dir: Path, overrides: List[str], seed: int = 0) -> Dict[str, Any]:
    """A completed run in ``run_dir`` of ``overrides`` (debug=tiny ...); the trained model, in this process."""
    from ftexp.config.preflight import compose_config
    from ftexp.use.load import load_base
    from ftexp.utils.build import build, typed

    cfg = compose_config([*overrides, f"output_dir={run_dir}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    base, tokenizer = load_base(OmegaConf.create(resolved))
    adapter = build(cfg.peft)
    model = adapter.apply(base, typed(cfg.model))
    generator = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():  # an adapter that changes the model (LoRA's B starts at zero)
        if "lora_B" in name or resolved["peft"]["_target_"].endswith("FullFinetune"):
            p.data += 0.3 * torch.randn(p.shape, generator=generator)
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = adapter.save(model, tokenizer, run_dir)
    train = Path(resolved["data_dir"]) / "banking77" / "train.jsonl"
    results = {"status": "completed", "run_dir": str(run_dir), "seed": seed, "overrides": overrides,
               "config": resolved, "rows": ROWS, "metrics": {"test/accuracy": 0.6375, "val/loss": 1.5},
               "stages": [{"index": 1, "steps": 8, "tokens": 11104.0, "train_time_s": 0.5}],
               "wall_time_s": {"total": 3.25}, "device": "cpu", "saved_to": str(saved),
               "model": {"name": "tiny", "weights": {"source": "random_init"}},
               "data": {"name": "banking77", "files": [{"source": "banking77", "split": "train", "path": str(train)}]}}
    (run_dir / "results.json").write_text(json.dumps(results))
    return {"model": model.eval(), "tokenizer": tokenizer, "results": results}
