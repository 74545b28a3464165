"""What the review files hold: file names, columns, the rating scales, and the error they raise."""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

from ftexp.errors import FtexpError

REVIEW_JSONL = "review.jsonl"  # the exported rows: what `import` validates against and reads scores from
REVIEW_CSV = "review.csv"
LS_TASKS = "label_studio_tasks.json"
LS_CONFIG = "label_studio_config.xml"
README = "README.md"
RATINGS_JSONL = "ratings.jsonl"  # the imported ratings, normalised, next to the export

# rating column -> (lowest, highest) accepted integer
SCALES: Dict[str, Tuple[int, int]] = {"correctness": (0, 1), "helpfulness": (1, 5), "tone": (1, 5)}
RATINGS = tuple(SCALES)
NOTES = "notes"
KINDS = ("sample", "red_team")

# Cells a spreadsheet would run as a formula (CSV injection): model outputs are untrusted text.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class ReviewError(FtexpError):
    """A ratings file or run folder that cannot be imported; nothing has been written."""


def base_columns() -> Tuple[str, ...]:
    """The first columns of every exported row, before the ``auto_<score>`` columns."""
    return ("id", "task", "kind", "prompt", "reference", "output", *RATINGS, NOTES, "slices")


def finite(value: Any) -> Optional[float]:
    """A JSON-safe number: None for NaN/inf/missing."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def csv_safe(text: str) -> str:
    """Prefix a text cell that a spreadsheet would evaluate as a formula with ``'``."""
    return "'" + text if text.startswith(FORMULA_START) else text


def same_text(exported: Optional[str], given: Any) -> bool:
    """Whether a text cell of a ratings file still holds the exported text, allowing for what
    spreadsheets and editors do to it: line endings, surrounding blanks, the anti-formula quote."""
    def norm(s: str) -> str:
        return "\n".join(line.rstrip() for line in s.replace("\r\n", "\n").replace("\r", "\n").split("\n")).strip()

    exported = exported or ""
    given = "" if given is None else str(given)
    if given.startswith("'") and not exported.startswith("'") and given[1:].startswith(FORMULA_START):
        given = given[1:]
    return norm(exported) == norm(given)
