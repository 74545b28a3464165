"""The ratings file formats, parsed into :class:`Record` rows (validated in :mod:`ftexp.review.ratings`).

- CSV: ``review.csv`` filled in (comma, semicolon or tab separated; a byte-order mark is fine);
- JSONL: a copy of ``review.jsonl`` filled in, or any lines with ``id`` and the three ratings;
- JSON: a Label Studio export (Export -> JSON: tasks with ``annotations[].result[]``), or a list of rows.

Problems are returned as strings, each naming where it is (line, row, or Label Studio task).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ftexp.review.schema import NOTES, RATINGS


@dataclass
class Record:
    """One row of a ratings file, before validation."""

    where: str  # "line 7 (row 4)", "task 3 (Label Studio id 12)"
    id: Any
    values: Dict[str, Any] = field(default_factory=dict)  # rating column -> raw value (None/"" = empty)
    notes: Any = None
    output: Any = None  # the output text the file shows, when it has one (checked against the export)



def parse_csv(text: str) -> Tuple[List[Record], List[str]]:
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=lambda d: (len(next(csv.reader([first], delimiter=d))), d == ","))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except (StopIteration, csv.Error) as exc:
        return [], [f"line 1: no header row ({exc})"]
    id_col = "review_id" if "review_id" in header else "id"  # Label Studio's CSV export has its own "id"
    missing = [c for c in (id_col, *RATINGS) if c not in header]
    dupes = sorted({h for h in header if header.count(h) > 1 and h})
    if missing or dupes:
        what = [f"{label} {', '.join(map(repr, cols))}" for label, cols in (("missing", missing), ("repeated", dupes))
                if cols]
        return [], [f"line 1: wrong columns: {'; '.join(what)} (the header is {header}; expected at least "
                    f"{[id_col, *RATINGS]})"]
    records, problems, end, row = [], [], 1, 1
    try:
        for cells in reader:
            start, end, row = end + 1, reader.line_num, row + 1
            if not any(c.strip() for c in cells):
                continue
            where = f"line {start} (row {row})"
            if len(cells) != len(header):
                problems.append(f"{where}: {len(cells)} cells, but the header has {len(header)} columns")
                continue
            get = dict(zip(header, cells)).get
            records.append(Record(where, get(id_col, "").strip(), {r: get(r) for r in RATINGS}, get(NOTES),
                                  get("output")))
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: not readable as CSV: {exc}")
    return records, problems


def _row_record(where: str, obj: Any) -> Tuple[Optional[Record], Optional[str]]:
    if not isinstance(obj, dict):
        return None, f"{where}: expected a JSON object with 'id' and ratings, got {type(obj).__name__}"
    missing = [c for c in ("id", *RATINGS) if c not in obj]
    if missing:
        return None, (f"{where}, id {obj.get('id')!r}: wrong columns: missing {', '.join(map(repr, missing))} "
                      f"(has {sorted(obj)}; use null for an unrated row)")
    return Record(where, obj["id"], {r: obj[r] for r in RATINGS}, obj.get(NOTES), obj.get("output")), None


def parse_jsonl(text: str) -> Tuple[List[Record], List[str]]:
    records, problems = [], []
    for n, line in enumerate(text.split("\n"), start=1):  # not splitlines(): U+2028 may sit inside a string
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {n}: not valid JSON ({exc.msg} at column {exc.colno}): {line[:60]!r}")
            continue
        rec, problem = _row_record(f"line {n}", obj)
        records.append(rec) if rec else problems.append(problem)
    return records, problems


def _annotation(where: str, task: Dict[str, Any]) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """The one annotation of a task that counts: the only one not cancelled, else the ground truth."""
    anns = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if len(anns) > 1:
        truth = [a for a in anns if a.get("ground_truth")]
        if len(truth) != 1:
            return None, (f"{where}: {len(anns)} annotations; ftexp.review takes one rating per output: "
                          f"mark one annotation as ground truth in Label Studio, or export one annotator's")
        anns = truth
    return (anns[0] if anns else None), None


def _ls_value(item: Dict[str, Any]) -> Any:
    value = item.get("value") or {}
    if "choices" in value:
        choices = value["choices"]
        return choices[0] if isinstance(choices, list) and len(choices) == 1 else choices
    if "rating" in value:
        return value["rating"]
    if "text" in value:
        text = value["text"]
        return "\n".join(map(str, text)) if isinstance(text, list) else text
    return value


def parse_label_studio(tasks: List[Any]) -> Tuple[List[Record], List[str]]:
    records, problems = [], []
    for k, task in enumerate(tasks, start=1):
        ls_id = task.get("id") if isinstance(task, dict) else None
        where = f"task {k} (Label Studio id {ls_id})"
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("review_id"), str):
            problems.append(f"{where}: no data.review_id: not a task of ftexp.review's label_studio_tasks.json")
            continue
        ann, problem = _annotation(f"{where}, id {data['review_id']!r}", task)
        if problem:
            problems.append(problem)
            continue
        found = {}
        for item in (ann or {}).get("result") or []:
            if isinstance(item, dict) and item.get("from_name") in (*RATINGS, NOTES):
                found[item["from_name"]] = _ls_value(item)
        records.append(Record(where, data["review_id"], {r: found.get(r) for r in RATINGS}, found.get(NOTES),
                              data.get("output")))
    return records, problems


def parse_json(text: str) -> Tuple[str, List[Record], List[str]]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return "json", [], [f"line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})"]
    if not isinstance(obj, list):
        return "json", [], ["expected a JSON list (Label Studio: Export -> JSON), got a " + type(obj).__name__]
    if any(isinstance(t, dict) and ("data" in t or "annotations" in t) for t in obj):
        return ("label_studio", *parse_label_studio(obj))
    records, problems = [], []
    for k, item in enumerate(obj, start=1):
        rec, problem = _row_record(f"item {k}", item)
        records.append(rec) if rec else problems.append(problem)
    return "json", records, problems
