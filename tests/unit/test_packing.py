"""Sequence packing: the same examples, logits and loss as padded batches, in fewer rows."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch

from ftexp.config.preflight import ConfigError, check_overrides, compose_config
from ftexp.data.datamodule import Batching, FineTuneDataModule, pad_batch
from ftexp.data.packing import (first_fit_decreasing, flatten_batch, pack_batch, pack_rows, real_tokens,
                                spread_evenly)
from ftexp.training.module import FineTuneModule, completion_loss
from tests.helpers.models import StepLosses, tiny_lm, varied_rows


def test_first_fit_decreasing_respects_the_capacity_and_keeps_every_item():
    lengths = [9, 3, 7, 2, 5, 5, 1, 8, 12]
    bins = first_fit_decreasing(lengths, capacity=10)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins if len(b) > 1)
    assert [8] in bins  # longer than the capacity: a row of its own
    assert len(bins) == 5  # the other 40 tokens fill 4 rows of exactly 10: the least possible


def test_pack_rows_spreads_a_step_over_the_fewest_rows_and_narrows_the_widest():
    def widths(lengths, bins):
        return [sum(lengths[i] for i in b) for b in bins]

    lengths = [30, 28, 25, 20, 18, 15, 12, 10, 8, 5]
    assert widths(lengths, first_fit_decreasing(lengths, 64)) == [63, 63, 45]  # a batch 63 wide, 18 % padding
    rows = pack_rows(lengths, 64)
    assert sorted(i for b in rows for i in b) == list(range(len(lengths)))
    assert len(rows) == 3 and max(widths(lengths, rows)) == 58  # 171 tokens: 57 at best; 2 % padding
    assert max(widths(lengths, spread_evenly(lengths, 3))) == 59  # longest first into the emptiest row
    # where nothing narrower is found, first-fit's rows stay
    lengths = [3, 3, 3, 8, 6, 5, 7]
    assert max(widths(lengths, pack_rows(lengths, 12))) == 12
    assert pack_rows(lengths, 12) == first_fit_decreasing(lengths, 12)


def test_pack_rows_never_needs_more_rows_or_width_than_first_fit():
    """Random steps, examples longer than the capacity included: every example once, no more rows
    than first-fit-decreasing, never wider, and never wider than the capacity or the longest example."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(500):
        capacity = int(torch.randint(8, 64, (1,), generator=gen))
        lengths = torch.randint(1, capacity + 8, (int(torch.randint(1, 40, (1,), generator=gen)),),
                                generator=gen).tolist()
        rows, fewest = pack_rows(lengths, capacity), first_fit_decreasing(lengths, capacity)
        assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
        assert len(rows) == len(fewest)
        width = max(sum(lengths[i] for i in r) for r in rows)
        assert width <= max(sum(lengths[i] for i in r) for r in fewest)
        assert width <= max(capacity, max(lengths))


def test_packed_logits_and_loss_equal_the_padded_batch():
    model = tiny_lm()
    rows = varied_rows(12)
    padded, packed = pad_batch(rows, pad_id=0), pack_batch(rows, pad_id=0, capacity=32)
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0]
    assert packed["input_ids"].numel() < padded["input_ids"].numel()  # less padding
    assert real_tokens(packed) == real_tokens(padded) == sum(len(r["input_ids"]) for r in rows)
    with torch.no_grad():
        assert math.isclose(float(completion_loss(model, packed)), float(completion_loss(model, padded)), rel_tol=1e-5)
        logits = model(input_ids=packed["input_ids"], attention_mask=packed["attention_mask"],
                       position_ids=packed["position_ids"]).logits
        assert torch.isfinite(logits).all()  # padding attends to itself: no NaN
        # each example's logits in its packed row equal those of the example alone
        checked = 0
        for r in range(packed["input_ids"].shape[0]):
            starts = (packed["position_ids"][r] == 0) & packed["token_mask"][r]
            bounds = [*starts.nonzero().flatten().tolist(), int(packed["token_mask"][r].sum())]
            for a, b in zip(bounds, bounds[1:]):
                alone = model(input_ids=packed["input_ids"][r:r + 1, a:b]).logits[0]
                assert torch.allclose(logits[r, a:b], alone, atol=1e-5)
                checked += 1
        assert checked == len(rows)


