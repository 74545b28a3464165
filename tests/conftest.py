"""Shared fixtures: real data from FTEXP_DATA_DIR, a tiny-run config, toy datasets, multirun folders.

The folders say the tier: unit/ (fast, mostly in this process; nothing marked ``slow`` or ``gpu``),
integration/ (``python -m ftexp`` and other scripts in subprocesses, DDP and FSDP on CPU processes, compiling
for real: marked ``slow``; a fast test may stay if it starts processes), gpu/ (needs CUDA, all marked ``gpu``),
helpers/ (what test modules share, and the scripts that tests start). The markers choose what runs:
``make test-fast`` runs what is neither ``slow`` nor ``gpu``, ``make test`` everything but ``gpu``; the hook
below refuses a collection where a folder and the markers disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import pytest

# Asserts in tests/helpers (the compiled step's check in master_weights, shared by unit/ and gpu/) report as a
# test's do: registered before the first import of tests.helpers.
pytest.register_assert_rewrite("tests.helpers")

from tests.helpers import TINY, find_data_dir  # noqa: E402
from tests.helpers.multirun import write_size_sweep  # noqa: E402
from tests.helpers.tiers import misplaced  # noqa: E402


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real datasets; tests that need them are skipped, with the reason, where they are absent."""
    found = find_data_dir()
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
    """A tiny run (debug=tiny) on the real data, writing into tmp_path/run."""
    return [*TINY, f"data_dir={data_dir}", f"cache_dir={cache_dir}", f"output_dir={tmp_path / 'run'}"]


@pytest.fixture
def size_sweep(tmp_path) -> Path:
    """E2's multirun folder: 2 sizes x 3 seeds with known accuracies, a failed job, a truncated results.json."""
    return write_size_sweep(tmp_path)


@pytest.hookimpl(tryfirst=True)  # before -m deselects: every collected test is checked
def pytest_collection_modifyitems(config, items):
    """The folders must say the tier (tests/helpers/tiers.py): a slow or gpu test under unit/, or an unmarked
    one under gpu/, fails the collection. `gpu` tests run only where CUDA is available; elsewhere they are
    skipped with the reason."""
    wrong = misplaced(items)
    if wrong:
        raise pytest.UsageError("a test's folder and its tier markers disagree:\n  " + "\n  ".join(wrong))
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
