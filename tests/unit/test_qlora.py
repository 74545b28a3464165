"""peft=qlora: LoRA on 4-bit base weights (bitsandbytes through transformers), its refusals, what stays in
higher precision, what is saved, and that its gradients and EWC's Fisher are those of the dequantized model."""

from __future__ import annotations

import builtins
import json

import pytest
import torch

from ftexp.config.preflight import compose_config
from ftexp.config.validate import problems
from ftexp.models.quantize import (FourBit, QuantizationError, kept_precision, narrow_linears, quantized_modules,
                                   reload_quantized, require_backend, unquantized_linears)

bnb = pytest.importorskip("bitsandbytes", reason="pip install 'ftexp[qlora]'")


def tiny_llama(hidden=64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=120, hidden_size=hidden, intermediate_size=2 * hidden,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))


def qlora(model, compute_dtype="float32"):
    """The QLoRA adapter's way: 4-bit base (float32 compute for exact comparisons), then LoRA."""
    from ftexp.models.adapters import QLora

    cfg = compose_config(["peft=qlora", f"peft.compute_dtype={compute_dtype}", "peft.dropout=0"]).peft
    adapter = QLora(cfg)
    base = reload_quantized(model, adapter.quantization(torch.device("cpu")))
    lora_cfg = compose_config(["model=tiny"]).model
    lora_cfg.lora_target_modules = ["q_proj", "v_proj", "down_proj"]
    return adapter, adapter.apply(base, lora_cfg)


def test_the_config_composes_and_its_bad_values_and_combinations_are_refused():
    cfg = compose_config(["peft=qlora"])
    assert (cfg.peft.quant_type, cfg.peft.double_quant, cfg.peft.compute_dtype) == ("nf4", True, "bfloat16")
    assert problems(cfg) == []
    found = problems(compose_config(["peft=qlora", "peft.quant_type=int3", "peft.compute_dtype=int8"]))
    assert "peft.quant_type='int3': must be one of nf4, fp4" in found
    assert "peft.compute_dtype='int8': must be one of bfloat16, float16, float32" in found
    cast = problems(compose_config(["peft=qlora", "trainer=gpu", "trainer.precision=bf16-true"]))
    assert any(p.startswith("trainer.precision='bf16-true': casts the whole model") for p in cast)
    sharded = problems(compose_config(["peft=qlora", "trainer=fsdp"]))
    assert any(p.startswith("trainer.strategy='fsdp': FSDP would shard the 4-bit weights") for p in sharded)


def test_four_bit_settings_reach_transformers():
    four = FourBit(quant_type="fp4", double_quant=False, compute_dtype="float16", skip_modules=("lm_head", "x"),
                   device="cuda:1")
    kw = four.load_kwargs()
    q = kw["quantization_config"]
    assert kw["device_map"] == {"": "cuda:1"} and q.load_in_4bit and q.bnb_4bit_quant_type == "fp4"
    assert not q.bnb_4bit_use_double_quant and q.bnb_4bit_compute_dtype == torch.float16
    assert q.llm_int8_skip_modules == ["lm_head", "x"]
    assert four.record()["skip_modules"] == ["lm_head", "x"] and "device" not in four.record()


def test_a_missing_bitsandbytes_is_refused_with_the_install_line(monkeypatch):
    real_import = builtins.__import__

    def no_bnb(name, *args, **kwargs):
        if name.startswith("bitsandbytes"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bnb)
    with pytest.raises(QuantizationError, match=r"not installed: pip install 'ftexp\[qlora\]'"):
        require_backend(torch.device("cpu"))


def test_a_device_without_a_backend_is_refused_by_name(monkeypatch):
    require_backend(torch.device("cpu"))  # this bitsandbytes runs 4-bit layers on a CPU

    def no_kernel(*args, **kwargs):
        raise NotImplementedError("no kernel for this device")

    monkeypatch.setattr(bnb, "matmul_4bit", no_kernel)
    with pytest.raises(QuantizationError, match=rf"bitsandbytes {bnb.__version__} cannot run 4-bit weights on cpu "
                                                r"\(NotImplementedError: no kernel for this device\)"):
        require_backend(torch.device("cpu"))


