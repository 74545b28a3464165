"""Shared fixtures: real data from FTEXP_DATA_DIR, a tiny-model config, in-process runs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parents[1]

# A ~25 k-parameter model and a few hundred examples: a whole run takes seconds on a CPU.
TINY = [
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_hidden_layers=1",
    "model.num_attention_heads=2",
    "model.num_key_value_heads=1",
    "model.vocab_size=400",
    "model.max_length=64",
    "data.n_train=240",
    "data.n_test=80",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=2",
    "logger=none",
]


def _data_dir() -> Path | None:
    candidates = [os.environ.get("FTEXP_DATA_DIR"), REPO.parent / "shared" / "data"]
    for c in candidates:
        if c and (Path(c) / "banking77" / "train.jsonl").is_file():
            return Path(c).resolve()
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real datasets; tests that need them are skipped, with the reason, where they are absent."""
    found = _data_dir()
    if found is None:
        pytest.skip("real datasets not found: set FTEXP_DATA_DIR to the folder holding banking77/")
    return found


@pytest.fixture
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "ftexp-cache"


@pytest.fixture
def toy_data(tmp_path) -> Path:
    """A small classification dataset in the Banking77 layout (3 labels), written per test."""
    folder = tmp_path / "toy"
    folder.mkdir()
    # Same length for every label: length-grouped batches must not sort the labels apart.
    words = {"card_arrival": "card arrive post", "top_up": "top up money", "refund": "refund return back"}
    for split, n, first in (("train", 30, 0), ("test", 9, 100)):  # no text in both splits
        with (folder / f"{split}.jsonl").open("w") as f:
            for i in range(n):
                label = list(words)[i % 3]
                f.write(json.dumps({"text": f"{words[label]} request {first + i}", "label": label}) + "\n")
    return folder


@pytest.fixture
def tiny_overrides(data_dir, cache_dir, tmp_path) -> List[str]:
    return [*TINY, f"data_dir={data_dir}", f"cache_dir={cache_dir}", f"output_dir={tmp_path / 'run'}"]


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run only where CUDA is available; elsewhere they are skipped with the reason."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
