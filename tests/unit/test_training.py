"""The training module: schedule, completion-only loss, and that a stage actually learns."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch

from ftexp.data.datamodule import Batching, FineTuneDataModule
from ftexp.mitigation.base import Mitigation
from ftexp.training.module import FineTuneModule, adamw_kernels, completion_loss, warmup_cosine
from ftexp.training.throughput import Throughput
from ftexp.config.preflight import ConfigError, check_overrides, compose_config
from tests.helpers.models import tiny_lm


def test_warmup_then_cosine_to_the_floor():
    total, warm = 100, 10
    assert warmup_cosine(0, total, warm, 0.0) == 0.1
    assert warmup_cosine(9, total, warm, 0.0) == 1.0
    assert math.isclose(warmup_cosine(55, total, warm, 0.0), 0.5, abs_tol=1e-9)
    assert math.isclose(warmup_cosine(100, total, warm, 0.1), 0.1)
    values = [warmup_cosine(s, total, warm, 0.0) for s in range(warm, total)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_completion_loss_ignores_prompt_tokens():
    model = tiny_lm()
    ids = torch.tensor([[1, 5, 6, 7, 20, 2]])
    mask = torch.ones_like(ids)
    only_completion = torch.tensor([[-100, -100, -100, -100, 20, 2]])
    loss = completion_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": only_completion})
    logp = torch.log_softmax(model(input_ids=ids).logits[0], -1)
    expected = -(logp[3, 20] + logp[4, 2]) / 2
    assert torch.isclose(loss, expected, atol=1e-5)


def rows(n=64):
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        prompt = torch.randint(5, 15, (4,), generator=gen).tolist()
        label = 20 + prompt[0] % 3  # learnable: the label follows from the first prompt token
        out.append({"input_ids": [1, *prompt, label, 2], "labels": [-100] * 5 + [label, 2]})
    return out


class CountingMitigation(Mitigation):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def training_loss(self, loss, batch, model, outputs=None):
        self.calls += 1
        return loss * 1.0, {"penalty": torch.tensor(0.0)}


def test_a_stage_learns_and_calls_the_mitigation_hook():
    pl.seed_everything(0, verbose=False)
    model = tiny_lm()
    data = rows()
    dm = FineTuneDataModule(data, data[:16], Batching(pad_id=0, batch_size=8, seed=0))
    with torch.no_grad():
        before = float(sum(completion_loss(model, b) for b in dm.val_dataloader()))
    mitigation = CountingMitigation()
    module = FineTuneModule(model, compose_config([]).optim, lr=3e-3, mitigation=mitigation)
    throughput = Throughput(flops_per_token=6.0 * 1000, peak_flops=1e9)
    trainer = pl.Trainer(max_epochs=8, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[throughput],
                         log_every_n_steps=4)
    trainer.fit(module, datamodule=dm)
    assert model.training  # trained in train mode although it arrived in eval mode
    with torch.no_grad():
        after = float(sum(completion_loss(model, b) for b in dm.val_dataloader()))
    assert after < 0.5 * before
    assert mitigation.calls == trainer.global_step == 64
    summary = throughput.summary()
    assert summary["effective_tokens"] == sum(len(r["input_ids"]) for r in data) * 8
    assert summary["tokens_per_s"] > 0 and "val/loss" in trainer.callback_metrics
    assert math.isclose(summary["mfu"], summary["tokens_per_s"] * 6000 / 1e9)
    assert math.isclose(summary["effective_mfu"], summary["effective_tokens_per_s"] * 6000 / 1e9)
    assert "train/mfu" in trainer.callback_metrics  # logged during training too


def _optimizer_after_two_steps(overrides, precision="32-true", clip=1.0):
    pl.seed_everything(0, verbose=False)
    data = rows()
    dm = FineTuneDataModule(data, data[:8], Batching(pad_id=0, batch_size=8, seed=0))
    module = FineTuneModule(tiny_lm(), compose_config(overrides).optim, lr=3e-3)
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", precision=precision, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, gradient_clip_val=clip)
    trainer.fit(module, datamodule=dm)
    return trainer.optimizers[0], module.model


def _max_difference(a, b):
    return max(float((x - y).detach().abs().max()) for x, y in zip(a.parameters(), b.parameters()))


def test_optim_implementation_picks_adamw_s_kernels():
    """auto: fused on GPUs and CPUs unless fp16's loss scaling meets clipping, torch's default elsewhere;
    an explicit choice reaches the optimizer and trains to the same weights within rounding."""
    assert adamw_kernels("auto", "cuda", fp16_clipping=False) == {"fused": True}
    assert adamw_kernels("auto", "cuda", fp16_clipping=True) == {}
    assert adamw_kernels("auto", "cpu", fp16_clipping=False) == {"fused": True}
    assert adamw_kernels("auto", "cpu", fp16_clipping=True) == {}
    assert adamw_kernels("auto", "mps", fp16_clipping=False) == {}
    assert adamw_kernels("foreach", "cpu", fp16_clipping=False) == {"foreach": True}
    fused, fused_model = _optimizer_after_two_steps(["optim.implementation=fused"])
    loop, loop_model = _optimizer_after_two_steps(["optim.implementation=for_loop"])
    auto, _ = _optimizer_after_two_steps([])
    assert fused.defaults["fused"] and not loop.defaults["foreach"] and not loop.defaults["fused"]
    assert auto.defaults["fused"]  # on the CPU too
    assert _max_difference(fused_model, loop_model) < 1e-6
    assert _max_difference(fused_model, tiny_lm()) > 1e-4  # it trained


def test_a_fused_adamw_is_clipped_under_bf16_mixed():
    """Lightning refuses to clip a fused optimizer under any mixed precision (for fp16's loss scaling);
    ftexp clips it under bf16-mixed as any precision does: the same steps as the for-loop AdamW, with a
    clipping threshold small enough to change them."""
    fused, fused_model = _optimizer_after_two_steps(["optim.implementation=fused"], "bf16-mixed", clip=0.01)
    _, loop_model = _optimizer_after_two_steps(["optim.implementation=for_loop"], "bf16-mixed", clip=0.01)
    _, unclipped = _optimizer_after_two_steps(["optim.implementation=for_loop"], "bf16-mixed", clip=0.0)
    assert fused.defaults["fused"]
    assert _max_difference(fused_model, loop_model) < 1e-6
    assert _max_difference(unclipped, loop_model) > 1e-4  # the threshold binds


def test_optim_implementation_is_checked():
    with pytest.raises(ConfigError, match="optim.implementation='fast'"):
        check_overrides(["optim.implementation=fast"])
    with pytest.raises(ConfigError, match="unscales the fp16 gradients"):
        check_overrides(["optim.implementation=fused", "trainer.precision=16-mixed"])
    check_overrides(["optim.implementation=fused", "trainer.precision=16-mixed", "trainer.gradient_clip_val=0"])
    check_overrides(["optim.implementation=fused", "trainer.precision=bf16-mixed"])


def test_mfu_counts_6n_for_full_fine_tuning_and_about_4n_for_lora():
    from types import SimpleNamespace

    from peft import LoraConfig, get_peft_model

    from ftexp.training.stage import mfu_inputs

    model = tiny_lm()
    n = sum(p.numel() for p in model.parameters())
    cpu = SimpleNamespace(accelerator="cpu", get=lambda key: None)
    assert mfu_inputs(model, cpu) == (6.0 * n, None)  # no peak known for a CPU: no MFU
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    flops, peak = mfu_inputs(lora, SimpleNamespace(accelerator="cpu", get=lambda key: 2.0))
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert flops == 4.0 * sum(p.numel() for p in lora.parameters()) + 2.0 * trainable and peak == 2e12
    assert 4.0 * n < flops < 6.0 * n  # frozen base weights get no weight gradients


def test_peak_flops_by_device_name():
    from ftexp.utils.devices import PEAK_BF16_TFLOPS, lookup

    assert lookup("NVIDIA H100 80GB HBM3", PEAK_BF16_TFLOPS) == 989.0
    assert lookup("NVIDIA H100 PCIe", PEAK_BF16_TFLOPS) == 756.0  # the longer name wins
    assert lookup("NVIDIA GH200 480GB", PEAK_BF16_TFLOPS) == 989.0
    assert lookup("NVIDIA H200 NVL", PEAK_BF16_TFLOPS) == 835.0 and lookup("NVIDIA H200", PEAK_BF16_TFLOPS) == 989.0
    assert lookup("NVIDIA L40S", PEAK_BF16_TFLOPS) == 362.0 and lookup("NVIDIA L4", PEAK_BF16_TFLOPS) == 121.0
    assert lookup("Tesla T4", PEAK_BF16_TFLOPS) is None


class StepLosses(pl.Callback):
    def __init__(self):
        self.losses, self.logged = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        if "train/loss" in trainer.callback_metrics:
            self.logged.append((trainer.global_step, float(trainer.callback_metrics["train/loss"])))


def test_train_loss_is_logged_every_n_steps_as_the_window_mean():
    pl.seed_everything(0, verbose=False)
    data = rows(48)
    dm = FineTuneDataModule(data, data[:8], Batching(pad_id=0, batch_size=8, seed=0))
    module = FineTuneModule(tiny_lm(), compose_config([]).optim, lr=3e-3)
    losses = StepLosses()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[losses],
                         log_every_n_steps=4, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    # 12 steps, windows of 4: the value logged at steps 4, 8, 12 is the mean of that window's losses.
    changes = {step: value for step, value in losses.logged}
    for end in (4, 8, 12):
        window = losses.losses[end - 4:end]
        assert math.isclose(changes[end], sum(window) / 4, rel_tol=1e-5), (end, changes[end], window)
    assert "lr" in trainer.callback_metrics


def test_best_weights_are_restored_at_the_end_of_the_stage():
    from types import SimpleNamespace

    from ftexp.training.best_weights import BestWeights

    module = torch.nn.Linear(2, 1)
    module.bias.requires_grad_(False)
    trainer = SimpleNamespace(sanity_checking=False, callback_metrics={}, global_step=0)
    keeper = BestWeights()
    for step, (loss, weight) in enumerate([(2.0, 1.0), (1.0, 2.0), (1.5, 3.0)], start=1):
        with torch.no_grad():
            module.weight.fill_(weight)
            module.bias.fill_(weight)
        trainer.global_step, trainer.callback_metrics["val/loss"] = step, torch.tensor(loss)
        keeper.on_validation_end(trainer, module)
    keeper.on_fit_end(trainer, module)
    assert module.weight.eq(2.0).all() and keeper.best_step == 2  # the best check's weights
    assert module.bias.eq(3.0).all()  # frozen parameters are not copied or touched
    assert float(trainer.callback_metrics["val/loss"]) == 1.0


def test_early_stopping_ends_a_stage_once_validation_stops_improving(tiny_overrides, toy_data):
    import json
    from pathlib import Path

    from ftexp.job import run_job

    cfg = compose_config([*tiny_overrides, f"data.path={toy_data}", "data.n_train=null", "data.n_test=null",
                          "data.slices=[]", "trainer.max_epochs=200", "trainer.early_stopping_patience=2",
                          "model.batch_size=4", "model.lr=1e-2", "save_model=false"])
    run_job(cfg)
    stage = json.loads((Path(cfg.output_dir) / "results.json").read_text())["stages"][0]
    assert stage["epochs"] < 200 and stage["best_step"] <= stage["steps"]
    assert stage["best_step"] % 6 == 0  # validation runs once per epoch of 6 steps (24 examples / 4)


def test_a_stage_resumed_from_its_final_checkpoint_reports_the_whole_stage(tmp_path):
    """Killed after the last epoch's checkpoint but before the stage's own: on resume fit trains no
    more, and the stage's tokens, training time and last losses come from the checkpoint."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    def fit(ckpt_path=None):
        pl.seed_everything(0, verbose=False)
        data = rows()
        dm = FineTuneDataModule(data, data[:16], Batching(pad_id=0, batch_size=8, seed=0))
        module = FineTuneModule(tiny_lm(), compose_config([]).optim, lr=3e-3)
        throughput = Throughput()
        saver = ModelCheckpoint(dirpath=str(tmp_path), filename="last", save_on_train_epoch_end=True,
                                enable_version_counter=False)
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_model_summary=False, callbacks=[throughput, saver], log_every_n_steps=4)
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        return trainer, module, throughput.summary()

    whole, _, summary = fit()
    resumed, module, again = fit(str(tmp_path / "last.ckpt"))
    assert resumed.global_step == whole.global_step == 16
    assert again["tokens"] == summary["tokens"] > 0 and again["effective_tokens"] == summary["effective_tokens"]
    assert 0.5 * summary["train_time_s"] < again["train_time_s"] <= summary["train_time_s"] * 1.5
    assert module.losses_at_checkpoint == {k: float(whole.callback_metrics[k]) for k in ("train/loss", "val/loss")}


