"""The model that writes synthetic examples: a configured model, or a fresh copy of the run's
model fine-tuned in-run on the real training subset. Fine-tuned weights are cached on disk under a
content hash of everything that determines them, so the jobs of a sweep train it once."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Tuple

import pytorch_lightning as pl
import torch

from ftexp.data.base import Example, encode_split
from ftexp.data.datamodule import Batching, FineTuneDataModule
from ftexp.data.mixture import derived_rng
from ftexp.synthesis.prompts import clean, label_prompt
from ftexp.synthesis.writer import SynthesisInputs
from ftexp.training.module import FineTuneModule
from ftexp.training.trainer import build_trainer
from ftexp.utils import progress
from ftexp.utils.build import build
from ftexp.utils.cache import content_hash, file_lock, read_entry

log = logging.getLogger(__name__)

# The run's trainer settings that change what an in-run fine-tuned generator learns.
TRAINER_KEYS = ("accelerator", "precision", "gradient_clip_val", "accumulate_grad_batches", "devices")
BATCH_LIMITS = ("limit_train_batches", "limit_val_batches")


def trainer_identity(trainer: Any) -> Dict[str, Any]:
    """The trainer settings an in-run generator's weights depend on. A batch limit (debug=quick) trains
    less: set, it is part of them; unset, the keys (and so the cache's paths) are as before there were limits."""
    identity = {k: _plain(getattr(trainer, k)) for k in TRAINER_KEYS}
    identity.update({k: _plain(trainer.get(k)) for k in BATCH_LIMITS if trainer.get(k) is not None})
    return identity


def training_examples(dataset: str, train: List[Example]) -> List[Example]:
    """The in-run generator learns "header -> one text of that label" from every real example."""
    return [Example(prompt=label_prompt(dataset, ex.label, []), completion=clean(ex.text), label=ex.label)
            for ex in train]


class Generator:
    """Loads (and if asked, fine-tunes) the generator; ``identity`` hashes what its outputs depend on."""

    def __init__(self, syn_cfg: Any, run: SynthesisInputs, task: Any) -> None:
        self.cfg, self.run, self.task = syn_cfg, run, task
        own = syn_cfg.generator is not None
        self.source = build(generator_config(syn_cfg.generator)) if own else run.model_source
        self.finetune = (syn_cfg.finetune_generator if syn_cfg.finetune_generator is not None
                         else not self.source.pretrained)
        self.shots = syn_cfg.shots if syn_cfg.shots is not None else (0 if self.finetune else 3)
        self.tokenizer = (self.source.load_tokenizer(task.tokenizer_corpus, run.cache_dir) if own
                          else run.tokenizer)
        real = [(ex.label, ex.text) for ex in task.splits["train"]]
        model_cfg = generator_config(syn_cfg.generator) if own else run.model
        self.identity: Dict[str, Any] = {
            "model": _plain(model_cfg),
            # which weights (a hub release or a dequantized GGUF, by digest): the same config may load either
            "weights": {k: v for k, v in self.source.provenance.items() if k != "cache"},
            "vocab": content_hash(sorted(self.tokenizer.get_vocab().items())),
            "finetune": self.finetune,
        }
        if self.finetune:
            self.identity.update(real=content_hash(real), epochs=syn_cfg.generator_epochs, seed=run.seed,
                                 optim=_plain(run.optim), task=task.name, trainer=trainer_identity(run.trainer))
        self.dir = Path(run.cache_dir) / "generators" / content_hash(self.identity)
        self._model = None

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = self._load()
        return self._model

    def _load(self) -> torch.nn.Module:
        model = self.source.load_model(self.tokenizer)
        if not self.finetune:
            return model
        weights = self.dir / "generator.pt"
        with file_lock(self.dir.with_suffix(".lock")):  # parallel jobs: one fine-tunes, the others wait
            saved = read_entry(weights, lambda: torch.load(weights, map_location="cpu", weights_only=True))
            if saved is not None:
                log.info("synthetic: reusing the generator fine-tuned earlier (%s)", weights)
                model.load_state_dict(saved)
                return model
            log.info("synthetic: fine-tuning the generator on %d real examples for %d epochs",
                     len(self.task.splits["train"]), self.cfg.generator_epochs)
            with torch.random.fork_rng():
                pl.seed_everything(self.run.seed, verbose=False)
                self._fit(model)
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = weights.with_suffix(f".{os.getpid()}.tmp")
            torch.save(model.state_dict(), tmp)
            tmp.replace(weights)
        return model

    def _fit(self, model: torch.nn.Module) -> None:
        run = self.run
        rows = encode_split(self.tokenizer, training_examples(self.task.name, self.task.splits["train"]),
                            run.model.max_length, " ")
        datamodule = FineTuneDataModule(rows, [], Batching(pad_id=self.tokenizer.pad_token_id,
                                                           batch_size=run.optim.batch_size, seed=run.seed,
                                                           num_workers=run.trainer.num_workers))
        stage = SimpleNamespace(max_epochs=self.cfg.generator_epochs, max_steps=None)
        shown = progress.training_callbacks(f"synthetic-data generator · {self.task.name}")
        trainer = build_trainer(run.trainer, stage, self.dir, logger=None,
                                callbacks=shown if run.trainer.enable_progress_bar else [], validate=False)
        trainer.fit(FineTuneModule(model, run.optim, lr=run.optim.lr), datamodule=datamodule)
        model.eval()

    def prompts(self, label: str, indices: List[int], shots_from: List[str], seed: int) -> Tuple[List[str], List[int]]:
        """Prompt and sampling seed of samples ``indices`` of ``label``; each depends only on
        (seed, label, index), so a cached pool can be extended deterministically."""
        prompts, seeds = [], []
        for k in indices:
            rng = derived_rng(seed, "synthetic", label, k)
            shots = rng.sample(shots_from, min(self.shots, len(shots_from)))
            prompts.append(label_prompt(self.task.name, label, shots))
            seeds.append(rng.randrange(2**62))
        return prompts, seeds


def generator_config(cfg: Any) -> Any:
    """A full model config (with ``_target_``) as it is, or a mapping such as ``{name: qwen,
    hub_id: Qwen/Qwen2.5-0.5B}`` checked against the hub model schema."""
    from omegaconf import OmegaConf

    from ftexp.config.schema import HubModelConfig

    if dataclasses.is_dataclass(cfg):  # a typed model config (data.synthetic built typed: ${model}, say)
        return OmegaConf.structured(cfg)
    if "_target_" in cfg:
        return cfg
    return OmegaConf.merge(OmegaConf.structured(HubModelConfig), cfg)


def _plain(cfg: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
