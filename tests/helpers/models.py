"""A tiny language model, rows of varied lengths and a short training of the two, for in-process tests; a tiny
Llama and a holder of it (as the LightningModule holds the model) for the FSDP tests."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn
from transformers import MistralConfig, MistralForCausalLM

# Token ids for label scoring: prompts, and labels that share prefixes.
PROMPTS = [[1, 5, 6, 7], [1, 8], [1, 9, 10, 11, 12, 13], [1, 14, 15]]
LABELS = [[20, 2], [21, 22, 23, 2], [24, 25, 2], [20, 26, 2], [27, 2], [21, 22, 26, 2]]


def tiny_lm(impl="sdpa", seed=0, head_dim=8):
    torch.manual_seed(seed)
    cfg = MistralConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2, head_dim=head_dim,
                        num_attention_heads=4, num_key_value_heads=2, attn_implementation=impl)
    return MistralForCausalLM(cfg).eval()


def varied_rows(n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(2, 14, (1,), generator=gen))
        prompt = torch.randint(5, 15, (k,), generator=gen).tolist()
        label = 20 + prompt[0] % 3
        out.append({"input_ids": [1, *prompt, label, 2], "labels": [-100] * (k + 1) + [label, 2]})
    return out


class StepLosses(pl.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def train_tiny(model=None, **step_options):
    """Six steps of the tiny model on fixed batches: the step losses and the trained module."""
    from ftexp.config.preflight import compose_config
    from ftexp.data.datamodule import Batching, FineTuneDataModule
    from ftexp.training.module import FineTuneModule, StepOptions

    pl.seed_everything(0, verbose=False)
    rows = varied_rows(48, seed=2)
    dm = FineTuneDataModule(rows, rows[:16], Batching(pad_id=0, batch_size=16, seed=0, group_by_length=False))
    module = FineTuneModule(model or tiny_lm(), compose_config([]).optim, lr=3e-3, step=StepOptions(**step_options))
    steps = StepLosses()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[steps])
    trainer.fit(module, datamodule=dm)
    return steps.losses, module


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1))


class Holder(nn.Module):  # stands for the LightningModule that holds the model as .model
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, **batch):
        return self.model(**batch)
