"""Under autocast the training step skips peft's fp32 copy of each adapter's input: same steps, no copies."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from ftexp.config.preflight import compose_config
from ftexp.data.datamodule import Batching, FineTuneDataModule
from ftexp.training.adapter_casts import AdapterInputCasts
from ftexp.training.module import FineTuneModule
from tests.helpers.models import tiny_lm, varied_rows


def _train_lora(monkeypatch, skip: bool, dropout: float = 0.0):
    """Three bf16-mixed steps of a bf16 model with peft's fp32 LoRA adapters; the adapters
    after them, and how many of the adapters' inputs peft cast to fp32 on the way."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    casts = []
    cast = BaseTunerLayer._cast_input_dtype

    def counting(self, x, dtype):
        out = cast(self, x, dtype)
        casts.extend([1] if out is not x else [])
        return out

    monkeypatch.setattr(BaseTunerLayer, "_cast_input_dtype", counting)
    if not skip:
        monkeypatch.setattr(AdapterInputCasts, "skip_under_autocast", lambda self, device_type: None)
    pl.seed_everything(0, verbose=False)
    model = get_peft_model(tiny_lm().to(torch.bfloat16), LoraConfig(r=4, target_modules="all-linear",
                                                                    lora_dropout=dropout))
    assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.float32}  # peft's default
    rows = varied_rows(24, seed=2)
    dm = FineTuneDataModule(rows, rows[:8], Batching(pad_id=0, batch_size=8, seed=0, group_by_length=False))
    module = FineTuneModule(model, compose_config([]).optim, lr=1e-2)
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", precision="bf16-mixed", logger=False, limit_val_batches=0,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    adapters = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return adapters, len(casts), module


def test_training_under_autocast_skips_peft_s_input_casts_and_takes_the_same_steps(monkeypatch):
    skipped, casts, module = _train_lora(monkeypatch, skip=True)
    monkeypatch.undo()
    cast, casts_before, _ = _train_lora(monkeypatch, skip=False)
    assert casts == 0 and casts_before > 0
    assert skipped.keys() == cast.keys() and all(torch.equal(skipped[k], cast[k]) for k in cast)
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in cast.items() if "lora_B" in k)  # it trained
    assert all(layer.cast_input_dtype_enabled for layer in module.adapter_casts.layers)  # back on for evaluation


def test_adapters_with_dropout_keep_the_cast(monkeypatch):
    """Dropout on the bf16 input would round its 1/(1-p) scale to bf16: there peft's cast stays."""
    with_feature, casts, _ = _train_lora(monkeypatch, skip=True, dropout=0.1)
    monkeypatch.undo()
    without, casts_before, _ = _train_lora(monkeypatch, skip=False, dropout=0.1)
    assert casts == casts_before > 0
    assert all(torch.equal(with_feature[k], without[k]) for k in without)
