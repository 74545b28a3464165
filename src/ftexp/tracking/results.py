"""results.json: what a run was, what it measured, and whether it completed."""

from __future__ import annotations

import platform
import socket
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Dict

from ftexp.utils.io import atomic_write_json

RESULTS_FILE = "results.json"
PACKAGES = ("ftexp", "torch", "transformers", "peft", "pytorch-lightning", "hydra-core", "omegaconf",
            "wandb", "torchmetrics", "tokenizers")


def package_versions() -> Dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_state(path: Path) -> Dict[str, Any]:
    """Commit and dirtiness of the checkout ftexp runs from (None outside a git checkout)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD") or None
        dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"commit": commit, "dirty": dirty}


def environment() -> Dict[str, Any]:
    return {
        "versions": package_versions(),
        "git": git_state(Path(__file__).resolve().parent),
        "host": socket.gethostname(),
        "platform": platform.platform(),
    }


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_results(run_dir: Path, results: Dict[str, Any]) -> Path:
    path = Path(run_dir) / RESULTS_FILE
    atomic_write_json(path, results)
    return path
