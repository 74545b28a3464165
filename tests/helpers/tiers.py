"""The test folders say the tier: nothing under tests/unit/ is marked ``slow`` or ``gpu``, and everything
under tests/gpu/ is marked ``gpu``. tests/conftest.py refuses a collection that breaks this; integration/ may
hold fast tests that start processes or run the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List

TESTS = Path(__file__).resolve().parents[1]


def misplaced(items: Iterable) -> List[str]:
    """One line per collected test whose folder and tier markers disagree (items outside tests/ are left alone)."""
    wrong = []
    for item in items:
        try:
            parts = Path(item.path).resolve().relative_to(TESTS).parts
        except ValueError:
            continue
        folder = parts[0] if len(parts) > 1 else ""
        marks = sorted({m.name for m in item.iter_markers()} & {"slow", "gpu"})
        if folder == "unit" and marks:
            to = "tests/gpu/" if "gpu" in marks else "tests/integration/"
            wrong.append(f"{item.nodeid}: marked {' and '.join(marks)} under tests/unit/ (move it to {to})")
        elif folder == "gpu" and "gpu" not in marks:
            wrong.append(f"{item.nodeid}: under tests/gpu/ without the gpu mark (mark it, or move it)")
    return wrong
