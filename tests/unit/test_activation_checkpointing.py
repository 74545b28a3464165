"""trainer.activation_checkpointing: the layers run again in the backward, and training is the same."""

from __future__ import annotations

import pytest
import torch

from ftexp.training.activation_checkpointing import checkpointed_layers, set_activation_checkpointing
from tests.helpers.master_weights import train_bf16
from tests.helpers.models import tiny_lm, train_tiny


@pytest.fixture
def mlp_calls(monkeypatch):
    """The decoder layers' MLP forwards, counted: a checkpointed layer's forward runs once more in the backward
    (the count by class; torch's recompute does not call module hooks)."""
    from transformers.models.mistral.modeling_mistral import MistralMLP

    calls = []
    forward = MistralMLP.forward

    def counted(self, *args, **kwargs):
        calls.append(1)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(MistralMLP, "forward", counted)
    return calls


@pytest.mark.parametrize("lora", [False, True])
def test_checkpointed_training_has_the_same_losses_and_reruns_each_layer(lora, mlp_calls):
    def model():
        m = tiny_lm().train()
        m.config.hidden_dropout = m.config.attention_dropout = 0.1  # dropout's random state must be replayed
        if lora:
            from peft import LoraConfig, get_peft_model

            m = get_peft_model(m, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        return m

    plain, checkpointed = model(), model()
    set_activation_checkpointing(checkpointed, True)
    assert checkpointed_layers(checkpointed) == 2
    losses, _ = train_tiny(plain)
    plain_calls = len(mlp_calls)
    checkpointed_losses, _ = train_tiny(checkpointed)
    assert checkpointed_losses == pytest.approx(losses, rel=1e-6, abs=1e-7)
    training_calls = 6 * 2  # six steps, two layers: each ran once more in the backward
    assert len(mlp_calls) - plain_calls == plain_calls + training_calls
    set_activation_checkpointing(checkpointed, False)
    assert checkpointed_layers(checkpointed) == 0


def test_checkpointing_composes_with_compiled_layers():
    model = tiny_lm().train()
    set_activation_checkpointing(model, True)
    losses, _ = train_tiny(model, compile=True)
    eager, _ = train_tiny(tiny_lm().train())
    assert losses == pytest.approx(eager, rel=1e-4)


def test_fsdp_points_at_its_own_setting():
    from ftexp.config.preflight import compose_config
    from ftexp.config.validate import problems

    cfg = compose_config(["trainer=fsdp", "trainer.activation_checkpointing=true"])
    assert any(p.startswith("trainer.activation_checkpointing=True: Lightning's FSDP") and
               "trainer.fsdp.activation_checkpointing=true" in p for p in problems(cfg))


def test_a_model_without_checkpointing_support_is_refused_by_name():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="Linear does not support activation checkpointing"):
        set_activation_checkpointing(model, True)


def test_checkpointing_composes_with_master_weights():
    """bf16-true with fp32 master copies: the checkpointed run steps to the same weights."""
    plain, _, _ = train_bf16(master_weights=True, lr=1e-3)
    model = tiny_lm().train()
    set_activation_checkpointing(model, True)
    checkpointed, _, _ = train_bf16(master_weights=True, lr=1e-3, model=model)
    assert checkpointed_layers(checkpointed) == 2
    for a, b in zip(plain.parameters(), checkpointed.parameters()):
        assert torch.equal(a, b)
