"""A preparatory stage trained once per sweep: jobs that would train the same weights reuse them.

E3's jobs differ only in the mitigation, which has nothing to act on in the first stage, so all
four arms of a seed train stage 1 identically. The key hashes everything the trained weights
depend on — the starting weights themselves (which carry the model size, initialisation seed,
tokenizer and every earlier stage), the training and validation rows, the optimiser, trainer and
stage settings, the random-number state, and the library versions — so a hit is the same weights a
fresh run would train, bit for bit on CPU. The random-number state after training is stored with
the weights and restored on a hit, so later stages do not notice the difference either.

Only stages that feed a later stage are cached (the last stage's weights are the job's own), and
only when the mitigation does not act on the stage. Concurrent jobs with the same key take a lock:
one trains, the others wait and load.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import peft
import pytorch_lightning as pl
import torch
import transformers

from ftexp.utils.cache import file_lock, read_entry, update_with_tensors
from ftexp.utils.io import atomic_write_json, publish_dir
from ftexp.utils.ranks import every_rank, own

log = logging.getLogger(__name__)

VERSION = "stage-v1"


def trained_state(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """What a stage can change: the trainable parameters and the buffers (not frozen base weights)."""
    names = {n for n, p in model.named_parameters() if p.requires_grad} | {n for n, _ in model.named_buffers()}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in names}


def rng_state() -> Dict[str, Any]:
    np_kind, np_keys, np_pos, np_gauss, np_cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
             # int64, not numpy's uint32: Lightning's lazy checkpoint loader (FSDP's resume) reads only
             # the dtypes that have a typed storage class
             "numpy": torch.from_numpy(np_keys.astype(np.int64)), "numpy_pos": int(np_pos),
             "numpy_gauss": [int(np_gauss), float(np_cached)], "numpy_kind": np_kind}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def rng_states_of_ranks() -> List[Dict[str, Any]]:
    """Every rank's random state, rank k's at k (a collective under DDP: call it on every rank). The
    ranks' states part ways in training (dropout draws on each rank's own rows, rank 0 alone
    evaluates), so a resumed rank continues from its own, not from rank 0's."""
    return every_rank(rng_state())


def set_rank_rng_state(states: Any, rank: int) -> None:
    """Restore ``rank``'s state from :func:`rng_states_of_ranks` (or from one state: older checkpoints)."""
    set_rng_state(own([states] if isinstance(states, dict) else states, rank))


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state((state["numpy_kind"], state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         *state["numpy_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def stage_key(model: torch.nn.Module, rows: Dict[str, List[Any]], settings: Dict[str, Any]) -> str:
    """The content hash of one stage's inputs (see the module docstring)."""
    h = hashlib.sha256()
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                "lightning": pl.__version__}
    h.update(json.dumps({"version": VERSION, "libs": versions, **settings}, sort_keys=True, default=str).encode())
    update_with_tensors(h, model.state_dict())
    h.update(json.dumps(rows, sort_keys=True, default=str).encode())
    h.update(torch.get_rng_state().numpy().tobytes())
    if torch.cuda.is_available():
        for s in torch.cuda.get_rng_state_all():
            h.update(s.numpy().tobytes())
    return h.hexdigest()[:24]


@dataclass
class StageEntry:
    path: Path

    @property
    def hit(self) -> bool:
        """Whether the entry holds a stage (read now; a damaged one is deleted, to be trained again)."""
        return self._saved is not None

    @functools.cached_property
    def _saved(self) -> Optional[Dict[str, Any]]:
        return read_entry(self.path, self._read)

    def _read(self) -> Dict[str, Any]:
        # Every file is read before anything is restored: a damaged entry leaves the model and the
        # random state as they were, so the stage then trains as in a fresh run.
        saved = torch.load(self.path / "state.pt", map_location="cpu", weights_only=True)
        return {**saved, "summary": json.loads((self.path / "summary.json").read_text(encoding="utf-8"))}

    def restore(self, model: torch.nn.Module) -> Dict[str, Any]:
        saved = self._saved
        result = model.load_state_dict(saved["weights"], strict=False)
        if result.unexpected_keys:
            raise RuntimeError(f"stage cache {self.path}: weights do not fit the model "
                               f"(unexpected: {result.unexpected_keys[:5]})")
        set_rng_state(saved["rng"])
        return {**saved["summary"], "cache": {"path": str(self.path), "reused": True}}

    def store(self, model: torch.nn.Module, summary: Dict[str, Any]) -> Dict[str, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=".tmp-"))
        torch.save({"weights": trained_state(model), "rng": rng_state()}, tmp / "state.pt")
        atomic_write_json(tmp / "summary.json", summary)  # written last: its presence marks a whole entry
        publish_dir(tmp, self.path)
        return {**summary, "cache": {"path": str(self.path), "reused": False}}


@contextlib.contextmanager
def stage_entry(cache_dir: Path, key: Optional[str]) -> Iterator[Optional[StageEntry]]:
    """The locked cache entry for ``key`` (``None``: the stage is not cached)."""
    if key is None:
        yield None
        return
    root = Path(cache_dir) / "stages"
    with file_lock(root / f"{key}.lock"):
        yield StageEntry(root / key)


def device_count(trainer_cfg: Any) -> int:
    """How many processes the trainer will run (the cache is for single-process stages)."""
    devices = trainer_cfg.devices
    if isinstance(devices, int) and devices != -1:
        n = devices
    elif isinstance(devices, str) and devices not in ("auto", "-1"):
        n = len([d for d in devices.split(",") if d.strip()]) if "," in devices else int(devices)
    elif isinstance(devices, (int, str)):  # "auto" or -1: every visible GPU, one process on CPU
        gpu = trainer_cfg.accelerator in ("gpu", "cuda") or (trainer_cfg.accelerator == "auto" and torch.cuda.is_available())
        n = torch.cuda.device_count() if gpu else 1
    else:
        n = len(devices)
    return max(1, n) * max(1, int(trainer_cfg.num_nodes))
