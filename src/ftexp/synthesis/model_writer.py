"""``data.synthetic.method=model``: a language model writes each example from a prompt built from real
examples of its label (see :mod:`ftexp.synthesis.generator`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import torch

from ftexp.models.decoding import Decoding, sample
from ftexp.synthesis.generator import Generator
from ftexp.synthesis.pool import Pool
from ftexp.synthesis.writer import Requests, SynthesisInputs, SyntheticWriter
from ftexp.utils import progress
from ftexp.utils.cache import content_hash

# Bump when the prompt format, the sampler or the text clean-up changes what sample k is.
CACHE_VERSION = 1


class ModelWriter(SyntheticWriter):
    """Samples one line per example from the generator. What it writes is cached under a content
    hash of (generator, prompts' source, sampling settings), so a sweep generates each sample once."""

    def __init__(self, cfg: Any, task: Any, run: SynthesisInputs) -> None:
        super().__init__(cfg, task, run)
        self.generator = Generator(cfg, run, task)

    @property
    def source(self) -> str:
        return f"generator:{self.generator.identity['model'].get('name', 'model')}"

    def pool(self) -> Pool:
        cfg, gen = self.cfg, self.generator
        # Everything sample k depends on. (Not oversample or batch size: they change how many are made.)
        settings = {"version": CACHE_VERSION, "generator": gen.identity, "task": self.task.name, "shots": gen.shots,
                    "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p,
                    "seed": self.run.seed, "device": torch.device(self.run.device).type,
                    "real": content_hash(sorted(self.by_label.items()))}
        return Pool(Path(self.run.cache_dir) / "synthetic" / f"{content_hash(settings)}.jsonl", self.run.persist)

    def produce(self, requests: Requests) -> Dict[str, List[str]]:
        cfg, gen = self.cfg, self.generator
        prompts, seeds, owners = [], [], []
        for label, start, n in requests:
            p, sd = gen.prompts(label, list(range(start, start + n)), self.by_label[label], self.run.seed)
            prompts += p
            seeds += sd
            owners += [label] * n
        how = Decoding(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, temperature=cfg.temperature,
                       top_p=cfg.top_p, stop="\n")  # one example per line
        with progress.track(f"synthetic examples · {self.task.name}", len(prompts), "examples") as work:
            texts = sample(gen.model.to(self.run.device), gen.tokenizer, prompts, seeds, how, progress=work.advance)
        out: Dict[str, List[str]] = {}
        for label, text in zip(owners, texts):
            out.setdefault(label, []).append(text)
        return out
