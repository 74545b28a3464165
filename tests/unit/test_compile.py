"""trainer.compile: the training forward and backward through torch.compile, in graphs that do not grow with
depth. That a compiled stage takes the eager one's steps: tests/integration/test_compiled_training.py (slow)."""

from __future__ import annotations

import pytest

from ftexp.config.preflight import compose_config
from ftexp.training.compiled import CompiledRegions
from tests.helpers.models import tiny_lm, train_tiny


@pytest.mark.parametrize("lora", [False, True])
def test_every_decoder_layer_shares_one_compiled_graph(monkeypatch, lora):
    """compile_scope=layers: one graph for 2 layers or 4, so compile time does not grow with depth, and
    no graph break in a layer (peft's LoRA layers included) or the loss. With LoRA the first layer's input
    needs no gradient (frozen embedding) and the others' does: two graphs for the layers, one for the loss."""
    import functools

    import torch
    from peft import LoraConfig, get_peft_model
    from torch._dynamo.utils import counters
    from transformers import MistralConfig, MistralForCausalLM

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))  # dynamo's graphs
    for depth in (2, 4):
        torch._dynamo.reset()
        counters.clear()
        model = MistralForCausalLM(MistralConfig(vocab_size=40, hidden_size=32, intermediate_size=64,
                                                 num_hidden_layers=depth, num_attention_heads=4,
                                                 num_key_value_heads=2))
        if lora:
            model = get_peft_model(model, LoraConfig(r=4, lora_dropout=0.1, target_modules="all-linear"))
        model.train()
        ids = torch.randint(0, 40, (2, 9))
        with CompiledRegions(model).active():
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        assert not counters["graph_break"], dict(counters["graph_break"])
        graphs = (2 if lora else 1) + 1  # and the loss's
        assert counters["stats"]["unique_graphs"] == graphs, (depth, dict(counters["stats"]))


def test_each_layer_class_gets_its_own_budget_of_compiled_variants(monkeypatch):
    """Every transformers decoder layer runs the same code, so dynamo counts two layer classes' variants
    against one limit and runs the rest eager. Here 3 variants (class A with and without an input that
    needs a gradient, class B with) against a limit of 2: all 3 must compile, and the limit comes back."""
    import functools

    import torch
    from torch._dynamo.utils import counters
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    class OtherDecoderLayer(LlamaDecoderLayer):
        pass

    model = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                         num_attention_heads=2, num_key_value_heads=1))
    for i in (1, 3):
        model.model.layers[i] = OtherDecoderLayer(model.config, i)
    model.model._no_split_modules = ["LlamaDecoderLayer", "OtherDecoderLayer"]
    model.model.embed_tokens.weight.requires_grad_(False)  # the first layer's input needs no gradient
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))  # dynamo only: fast
    torch._dynamo.reset()
    counters.clear()
    layers = CompiledRegions(model)
    ids = torch.randint(0, 40, (2, 9))
    with torch._dynamo.config.patch(recompile_limit=2):
        with layers.active():
            assert torch._dynamo.config.recompile_limit == 4
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        assert torch._dynamo.config.recompile_limit == 2
    loss.backward()
    assert counters["stats"]["unique_graphs"] == 3 + 1, dict(counters["frames"])  # the loss's too


def test_layers_and_loss_run_compiled_in_training_batches_only(monkeypatch):
    """compile_scope=layers: every decoder layer call and the loss of a training forward go through their
    compiled calls; validation (sanity check and each epoch's) and anything after fit run eager, so
    evaluation's shapes and KV cache cost no recompiles. torch.compile recorded, not run."""
    import torch
    from transformers.loss.loss_utils import ForCausalLMLoss

    compiled_calls, all_calls = [], []

    def record(fn, **kw):
        def compiled(*args, **kwargs):
            compiled_calls.append(getattr(fn, "__self__", fn))  # a layer, or the loss function
            return fn(*args, **kwargs)
        return compiled

    monkeypatch.setattr(torch, "compile", record)
    model = tiny_lm()
    layers = list(model.model.layers)
    for layer in layers:
        layer.register_forward_hook(lambda *a: all_calls.append(1))
    losses, _ = train_tiny(model=model, compile=True)
    assert compiled_calls == [*layers, ForCausalLMLoss] * len(losses)  # each step, each layer, then the loss
    assert len(all_calls) > len(losses) * len(layers)  # validation ran too, eagerly
    assert all(layer._compiled_call_impl is None for layer in layers)
    assert "_loss_function" not in model.__dict__ and model.loss_function is ForCausalLMLoss  # eager again


def test_a_loss_function_the_user_set_is_compiled_and_given_back():
    model = tiny_lm()

    def custom(logits, labels, vocab_size, **kwargs):
        return logits.float().mean()

    model.loss_function = custom
    regions = CompiledRegions(model)
    with regions.active():
        assert model.loss_function is not custom  # its compiled call
    assert model.loss_function is custom


def test_compile_scope_is_checked():
    from torch import nn

    from ftexp.config.preflight import ConfigError, check_overrides
    from ftexp.errors import FtexpError

    with pytest.raises(ConfigError, match="trainer.compile_scope='block': must be 'layers'"):
        check_overrides(["trainer.compile_scope=block"])
    with pytest.raises(FtexpError, match="Sequential names no decoder layer class.*compile_scope=step"):
        CompiledRegions(nn.Sequential(nn.Linear(2, 2)))


@pytest.mark.parametrize("scope", ["layers", "step"])
def test_trainer_compile_reaches_the_training_step(tiny_overrides, tmp_path, monkeypatch, scope):
    """The config keys get to the step that runs (torch.compile recorded, not run: compiling is slow
    on a CPU and tested in tests/integration/test_compiled_training.py): each decoder layer's call, or the
    step's forward."""
    import torch

    from ftexp.job import run_job
    from ftexp.training.module import forward

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(fn) or fn)
    run_job(compose_config([*tiny_overrides, "trainer.compile=true", f"trainer.compile_scope={scope}",
                            "trainer.max_steps=2", "save_model=false", f"output_dir={tmp_path / 'run'}"]))
    if scope == "step":
        assert compiled == [forward]
    else:
        *layers, loss = compiled
        assert layers and all(type(fn.__self__).__name__ == "MistralDecoderLayer" for fn in layers)
        assert loss.__name__ == "ForCausalLMLoss"
