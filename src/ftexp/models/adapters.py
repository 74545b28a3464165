"""How the weights train: every weight (``peft=full``), LoRA adapters (``peft=lora``), or LoRA on 4-bit base
weights (``peft=qlora``, see :mod:`ftexp.models.quantize`)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

if TYPE_CHECKING:
    from ftexp.models.quantize import FourBit


class FullFinetune:
    """Every weight trains; saved as a full HF model folder."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def quantization(self, device: torch.device) -> Optional[FourBit]:
        """How the base weights load (None: as the model config says)."""
        return None

    def apply(self, model: PreTrainedModel, model_cfg) -> PreTrainedModel:
        model.requires_grad_(True)
        return model

    def save(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> Path:
        folder = Path(out_dir) / "model"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return folder


class Lora(FullFinetune):
    """LoRA adapters through peft; the base weights stay frozen and are not saved."""

    def apply(self, model: PreTrainedModel, model_cfg) -> PreTrainedModel:
        from peft import LoraConfig, TaskType, get_peft_model

        targets = self.cfg.target_modules or model_cfg.lora_target_modules
        targets = targets[0] if list(targets) == ["all-linear"] else list(targets)
        config = LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=self.cfg.r,
            lora_alpha=self.cfg.alpha,
            lora_dropout=self.cfg.dropout,
            target_modules=targets,
            bias=self.cfg.bias,
        )
        return get_peft_model(model, config)

    def save(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> Path:
        folder = Path(out_dir) / "adapter"
        model.save_pretrained(folder)  # adapter_config.json + adapter_model.safetensors
        tokenizer.save_pretrained(folder)
        return folder


class QLora(Lora):
    """LoRA on base weights loaded in 4 bits; saved as LoRA's adapter, with the quantization the base needs."""

    def quantization(self, device: torch.device) -> FourBit:
        from ftexp.models.quantize import FourBit

        c = self.cfg
        return FourBit(quant_type=c.quant_type, double_quant=c.double_quant, compute_dtype=c.compute_dtype,
                       skip_modules=tuple(c.skip_modules), device=str(device))

    def apply(self, model: PreTrainedModel, model_cfg) -> PreTrainedModel:
        from peft import prepare_model_for_kbit_training

        # The weights that stay unquantized (norms, embeddings, output layer) in fp32; the input's gradient on,
        # so that trainer.activation_checkpointing can rerun the first layer. Checkpointing itself is the
        # trainer's setting, not peft's.
        with warnings.catch_warnings():  # peft reads an attribute that transformers renamed
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return super().apply(model, model_cfg)

    def save(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> Path:
        folder = super().save(model, tokenizer, out_dir)
        (folder / "quantization.json").write_text(json.dumps(self.quantization(torch.device("cpu")).record(),
                                                             indent=1) + "\n", encoding="utf-8")
        return folder
