"""What writes synthetic texts: a :class:`SyntheticWriter`, built from ``data.synthetic`` like every
option (its ``_target_``; null: the writer that ``method`` names), with :class:`SynthesisInputs`,
what it needs of the run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

from ftexp.synthesis.pool import Pool

# (label, first sample index, how many) -> texts per label
Requests = List[Tuple[str, int, int]]


@dataclass
class SynthesisInputs:
    """What synthetic writers need of the run, named one by one (not the run's whole config)."""

    seed: int  # the run's seed: sample k of a label is fixed by (seed, label, k)
    cache_dir: Path  # generated texts and fine-tuned generators are kept under it
    model_source: Any = None  # the run's model source: the generator when data.synthetic.generator is null
    model: Any = None  # the run's model config: that generator's identity; max_length of its fine-tuning
    tokenizer: Any = None  # the run's tokenizer, which that generator uses
    device: Any = "cpu"  # where a generator samples
    persist: bool = True  # write the caches (only one process of a distributed job should)
    # A generator that is not pretrained is fine-tuned in-run as the run trains: with its optimiser
    # settings (optim.*) and trainer settings (accelerator, precision, clipping, devices, workers).
    optim: Any = None
    trainer: Any = None

    @classmethod
    def of_run(cls, cfg: Any, model_source: Any, tokenizer: Any, device: Any = "cpu",
               persist: bool = True) -> "SynthesisInputs":
        """The inputs a run's config gives (its seed, cache dir, model, optim and trainer settings)."""
        return cls(seed=cfg.seed, cache_dir=Path(cfg.cache_dir), model_source=model_source, model=cfg.model,
                   tokenizer=tokenizer, device=device, persist=persist, optim=cfg.optim, trainer=cfg.trainer)


class SyntheticWriter:
    """Writes synthetic texts for the labels of a task, on request (:meth:`produce`).

    Built as ``cls(cfg, task, run)``: ``cfg`` the typed ``data.synthetic`` (its own fields too, for a
    writer of one's own), ``task`` before synthetic examples join its training split, ``run`` the
    :class:`SynthesisInputs`. Sample k of a label must depend only on (run seed, label, k): a pool
    of them can then be cached and extended, and still equal what a fresh run writes.
    """

    def __init__(self, cfg: Any, task: Any, run: SynthesisInputs) -> None:
        self.cfg, self.task, self.run = cfg, task, run
        self.by_label: Dict[str, List[str]] = {}  # the real training texts of each label
        for ex in task.splits["train"]:
            self.by_label.setdefault(ex.label, []).append(ex.text)

    @property
    def source(self) -> str:
        """Who wrote the examples (their ``source``, and ``source`` in the run's synthetic report)."""
        return type(self).__name__

    def pool(self) -> Pool:
        """Where the written texts are kept: here, in memory only (for writers that are cheap to rerun)."""
        return Pool(None)

    def produce(self, requests: Requests) -> Dict[str, List[str]]:
        """Texts ``start`` ... ``start + n - 1`` of each requested ``(label, start, n)``, per label."""
        raise NotImplementedError
