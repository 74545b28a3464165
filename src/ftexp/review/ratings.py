"""Read a filled ratings file (CSV, JSONL, or a Label Studio JSON export) and validate it against the
rows the run exported. Every problem is collected and reported at once, each naming the file, the
line (or Label Studio task), the id, the column and the value; nothing is returned on a problem.

A row whose ratings are all empty (or a Label Studio task without an annotation) is *unrated*, as
is an exported row that the file leaves out: counted, not an error. A row with some ratings but
not all is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ftexp.review.formats import Record, parse_csv, parse_json, parse_jsonl
from ftexp.review.schema import NOTES, RATINGS, REVIEW_JSONL, SCALES, ReviewError, same_text

MAX_SHOWN = 20  # problems listed in the error; the count says how many there are
TRUE_WORDS = {"true": 1, "false": 0, "correct": 1, "incorrect": 0, "yes": 1, "no": 0}


@dataclass
class Ratings:
    path: Path
    format: str  # csv | jsonl | label_studio | json
    by_id: Dict[str, Dict[str, Any]]  # id -> {"correctness", "helpfulness", "tone", "notes"}
    n_rows: int  # rows/tasks in the file
    n_exported: int

    @property
    def n_rated(self) -> int:
        return len(self.by_id)

    @property
    def n_unrated(self) -> int:
        return self.n_exported - self.n_rated


def _fail(path: Path, problems: Sequence[str]) -> None:
    shown = "\n  ".join(problems[:MAX_SHOWN])
    more = f"\n  ... and {len(problems) - MAX_SHOWN} more" if len(problems) > MAX_SHOWN else ""
    raise ReviewError(f"ratings file {path}: {len(problems)} problem(s); nothing was imported:\n  {shown}{more}")


def _empty(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


# ----------------------------------------------------------------------------------- validation


def rating(column: str, value: Any) -> Optional[int]:
    """The integer a cell holds if it is one in the column's scale, else None."""
    lo, hi = SCALES[column]
    if isinstance(value, bool):
        v: Any = int(value) if column == "correctness" else None
    elif isinstance(value, int):
        v = value
    elif isinstance(value, float):
        v = int(value) if value.is_integer() else None
    elif isinstance(value, str):
        s = value.strip()
        v = TRUE_WORDS.get(s.lower()) if column == "correctness" else None
        if v is None:
            try:
                f = float(s)
                v = int(f) if f.is_integer() else None
            except ValueError:
                v = None
    else:
        v = None
    return v if v is not None and lo <= v <= hi else None


def validate(records: List[Record], exported: Dict[str, Dict[str, Any]],
             folder: Path) -> Tuple[Dict[str, Dict[str, Any]], List[str]]:
    """The ratings of the rated rows by id, and every problem found."""
    problems: List[str] = []
    seen: Dict[str, str] = {}
    by_id: Dict[str, Dict[str, Any]] = {}
    for rec in records:
        rid = rec.id if isinstance(rec.id, str) else ("" if rec.id is None else str(rec.id))
        at = f"{rec.where}, id {rid!r}"
        if not rid.strip():
            problems.append(f"{rec.where}: column 'id' is empty")
            continue
        if rid in seen:
            problems.append(f"{at}: the id appears again (first at {seen[rid]})")
            continue
        seen[rid] = rec.where
        if rid not in exported:
            problems.append(f"{at}: unknown id: not among the {len(exported)} rows in {folder / REVIEW_JSONL}")
            continue
        if rec.output is not None and not same_text(exported[rid].get("output"), rec.output):
            problems.append(f"{at}: column 'output' differs from the output this run exported for the id "
                            f"(ratings of another run?)")
            continue
        if all(_empty(rec.values[c]) for c in RATINGS) and _empty(rec.notes):
            continue  # unrated
        row: Dict[str, Any] = {}
        for c in RATINGS:
            lo, hi = SCALES[c]
            raw = rec.values[c]
            if _empty(raw):
                problems.append(f"{at}: column '{c}' is empty (rate all of {', '.join(RATINGS)} or none)")
            elif (v := rating(c, raw)) is None:
                problems.append(f"{at}: column '{c}' is {raw!r}, not an integer from {lo} to {hi}")
            else:
                row[c] = v
        row[NOTES] = None if _empty(rec.notes) else str(rec.notes)
        by_id[rid] = row
    return by_id, problems


def read_ratings(path: Path, exported_rows: List[Dict[str, Any]], folder: Path) -> Ratings:
    """The validated ratings in ``path`` (one of the formats above) of the rows the run exported."""
    path = Path(path)
    if not path.is_file():
        raise ReviewError(f"ratings file {path} does not exist (or is not a file); nothing was imported")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".json"):
        raise ReviewError(f"ratings file {path}: expected .csv, .jsonl, or .json (a Label Studio JSON export), "
                          f"not '{suffix or path.name}'; nothing was imported")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # -sig: a spreadsheet's byte-order mark
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ReviewError(f"ratings file {path}: line {line} is not UTF-8 text "
                          f"(byte {raw[exc.start]:#04x}); save the file as UTF-8 (\"CSV UTF-8\" in a spreadsheet); "
                          f"nothing was imported") from None
    if not text.strip():
        raise ReviewError(f"ratings file {path} is empty; nothing was imported")
    if suffix == ".csv":
        fmt, (records, problems) = "csv", parse_csv(text)
    elif suffix == ".jsonl":
        fmt, (records, problems) = "jsonl", parse_jsonl(text)
    else:
        fmt, records, problems = parse_json(text)
    exported = {r["id"]: r for r in exported_rows}
    by_id, more = validate(records, exported, folder)
    problems += more
    if problems:
        _fail(path, problems)
    if not by_id:
        raise ReviewError(f"ratings file {path}: none of its {len(records)} row(s) is rated; fill "
                          f"{', '.join(RATINGS)} of the rows you reviewed (nothing was imported)")
    return Ratings(path=path, format=fmt, by_id=by_id, n_rows=len(records), n_exported=len(exported))
