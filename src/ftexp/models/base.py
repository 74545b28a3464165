"""The interface every model option implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Set, Type

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ftexp.errors import FtexpError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def unwrap_adapter(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a peft wrapper (itself when there is none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_layer_classes(model: torch.nn.Module) -> Set[Type[torch.nn.Module]]:
    """The model's decoder layer classes: those its ``_no_split_modules`` names (transformers lists its
    repeated blocks there; FSDP shards by them and ``trainer.compile`` compiles them). Empty when none."""
    names = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or ())
    return {type(m) for m in model.modules() if type(m).__name__ in names}


class ModelLoadError(FtexpError):
    """A model or tokenizer that cannot be loaded; the message says how to fix it."""


class ModelSource(ABC):
    """Builds the tokenizer and the causal LM for a model config."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    @property
    def trust_remote_code(self) -> bool:
        return bool(getattr(self.cfg, "trust_remote_code", False))

    @property
    def pretrained(self) -> bool:
        """Whether the weights already know language (a model built from a config does not)."""
        return True

    @property
    def provenance(self) -> Dict[str, Any]:
        """Where the weights came from (file, digest, quantization ...), as results.json records it."""
        return {}

    @abstractmethod
    def load_tokenizer(self, corpus: Callable[[], Iterable[str]], cache_dir: Path) -> PreTrainedTokenizerBase:
        """``corpus`` yields training texts, for tokenizers that are trained per run."""

    @abstractmethod
    def load_model(self, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
        ...

    def load_quantized(self, tokenizer: PreTrainedTokenizerBase, four_bit: Any) -> PreTrainedModel:
        """The model with its linear weights in 4 bits (``peft=qlora``; ``four_bit``: a
        :class:`ftexp.models.quantize.FourBit`). Here: built as usual, then loaded again quantized; sources that
        read weights from files quantize while they load."""
        from ftexp.models.quantize import reload_quantized

        return reload_quantized(self.load_model(tokenizer), four_bit)


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ModelLoadError(f"model.dtype '{name}' is not one of {', '.join(DTYPES)}")
    return DTYPES[name]


def count_parameters(model: torch.nn.Module) -> Dict[str, int]:
    total = sum(weights(p) for p in model.parameters())
    trainable = sum(weights(p) for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def weights(p: torch.Tensor) -> int:
    """How many weights a parameter holds: a 4-bit one (bitsandbytes) packs two per byte of its storage."""
    state = getattr(p, "quant_state", None)
    return int(state.shape.numel()) if state is not None else p.numel()