def test_linear_layers_are_4_bit_but_the_output_layer_and_norms_and_embeddings_keep_their_precision():
    adapter, model = qlora(tiny_llama())
    four = quantized_modules(model)
    assert len(four) == 2 * 7 and all(n.endswith(("proj", "base_layer")) for n in four)  # 7 linears per layer
    assert [n.rsplit("model.", 1)[-1] for n in unquantized_linears(model)] == ["lm_head"]
    kept = kept_precision(model)
    assert kept[next(k for k in kept if k.endswith("embed_tokens.weight"))] == "float32"
    assert kept[next(k for k in kept if k.endswith("norm.weight"))] == "float32"
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)


def test_narrow_layers_keep_their_precision_on_a_cpu():
    model = tiny_llama(hidden=32)  # q_proj takes 32 inputs, down_proj 64
    assert {n.rsplit(".", 1)[-1] for n in narrow_linears(model)} == {"q_proj", "k_proj", "v_proj", "o_proj",
                                                                     "gate_proj", "up_proj", "lm_head"}
    four = reload_quantized(model, FourBit(compute_dtype="float32"))
    assert {n.rsplit(".", 1)[-1] for n in quantized_modules(four)} == {"down_proj"}


def dequantized_copy(model):
    """A plain model whose linear weights are the 4-bit ones dequantized (what QLoRA computes with)."""
    import copy

    import bitsandbytes.functional as F

    plain = copy.deepcopy(tiny_llama())
    state = plain.state_dict()
    base = model.get_base_model()
    for name in quantized_modules(base):
        module = base.get_submodule(name)
        key = name.replace(".base_layer", "") + ".weight"
        state[key] = F.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
    plain.load_state_dict(state)
    from peft import LoraConfig, get_peft_model

    ref = get_peft_model(plain, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                           target_modules=["q_proj", "v_proj", "down_proj"]))
    ref.load_state_dict({k: v for k, v in model.state_dict().items() if "lora_" in k}, strict=False)
    return ref


def lora_grads(model, ids):
    model.zero_grad(set_to_none=True)
    model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_gradients_are_those_of_the_dequantized_model():
    _, model = qlora(tiny_llama())
    with torch.no_grad():  # LoRA's B starts at zero: give it values so that every adapter's gradient flows
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    ref = dequantized_copy(model)
    ids = torch.randint(3, 120, (3, 12), generator=torch.Generator().manual_seed(1))
    got, want = lora_grads(model.train(), ids), lora_grads(ref.train(), ids)
    assert got.keys() == want.keys() and len(got) == 2 * 3 * 2
    for name in got:
        torch.testing.assert_close(got[name], want[name], rtol=1e-3, atol=1e-5, msg=name)


def test_ewc_fisher_on_4_bit_weights_equals_the_dequantized_models():
    from ftexp.mitigation.fisher import per_sample_fisher

    _, model = qlora(tiny_llama())
    ref = dequantized_copy(model)
    ids = torch.randint(3, 120, (4, 10), generator=torch.Generator().manual_seed(2))
    labels = ids.clone()
    labels[:, :4] = -100
    batch = [{"input_ids": ids, "labels": labels}]

    def fisher(m):
        return per_sample_fisher(m, batch, {n: p for n, p in m.named_parameters() if p.requires_grad})

    got, want = fisher(model), fisher(ref)  # one sample at a time here; vectorised there
    for name in want:
        # bitsandbytes dequantizes on the fly in its own blocks: within 1 % of the largest entry
        scale = float(want[name].abs().max())
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-2 * scale + 1e-12)


def test_the_adapter_is_saved_with_the_quantization_the_base_needs_and_no_base_weights(tmp_path):
    from safetensors.torch import load_file

    adapter, model = qlora(tiny_llama())
    tokenizer = type("Tok", (), {"save_pretrained": lambda self, folder: None})()
    folder = adapter.save(model, tokenizer, tmp_path)
    saved = load_file(folder / "adapter_model.safetensors")
    assert saved and all("lora_" in k for k in saved)
    settings = json.loads((folder / "quantization.json").read_text())
    assert settings == {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "float32",
                        "skip_modules": ["lm_head"], "bitsandbytes": bnb.__version__}