def test_a_stage_shorter_than_the_logging_interval_still_has_a_train_loss_and_logs_its_progress(caplog):
    """Three steps, log_every_n_steps=20: train/loss is never logged, the stage's summary takes the mean
    of its steps; every validation leaves a line in the log (where no progress bar is drawn)."""
    import logging

    pl.seed_everything(0, verbose=False)
    data = rows(24)
    dm = FineTuneDataModule(data, data[:8], Batching(pad_id=0, batch_size=8, seed=0))
    module = FineTuneModule(tiny_lm(), compose_config([]).optim, lr=3e-3, mitigation=Recording())
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=20)
    with caplog.at_level(logging.INFO, logger="ftexp.training.module"):
        trainer.fit(module, datamodule=dm)
    assert "train/loss" not in trainer.callback_metrics and trainer.global_step == 3
    assert math.isclose(module.unlogged_train_loss(), sum(module.mitigation.losses) / 3, rel_tol=1e-6)
    assert f"epoch 0, step 3: val/loss {float(trainer.callback_metrics['val/loss']):.4f}" in caplog.text


class Recording(Mitigation):
    def __init__(self):
        super().__init__()
        self.losses = []

    def training_loss(self, loss, batch, model, outputs=None):
        self.losses.append(float(loss))
        return loss, {}
