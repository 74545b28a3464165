"""A completed run's folder as ``merge`` and ``generate`` read it: results.json, its config, its saved weights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

from omegaconf import DictConfig, OmegaConf

from ftexp.tracking.results import RESULTS_FILE
from ftexp.use import UseError

ADAPTER_FILE = "adapter_config.json"  # what peft's save_pretrained writes; a full model folder has config.json


@dataclass
class RunFolder:
    path: Path
    results: Dict[str, Any]
    saved: Path  # the adapter folder (peft=lora) or the model folder (peft=full)

    @property
    def cfg(self) -> DictConfig:
        return OmegaConf.create(self.results["config"])

    @property
    def is_adapter(self) -> bool:
        return (self.saved / ADAPTER_FILE).is_file()


def read_run(path: Path) -> RunFolder:
    """The run in ``path``; a :class:`UseError` that says what is wrong otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise UseError(f"'{path}' is not a folder. Give a run's output folder (the one that holds results.json, "
                       "e.g. outputs/<date>/<time>-<pid>) or a folder that `ftexp merge` wrote.")
    file = path / RESULTS_FILE
    if not file.is_file():
        raise UseError(f"'{path}' holds no {RESULTS_FILE}, so it is not a run's folder. Give a run's output folder "
                       "(e.g. outputs/<date>/<time>-<pid>, or multirun/<date>/<time>/<job>) or a merged model folder "
                       "(one with config.json).")
    try:
        results = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise UseError(f"{file}: cannot be read as JSON ({exc}); the run did not finish writing it.") from None
    status = results.get("status")
    if status != "completed":
        error = (results.get("error") or {}).get("message") if isinstance(results.get("error"), dict) else None
        raise UseError(f"{file}: the run's status is '{status}', not 'completed'" + (f" ({error})" if error else "")
                       + "; only a completed run has trained weights to use. Finish it (resume=true) first.")
    if "config" not in results:
        raise UseError(f"{file}: has no 'config', so the run's model cannot be rebuilt.")
    return RunFolder(path, results, saved_weights(path, results))


def saved_weights(path: Path, results: Dict[str, Any]) -> Path:
    saved_to = results.get("saved_to")
    if not saved_to:
        save = results["config"].get("save_model")
        raise UseError(f"{path / RESULTS_FILE}: the run saved no weights (save_model={save}; results.json has no "
                       "'saved_to'), so there is nothing trained to use. Run it again with save_model=true.")
    folder = Path(saved_to)
    if not folder.is_dir():  # the run folder was moved or copied: the same folder name inside it
        folder = path / Path(saved_to).name
    if not folder.is_dir():
        raise UseError(f"{path / RESULTS_FILE}: saved_to '{saved_to}' is not a folder any more (nor is "
                       f"'{folder}'); the saved weights were deleted or moved.")
    if not ((folder / ADAPTER_FILE).is_file() or (folder / "config.json").is_file()):
        raise UseError(f"'{folder}': holds neither {ADAPTER_FILE} (a LoRA adapter) nor config.json (full weights); "
                       "its files were deleted or never finished writing.")
    return folder
