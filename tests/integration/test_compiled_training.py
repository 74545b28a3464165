"""trainer.compile, compiled for real on a CPU (slow): a compiled stage takes the eager one's steps, with
activation checkpointing too."""

from __future__ import annotations

import math

import pytest

from tests.helpers.models import tiny_lm, train_tiny


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
