"""How the weights train: every weight (``peft=full``) or LoRA adapters (``peft=lora``)."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase


class FullFinetune:
    """Every weight trains; saved as a full HF model folder."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def apply(self, model: PreTrainedModel, model_cfg) -> PreTrainedModel:
        model.requires_grad_(True)
        return model

    def save(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> Path:
        folder = Path(out_dir) / "model"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return folder


class Lora:
    """LoRA adapters through peft; the base weights stay frozen and are not saved."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg

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
