"""What test modules share, so that none imports another: paths, the tiny run's overrides, the real data.

Modules beside this one: ``models`` (a tiny language model, rows, a short training; a tiny Llama for FSDP),
``cli`` (``python -m ftexp`` in a subprocess), ``multirun`` (multirun folders with known numbers), ``review`` (a
human-review export and its ratings), ``master_weights`` (the first step's gradients per rank, the compiled step
against torch's AdamW), ``fake_secrets``, ``wandb_records``, ``gguf_files``. Scripts that tests start as
subprocesses live here too; ``script(name)`` gives their path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# conf/debug/tiny.yaml: a ~25 k-parameter model, a few hundred examples, one epoch, logger=none.
# Overrides after it on the command line win over it.
TINY = ["debug=tiny"]
SHORT = ["debug=short"]  # TINY without the tiny model's sizes: for a run of another model

# Metrics that are measured durations or costs, not results: they differ between two identical runs.
TIMING = ("per_s", "mfu", "_ms", "time", "cost", "memory")


def script(name: str) -> Path:
    """A helper script of this folder, run as ``python <path>`` (e.g. ``fsdp_on_cpu``)."""
    return HERE / f"{name}.py"


def checkout_env(**extra: str) -> Dict[str, str]:
    """The environment for a child process that must import this checkout's ftexp (and ``tests``)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]), **extra}


def find_data_dir() -> Optional[Path]:
    """The real datasets: FTEXP_DATA_DIR, else ../shared/data beside the checkout; None where absent."""
    candidates = [os.environ.get("FTEXP_DATA_DIR"), REPO.parent / "shared" / "data"]
    for c in candidates:
        if c and (Path(c) / "banking77" / "train.jsonl").is_file():
            return Path(c).resolve()
    return None
