"""What ``resume=true`` continues from: Lightning checkpoints inside a stage, a stage checkpoint
between stages.

- Inside stage k, Lightning writes ``checkpoints/stage<k>/last.ckpt`` at the end of every epoch (and
  every ``trainer.checkpoint_every_n_steps`` optimiser steps): trainable weights (frozen base weights
  are left out: a LoRA checkpoint is the adapter's size), optimiser, scheduler, loop counters, the
  early-stopping and best-weights callbacks, the random state and how far into its epoch the data
  loader was. The batches of an epoch depend only on the seed and the epoch number, so a run killed
  mid-epoch redoes the batches after its checkpoint exactly, and skips those before it.
- After stage k and its evaluation row, ``checkpoints/stage<k>.pt`` holds the trainable weights,
  the mitigation's state (EWC Fisher and anchors, the LwF teacher, the replay buffer), the rows and
  stage summaries so far and the random state; the stage's Lightning folder is then removed.

On resume the run loads the newest stage checkpoint, skips the stages it covers, and hands the next
stage's ``last.ckpt`` (if any) to ``Trainer.fit``. A checkpoint that does not read back whole stops
the job with an error that names it. A completed job removes its checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from ftexp.errors import FtexpError
from ftexp.training.stage_cache import trained_state
from ftexp.utils.io import atomic_write_json

FOLDER = "checkpoints"


class DamagedCheckpoint(FtexpError):
    """A checkpoint that resume=true would continue from does not read back whole."""


def whole(path: Path, run_dir: Path) -> Path:
    """``path`` once its zip archive (torch.save's format, Lightning's too) reads back whole, every
    member's checksum included; else a :class:`DamagedCheckpoint` naming it and what to do."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        problem = f"its member {bad} fails its checksum" if bad else None
    except (OSError, zipfile.BadZipFile) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if problem is None:
        return path
    raise DamagedCheckpoint(
        f"resume=true: the checkpoint {path} is damaged ({problem}); it was probably cut short by a kill or a full "
        f"disk while it was written. Delete it, and resume=true redoes the work since the checkpoint before it "
        f"(or the run from its start); or delete {Path(run_dir) / FOLDER}, or run with overwrite=true instead of "
        f"resume=true, to start the run over in this folder")


def stage_folder(run_dir: Path, index: int) -> Path:
    return Path(run_dir) / FOLDER / f"stage{index}"


def epoch_checkpoints(run_dir: Path, index: int, every_n_steps: Optional[int] = None) -> List[ModelCheckpoint]:
    """Lightning's checkpoint callbacks: ``last.ckpt`` at the end of every training epoch and, with
    ``every_n_steps``, after every that many optimiser steps as well (the newest overwrites it)."""
    # save_top_k=1 with no monitor keeps the newest, under one name; (save_top_k=0 + save_last
    # writes only when fit ends). Lightning takes steps and epochs from separate callbacks.
    common = dict(dirpath=str(stage_folder(run_dir, index)), filename="last", save_top_k=1, save_last=False,
                  enable_version_counter=False)
    savers = [ModelCheckpoint(every_n_epochs=1, save_on_train_epoch_end=True, **common)]
    if every_n_steps:
        savers.append(ModelCheckpoint(every_n_train_steps=every_n_steps, **common))
    return savers


def last_epoch_checkpoint(run_dir: Path, index: int) -> Optional[Path]:
    path = stage_folder(run_dir, index) / "last.ckpt"
    return whole(path, run_dir) if path.is_file() else None


def save_stage(run_dir: Path, index: int, model: torch.nn.Module, mitigation: Any, record: Any,
               rngs: List[Dict[str, Any]]) -> Path:
    """The state after stage ``index`` and its evaluation row, written atomically; ``rngs``: every
    rank's random state (``rng_states_of_ranks``)."""
    path = Path(run_dir) / FOLDER / f"stage{index}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"index": index, "weights": trained_state(model), "mitigation": mitigation.state_dict(),
             "record": {"rows": record.rows, "stages": record.stages, "step": record.step,
                        "wall_time_s": record.wall_time_s},
             "rng": rngs}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    shutil.rmtree(stage_folder(run_dir, index), ignore_errors=True)  # its epochs are no longer needed
    return path


def latest_stage(run_dir: Path, stages: int) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """The newest stage checkpoint of a run with ``stages`` stages (the last stage never has one:
    the job ends right after it)."""
    for index in range(stages - 1, 0, -1):
        path = Path(run_dir) / FOLDER / f"stage{index}.pt"
        if path.is_file():
            return path, torch.load(whole(path, run_dir), map_location="cpu", weights_only=True)
    return None


def remove(run_dir: Path) -> None:
    shutil.rmtree(Path(run_dir) / FOLDER, ignore_errors=True)


CONFIG_FILE = "config.json"
# What a resumed run may change: where things are read from and shown, not what is trained.
RESUMABLE_CHANGES = ("resume", "overwrite", "data_dir", "cache_dir", "cache_rows", "logger", "tags", "report",
                     "progress", "trainer.enable_progress_bar", "trainer.num_workers", "trainer.devices",
                     "trainer.num_nodes")


def save_config(run_dir: Path, config: Dict[str, Any]) -> None:
    """The resolved config of the run the checkpoints belong to (rank 0, at the job's start)."""
    atomic_write_json(Path(run_dir) / FOLDER / CONFIG_FILE, config)


def saved_config(run_dir: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads((Path(run_dir) / FOLDER / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def config_changes(before: Dict[str, Any], current: Dict[str, Any]) -> List[str]:
    """``key: old -> new`` for every setting that differs, but those a resumed run may change."""
    a, b = _flat(before), _flat(current)
    changed = [k for k in sorted(a.keys() | b.keys()) if a.get(k, "<unset>") != b.get(k, "<unset>")
               and not any(k == p or k.startswith(p + ".") for p in RESUMABLE_CHANGES)]
    return [f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}" for k in changed]


def _flat(node: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(node, dict):
        out: Dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: json.loads(json.dumps(node, default=str))}  # as saved: tuples are lists
