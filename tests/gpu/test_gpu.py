"""GPU paths (skipped without CUDA): bf16-mixed training and evaluation, hub loading with LoRA, varlen
attention, the compiled master-weight step against torch's fused AdamW."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ftexp.config.preflight import compose_config
from ftexp.job import run_job
from tests.helpers import SHORT, TINY
from tests.helpers.master_weights import check_compiled_step_is_torchs_adamw
from tests.helpers.models import LABELS, PROMPTS, tiny_lm

pytestmark = pytest.mark.gpu


def test_label_scoring_on_the_gpu_matches_the_cpu():
    from ftexp.eval.classification import label_logprobs

    model = tiny_lm()
    cpu = label_logprobs(model, PROMPTS, LABELS, pad_id=0)
    gpu = label_logprobs(model.cuda(), PROMPTS, LABELS, pad_id=0)
    assert torch.allclose(cpu, gpu, atol=1e-3)


def test_tiny_run_on_one_gpu_in_bf16_mixed(tiny_overrides):
    cfg = compose_config([*tiny_overrides, "trainer=gpu", "trainer.enable_progress_bar=false"])
    run_job(cfg)
    res = json.loads((Path(cfg.output_dir) / "results.json").read_text())
    assert res["status"] == "completed" and res["device"].startswith("cuda:")
    assert res["config"]["trainer"]["precision"] == "bf16-mixed"
    assert 0.0 <= res["metrics"]["test/accuracy"] <= 1.0 and res["stages"][0]["tokens_per_s"] > 0


def test_hub_model_from_a_local_folder_trains_lora_on_the_gpu(tiny_overrides, tmp_path):
    """A SmolLM2-shaped (Llama) model with random weights saved locally stands in for the hub."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from ftexp.models.tokenizer import bpe_tokenizer

    tok = bpe_tokenizer([f"Query: card {i}\nIntent: card_arrival" for i in range(200)], 500, tmp_path / "tok")
    arch = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    folder = tmp_path / "smol"
    LlamaForCausalLM(arch).save_pretrained(folder)
    tok.save_pretrained(folder)
    keep = [o for o in tiny_overrides if o not in TINY] + SHORT  # the tiny run with the model below
    cfg = compose_config([*keep, "model=smollm2_135m", f"model.path={folder}", "model.max_length=64",
                          "trainer=gpu", "peft.r=4"])
    run_job(cfg)
    res = json.loads((Path(cfg.output_dir) / "results.json").read_text())
    assert res["status"] == "completed"
    assert res["model"]["parameters"]["trainable"] < res["model"]["parameters"]["total"] / 10
    assert (Path(cfg.output_dir) / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("impl", ["flash_attention_2", "flex_attention"])
def test_flattened_packing_keeps_examples_apart_in_varlen_attention_on_the_gpu(impl):
    """The layout packing gives these kernels (one unpadded row, no mask): each example's logits
    equal those of the example alone under sdpa, and the loss equals the padded batch's."""
    if impl == "flash_attention_2":
        pytest.importorskip("flash_attn")
    from ftexp.data.datamodule import pad_batch
    from ftexp.data.packing import flatten_batch
    from ftexp.training.module import completion_loss
    from tests.helpers.models import varied_rows

    rows = varied_rows(12)
    flat, padded = flatten_batch(rows), pad_batch(rows, pad_id=0)
    ref = tiny_lm(head_dim=16).cuda().to(torch.bfloat16)  # flex attention's kernels need heads of >= 16
    model = tiny_lm(impl, head_dim=16).cuda().to(torch.bfloat16)
    with torch.no_grad():
        flat = {k: v.cuda() if torch.is_tensor(v) else v for k, v in flat.items()}  # max_length_q/k are ints
        padded = {k: v.cuda() for k, v in padded.items()}
        assert abs(float(completion_loss(model, flat)) - float(completion_loss(ref, padded))) < 2e-2
        logits = model(input_ids=flat["input_ids"], position_ids=flat["position_ids"], use_cache=False).logits[0]
        at = 0
        for r in rows:
            n = len(r["input_ids"])
            alone = ref(input_ids=torch.tensor([r["input_ids"]], device="cuda")).logits[0]
            assert torch.allclose(logits[at:at + n].float(), alone.float(), atol=3e-2)
            at += n


@pytest.mark.parametrize("device", ["cuda"])  # on a CPU: tests/unit/test_master_weights_compiled.py
def test_the_compiled_step_is_torchs_adamw_on_the_copies_with_clipping_folded_in(device):
    """Five steps from the same bf16 gradients at a changing rate, clipped by norm: the compiled step's
    copies and moments equal torch's AdamW on the fp32 gradients clipped by clip_grad_norm_ (to float
    rounding), its weights are its copies rounded, no fp32 gradient was made, and the new rates did not
    recompile it (one graph per group)."""
    check_compiled_step_is_torchs_adamw(device)
