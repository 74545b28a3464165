"""``model=tiny``: a small Mistral-architecture model with random weights (no download)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import torch
from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerBase

from ftexp.models.base import ModelSource, torch_dtype
from ftexp.models.tokenizer import bpe_tokenizer


class TinyModel(ModelSource):
    pretrained = False  # random weights: a generator made from it must be fine-tuned first
    provenance = {"source": "random_init", "weights": "drawn at random (model.init_seed, else the run's seed)"}

    def load_tokenizer(self, corpus: Callable[[], Iterable[str]], cache_dir: Path) -> PreTrainedTokenizerBase:
        return bpe_tokenizer(corpus(), self.cfg.vocab_size, Path(cache_dir))

    def architecture(self, tokenizer: PreTrainedTokenizerBase) -> MistralConfig:
        c = self.cfg
        return MistralConfig(
            vocab_size=len(tokenizer),
            hidden_size=c.hidden_size,
            intermediate_size=c.intermediate_size,
            num_hidden_layers=c.num_hidden_layers,
            num_attention_heads=c.num_attention_heads,
            num_key_value_heads=c.num_key_value_heads,
            max_position_embeddings=max(c.max_length, 128) * 2,
            sliding_window=None,
            tie_word_embeddings=True,
            initializer_range=c.initializer_range,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            attn_implementation="sdpa",
        )

    def load_model(self, tokenizer: PreTrainedTokenizerBase) -> MistralForCausalLM:
        # Weight init draws from torch's global generator: fork it so the init seed is explicit
        # and the rest of the run's random stream does not depend on the model size.
        seed = self.cfg.init_seed if self.cfg.init_seed is not None else torch.initial_seed()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = MistralForCausalLM(self.architecture(tokenizer))
        return model.to(torch_dtype(self.cfg.dtype))
