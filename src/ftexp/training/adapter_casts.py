"""LoRA under autocast without peft's input casts.

peft keeps adapter weights in fp32 (its ``autocast_adapter_dtype``) and casts each adapted layer's input
to that dtype before the adapter: under bf16-mixed an fp32 copy of the activations for every adapted
linear layer (7 per decoder layer with LoRA on all of them), written, read, and cast straight back to
bf16 by autocast for the adapter's matmul. The values the matmul sees are the same without it (a bf16
value survives the round trip through fp32 exactly), so for the training step ftexp switches the cast
off (peft's ``cast_input_dtype_enabled``), from the forward to the end of the backward, where
activation checkpointing recomputes the layers and must find the forward's tensors. Only in layers
without adapter dropout (``peft.dropout=0``): dropout applied to the bf16 input scales it by 1/(1-p)
rounded to bf16 (1.0547 for 1/0.95), where the fp32 copy keeps the scale exact, so there the cast stays
and the steps stay those of peft's own forward, bit for bit either way (tested). Evaluation, which may
run without autocast and then needs the cast to match the adapter's dtype, keeps it.
"""

from __future__ import annotations

from typing import List

import torch


class AdapterInputCasts:
    """The model's peft tuner layers, whose input cast can be switched off under autocast."""

    def __init__(self, model: torch.nn.Module) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        self.layers: List[torch.nn.Module] = [m for m in model.modules()
                                              if isinstance(m, BaseTunerLayer) and not _has_dropout(m)]
        self.skipping = False

    def skip_under_autocast(self, device_type: str) -> None:
        if self.layers and torch.is_autocast_enabled(device_type):
            for layer in self.layers:
                layer.cast_input_dtype_enabled = False
            self.skipping = True

    def restore(self) -> None:
        if self.skipping:
            for layer in self.layers:
                layer.cast_input_dtype_enabled = True
            self.skipping = False


def _has_dropout(layer: torch.nn.Module) -> bool:
    """A tuner layer that drops out its adapters' inputs (LoRA's ``lora_dropout`` with p > 0)."""
    dropouts = getattr(layer, "lora_dropout", None)
    return dropouts is None or any(getattr(d, "p", 0.0) > 0 for d in dropouts.values())
