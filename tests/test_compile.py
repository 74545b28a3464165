"""trainer.compile: the training forward and backward through torch.compile, same steps as eager."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl

from ftexp.config.preflight import compose_config
from ftexp.data.datamodule import Batching, FineTuneDataModule
from ftexp.training.compiled import CompiledRegions
from ftexp.training.module import FineTuneModule, StepOptions
from tests.test_eval import tiny_lm
from tests.test_packing import StepLosses, varied_rows


def train_tiny(model=None, **module_options):
    """Six steps of the tiny model on fixed batches: the step losses and the trained module."""
    pl.seed_everything(0, verbose=False)
    rows = varied_rows(48, seed=2)
    dm = FineTuneDataModule(rows, rows[:16], Batching(pad_id=0, batch_size=16, seed=0, group_by_length=False))
    module = FineTuneModule(model or tiny_lm(), compose_config([]).optim, lr=3e-3, step=StepOptions(**module_options))
    steps = StepLosses()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[steps])
    trainer.fit(module, datamodule=dm)
    return steps.losses, module


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["layers", "step"])
def test_a_compiled_stage_takes_the_same_steps_as_an_eager_one(scope):
    from torch._dynamo.utils import counters

    counters.clear()
    eager, eager_module = train_tiny(compile=False)
    assert not counters["frames"]["ok"]
    compiled, compiled_module = train_tiny(compile=True, compile_scope=scope)
    assert counters["frames"]["ok"] > 0  # dynamo did compile the step
    # dropout-free model: the same draws, so the same losses (with dropout the masks differ)
    assert len(compiled) == len(eager) == 6
    assert all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(compiled, eager)), (compiled, eager)
    # the module itself is not wrapped: its parameter names (checkpoints, saved weights) are unchanged
    assert compiled_module.state_dict().keys() == eager_module.state_dict().keys()
    for (name, a), b in zip(compiled_module.model.named_parameters(), eager_module.model.parameters()):
        assert (a - b).abs().max() < 1e-4, name


@pytest.mark.slow
def test_compiled_regions_under_activation_checkpointing_take_the_eager_steps():
    """Activation checkpointing (trainer.fsdp.activation_checkpointing wraps each decoder layer the same
    way) reruns the layers in the backward: they must run compiled there too, or the recomputation finds
    other saved tensors than the forward's."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing
    from transformers.models.mistral.modeling_mistral import MistralDecoderLayer

    def checkpointed():
        model = tiny_lm()
        apply_activation_checkpointing(model, check_fn=lambda m: isinstance(m, MistralDecoderLayer))
        return model

    eager, _ = train_tiny(model=checkpointed())
    compiled, _ = train_tiny(model=checkpointed(), compile=True)
    assert len(compiled) == len(eager) == 6
    assert all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(compiled, eager)), (compiled, eager)


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
    on a CPU and tested above): each decoder layer's call, or the step's forward."""
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
