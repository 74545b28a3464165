"""``trainer.activation_checkpointing``: each decoder layer's activations are recomputed in the backward
instead of kept from the forward, on one device or under DDP (FSDP wraps its layers itself:
``trainer.fsdp.activation_checkpointing``).

It is transformers' own per-layer checkpointing (every decoder layer is a ``GradientCheckpointingLayer``),
non-reentrant: a layer's input needs no gradient (LoRA's frozen embedding), the random state of dropout
is replayed, so the losses and gradients are those of the run without it, and it composes with
``trainer.compile`` (the compiled layers run again in the backward) and master weights. It saves the
layers' inner activations (attention and MLP intermediates) for about one more forward per step;
``bench/activation_checkpointing.py`` measures both.
"""

from __future__ import annotations

import torch

from ftexp.models.base import decoder_layer_classes, unwrap_adapter


def set_activation_checkpointing(model: torch.nn.Module, on: bool) -> None:
    """Turn per-decoder-layer checkpointing on or off (a transformers model, under a peft wrapper or not)."""
    base = unwrap_adapter(model)
    # transformers >= 5.x names it activation_checkpointing_*; earlier releases gradient_checkpointing_*
    enable = getattr(base, "activation_checkpointing_enable", None) or getattr(base, "gradient_checkpointing_enable",
                                                                              None)
    if on:
        if enable is None or not getattr(base, "supports_gradient_checkpointing", False):
            raise ValueError(f"trainer.activation_checkpointing: {type(base).__name__} does not support "
                             "activation checkpointing (transformers' supports_gradient_checkpointing is false); "
                             "set trainer.activation_checkpointing=false")
        key = "activation_checkpointing_kwargs" if enable.__name__.startswith("activation") else \
            "gradient_checkpointing_kwargs"
        enable(**{key: {"use_reentrant": False}})
    elif checkpointed_layers(model):
        disable = getattr(base, "activation_checkpointing_disable", None) or base.gradient_checkpointing_disable
        disable()


def checkpointed_layers(model: torch.nn.Module) -> int:
    """How many decoder layers run checkpointed in training (0 when it is off)."""
    layers = tuple(decoder_layer_classes(model))
    return sum(1 for m in model.modules() if layers and isinstance(m, layers) and getattr(m, "gradient_checkpointing",
                                                                                        False) is True)
