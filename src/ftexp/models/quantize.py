"""4-bit base weights for ``peft=qlora``, through transformers' bitsandbytes integration.

The base model's linear layers load as bitsandbytes ``Linear4bit`` (NF4 by default, double quantization,
bf16 compute): about 0.55 bytes per weight instead of 2, so a 7-8B model's base fits in ~5 GB. The output
layer (``skip_modules``, lm_head by default), the embeddings and the norms keep their precision (peft's
``prepare_model_for_kbit_training`` puts the non-quantized weights in fp32), and LoRA trains on top; only
the adapter is saved, with the quantization settings that the base must be loaded with again.

bitsandbytes >= 0.48 runs 4-bit layers on CUDA and on CPU (and other backends); :func:`require_backend`
tries a 4-bit matmul on the run's device before the model loads, so a device without a backend, or a
missing bitsandbytes, is refused in one paragraph.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Dict, List, Tuple

import torch

from ftexp.errors import FtexpError
from ftexp.models.base import torch_dtype

CPU_BLOCK = 64


class QuantizationError(FtexpError):
    """4-bit weights cannot run here; the message says why and what to do."""


@dataclass(frozen=True)
class FourBit:
    """How the base weights are quantized (``peft=qlora``'s settings) and on which device."""

    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "bfloat16"
    skip_modules: Tuple[str, ...] = ("lm_head",)
    device: str = field(default="cpu", compare=False)

    def transformers_config(self) -> Any:
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=self.quant_type,
                                  bnb_4bit_use_double_quant=self.double_quant,
                                  bnb_4bit_compute_dtype=torch_dtype(self.compute_dtype),
                                  llm_int8_skip_modules=list(self.skip_modules))

    def load_kwargs(self) -> Dict[str, Any]:
        """What ``from_pretrained`` takes to load the weights quantized, on the run's device."""
        return {"quantization_config": self.transformers_config(), "device_map": {"": self.device}}

    def record(self) -> Dict[str, Any]:
        """results.json's ``model.quantization``."""
        out = asdict(self)
        out.pop("device")
        import bitsandbytes

        return {"bits": 4, **out, "skip_modules": list(self.skip_modules), "bitsandbytes": bitsandbytes.__version__}


def require_backend(device: torch.device) -> None:
    """Refuse, in one paragraph, a device where bitsandbytes cannot run a 4-bit matmul."""
    try:
        import bitsandbytes as bnb
        import bitsandbytes.functional as bnbf
    except ImportError:
        raise QuantizationError("peft=qlora loads the base weights in 4 bits with bitsandbytes, which is not "
                                "installed: pip install 'ftexp[qlora]' (or pip install bitsandbytes), or use "
                                "peft=lora") from None
    try:
        weight = torch.randn(64, 64, dtype=torch.bfloat16, device=device)
        packed, state = bnbf.quantize_4bit(weight, quant_type="nf4")
        x = torch.randn(2, 64, dtype=torch.bfloat16, device=device)
        bnb.matmul_4bit(x, packed.t(), quant_state=state)
    except Exception as exc:  # noqa: BLE001 - any failure means no usable backend for this device
        raise QuantizationError(
            f"peft=qlora: bitsandbytes {bnb.__version__} cannot run 4-bit weights on {device} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Run on a device it "
            f"supports (a CUDA GPU; recent releases also a CPU), install a bitsandbytes build for this one, or "
            f"use peft=lora") from None


def reload_quantized(model: torch.nn.Module, four_bit: FourBit) -> torch.nn.Module:
    """A model built in memory (random weights: model=tiny), loaded again with its weights in 4 bits."""
    from transformers import AutoModelForCausalLM

    if four_bit.device.startswith("cpu"):
        four_bit = replace(four_bit, skip_modules=four_bit.skip_modules + tuple(narrow_linears(model)))
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the bars of writing and reading a temporary copy say nothing to a user
    try:
        with tempfile.TemporaryDirectory(prefix="ftexp-4bit-") as folder:
            model.save_pretrained(folder)
            quantized = AutoModelForCausalLM.from_pretrained(folder, dtype=model.dtype, **four_bit.load_kwargs())
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    quantized.name_or_path = quantized.config._name_or_path = model.name_or_path  # not the deleted folder
    return quantized


def narrow_linears(model: torch.nn.Module) -> List[str]:
    """Linear layers narrower than bitsandbytes' CPU kernels take (they pack a 4-bit weight in blocks of
    ``CPU_BLOCK`` input features): the smallest test models have some; they keep their precision on a CPU."""
    return [name for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and m.in_features % CPU_BLOCK != 0]


def quantized_modules(model: torch.nn.Module) -> List[str]:
    """Names of the modules whose weights are 4-bit."""
    return [name for name, m in model.named_modules()  # own weights only (an adapter wrapper shows its base's)
            if getattr(m._parameters.get("weight"), "quant_state", None) is not None]


def unquantized_linears(model: torch.nn.Module) -> List[str]:
    """Linear layers that kept their precision (the output layer; on a CPU, layers too narrow to pack)."""
    four = set(quantized_modules(model))
    return [name for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name not in four and not name.endswith(("lora_A", "lora_B"))
            and ".lora_" not in name]


def kept_precision(model: torch.nn.Module) -> Dict[str, str]:
    """Each weight that is not 4-bit (output layer, embeddings, norms, adapters), with its dtype."""
    four = set(quantized_modules(model))
    return {name: str(p.dtype).replace("torch.", "") for name, p in model.named_parameters()
            if name.rsplit(".", 1)[0] not in four}