def test_a_flattened_batch_keeps_each_example_apart_through_position_ids_alone():
    """The layout for varlen attention kernels: one unpadded row, no mask. transformers reads the
    example boundaries from where position_ids restart, for sdpa (a block mask it builds) as for
    flash-attention (cu_seqlens): the logits of each example equal those of the example alone."""
    from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

    model = tiny_lm()
    rows = varied_rows(12)
    flat, padded = flatten_batch(rows), pad_batch(rows, pad_id=0)
    lengths = [len(r["input_ids"]) for r in rows]
    assert flat["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in flat
    assert real_tokens(flat) == real_tokens(padded)
    (cu_seqlens, _), (longest, _) = prepare_fa_kwargs_from_position_ids(flat["position_ids"])
    assert cu_seqlens.tolist() == [0, *torch.tensor(lengths).cumsum(0).tolist()] and int(longest) == max(lengths)
    # the varlen arguments the batch carries (so that no layer derives them) are the same
    assert flat["cu_seq_lens_q"].tolist() == flat["cu_seq_lens_k"].tolist() == cu_seqlens.tolist()
    assert flat["cu_seq_lens_q"].dtype == torch.int32 and flat["max_length_q"] == flat["max_length_k"] == max(lengths)
    with torch.no_grad():
        assert math.isclose(float(completion_loss(model, flat)), float(completion_loss(model, padded)), rel_tol=1e-5)
        logits = model(input_ids=flat["input_ids"], position_ids=flat["position_ids"], use_cache=False).logits[0]
        at = 0
        for r in rows:
            n = len(r["input_ids"])
            alone = model(input_ids=torch.tensor([r["input_ids"]])).logits[0]
            assert torch.allclose(logits[at:at + n], alone, atol=1e-5)
            at += n


def test_packing_flattens_batches_for_attention_that_reads_position_ids():
    """flash-attention and flex attention get the flat layout (through a LoRA wrapper too); sdpa and
    eager the 4-D mask."""
    from peft import LoraConfig, get_peft_model

    from ftexp.models.attention import reads_position_ids, takes_flat_batches

    assert not takes_flat_batches(tiny_lm("sdpa")) and not takes_flat_batches(tiny_lm("eager"))
    assert all(reads_position_ids(k) for k in ("flash_attention_2", "flash_attention_4", "kernels-community/flash-attn2"))
    assert not reads_position_ids("paged|sdpa")
    flex = tiny_lm("flex_attention")
    assert takes_flat_batches(flex)
    assert takes_flat_batches(get_peft_model(flex, LoraConfig(r=2, target_modules=["q_proj"])))


@pytest.mark.parametrize("impl, ok", [("sdpa", True), ("eager", True), ("flash_attention_2", True),
                                      ("flex_attention", True), ("paged|sdpa", False)])
def test_packing_with_attention_that_takes_neither_layout_is_refused_at_composition(impl, ok):
    overrides = ["model=smollm2_135m", f"model.attn_implementation={impl}", "trainer.packing=true"]
    if ok:
        check_overrides(overrides)
    else:
        with pytest.raises(ConfigError, match=r"model.attn_implementation='paged\|sdpa': trainer.packing needs"):
            check_overrides(overrides)


def _train(pack_length, pack_flat=False):
    pl.seed_everything(0, verbose=False)
    model = tiny_lm()
    rows = varied_rows(96, seed=1)
    dm = FineTuneDataModule(rows, rows[:16], Batching(pad_id=0, batch_size=16, seed=0, group_by_length=False,
                                                      pack_length=pack_length, pack_flat=pack_flat))
    steps = StepLosses()
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[steps])
    trainer.fit(FineTuneModule(model, compose_config([]).optim, lr=3e-3), datamodule=dm)
    return steps.losses, float(trainer.callback_metrics["val/loss"])


def test_a_packed_stage_takes_the_same_steps_as_a_padded_one():
    padded, val_padded = _train(None)
    packed, val_packed = _train(48)
    assert len(packed) == len(padded) == 18
    assert all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(packed, padded)), (packed, padded)
    assert math.isclose(val_packed, val_padded, rel_tol=1e-4)
    assert padded[-1] < 0.7 * padded[0]  # and it learned something
    flat, val_flat = _train(None, pack_flat=True)
    assert all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(flat, padded)), (flat, padded)
    assert math.isclose(val_flat, val_padded, rel_tol=1e-4)


def test_trainer_packing_runs_a_job_with_the_same_losses(tiny_overrides, tmp_path, monkeypatch):
    """trainer.packing=true through the whole run: same steps and losses as the padded run, in rows
    with a 4-D mask and, as a flash-attention model gets them, flat (sdpa stands in for the kernel
    here: transformers builds the same boundaries from position_ids)."""
    import json

    import ftexp.training.stage
    from ftexp.job import run_job

    out = {}
    packing = ["trainer.packing=true", "trainer.pack_length=192"]
    for name, extra in (("padded", []), ("packed", packing), ("flat", packing)):
        monkeypatch.setattr(ftexp.training.stage, "takes_flat_batches", lambda model: name == "flat")
        cfg = compose_config([*tiny_overrides, *extra, "trainer.group_by_length=false", "save_model=false",
                              f"output_dir={tmp_path / name}"])
        run_job(cfg)
        out[name] = json.loads((tmp_path / name / "results.json").read_text())["stages"][0]
    for name in ("packed", "flat"):
        assert out[name]["steps"] == out["padded"]["steps"]
        assert out[name]["effective_tokens"] == out["padded"]["effective_tokens"]  # the same examples
        for key in ("train/loss", "val/loss"):
            assert math.isclose(out[name][key], out["padded"][key], rel_tol=1e-4), (name, key)
    assert out["packed"]["tokens"] < 0.8 * out["padded"]["tokens"]  # far fewer computed (padded) tokens
    assert out["flat"]["tokens"] == out["flat"]["effective_tokens"]  # no padding at all
