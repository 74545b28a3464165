"""One rater's sitting of ``ftexp review serve``: which outputs, in what order, and the rater's files.

The outputs of every run named are interleaved in one fixed order, shuffled with a seed made of the
rater's name (the same rater resumes in the same order; two raters see different orders), and the page
is never told which run an output comes from. Each answer goes to its own run's
``<review folder>/ratings-<rater>.jsonl`` (one line per rated output: ``id``, the three ratings and
``notes``, the JSONL that ``ftexp review import`` reads), rewritten atomically after every answer, so a
killed server loses at most the answer being typed. A lock beside each file keeps a second server off
the same rater's file.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from filelock import FileLock, Timeout

from ftexp.review.files import read_export
from ftexp.review.schema import NOTES, RATINGS, SCALES, ReviewError
from ftexp.tracking.results import RESULTS_FILE
from ftexp.utils.io import atomic_write_text
from ftexp.utils.run_folder import holder

RATER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SHOWN = ("prompt", "reference", "output")  # all the page sees of a row, with whether it is red-team


def ratings_name(rater: str) -> str:
    return f"ratings-{rater}.jsonl"


@dataclass
class Run:
    run_dir: Path
    folder: Path  # the run's review folder
    rows: List[Dict[str, Any]]  # as exported, in export order
    ratings: Dict[str, Dict[str, Any]]  # id -> {correctness, helpfulness, tone, notes}
    path: Path  # the rater's ratings file
    lock: Optional[FileLock] = None


def review_folder_of(run_dir: Path) -> Path:
    """The run's review folder, as ``import`` finds it (results.json's record, else ``review``)."""
    from ftexp.review.importer import review_folder  # results.json's reader lives there

    results: Dict[str, Any] = {}
    try:
        loaded = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))
        results = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass
    return review_folder(run_dir, results)


def load_ratings(path: Path) -> Dict[str, Dict[str, Any]]:
    """The answers already in a rater's file (resume); a line that does not parse stops with its number."""
    out: Dict[str, Dict[str, Any]] = {}
    if not path.is_file():
        return out
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            out[obj["id"]] = {c: obj[c] for c in (*RATINGS, NOTES)}
        except (ValueError, KeyError, TypeError):
            raise ReviewError(f"{path}, line {n}: not a line this server writes ({line[:60]!r}); move the file "
                              f"away or fix the line") from None
    return out


def check(values: Dict[str, Any]) -> Dict[str, Any]:
    """The answer as stored, or ValueError naming the rating and value out of its scale."""
    out: Dict[str, Any] = {}
    for c in RATINGS:
        lo, hi = SCALES[c]
        v = values.get(c)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"{c} is {v!r}: expected an integer from {lo} to {hi}")
        out[c] = v
    note = values.get(NOTES)
    if note is not None and not isinstance(note, str):
        raise ValueError(f"notes is {note!r}: expected text")
    out[NOTES] = note.strip() or None if isinstance(note, str) else None
    return out


class Sitting:
    """The outputs of ``run_dirs`` in the rater's order, their answers, and the locks on the rater's files."""

    def __init__(self, run_dirs: Sequence[Path], rater: str):
        if not RATER.match(rater or ""):
            raise ReviewError(f"rater name {rater!r}: use letters, digits, '_', '.', '-' (it names the file "
                              f"ratings-<rater>.jsonl)")
        self.rater = rater
        self.runs: List[Run] = []
        named = [Path(d).resolve() for d in run_dirs]
        twice = sorted({str(d) for d in named if named.count(d) > 1})
        if twice:
            raise ReviewError(f"run folder(s) named twice: {', '.join(twice)}; name each run once")
        for run_dir in map(Path, run_dirs):
            if not run_dir.is_dir():
                raise ReviewError(f"run folder {run_dir} does not exist")
            folder = review_folder_of(run_dir)
            rows = read_export(folder)  # ReviewError when the run has no review set
            self.runs.append(Run(run_dir, folder, rows, {}, folder / ratings_name(rater)))
        order = [(k, i) for k, run in enumerate(self.runs) for i in range(len(run.rows))]
        random.Random(f"ftexp.review.serve:{rater}").shuffle(order)  # str seed: stable across processes
        self.order = order

    def open(self) -> "Sitting":
        """Take every file's lock (refused when another server holds one), then read what is there."""
        try:
            for run in self.runs:
                lock_path = run.folder / f".{run.path.name}.lock"
                run.lock = FileLock(lock_path, timeout=0)
                try:
                    run.lock.acquire()
                except Timeout:
                    run.lock = None
                    raise ReviewError(f"{run.path} is open in another `ftexp review serve` "
                                      f"({holder(lock_path)}); one server per rater's file: stop that one, "
                                      f"or rate under another --rater name") from None
                lock_path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
                run.ratings = load_ratings(run.path)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for run in self.runs:
            if run.lock is not None:
                run.lock.release()
                run.lock = None

    def __len__(self) -> int:
        return len(self.order)

    def _at(self, index: int):
        if not 0 <= index < len(self.order):
            raise IndexError(f"no output {index}: there are {len(self.order)} (0 to {len(self.order) - 1})")
        k, i = self.order[index]
        return self.runs[k], self.runs[k].rows[i]

    def item(self, index: int) -> Dict[str, Any]:
        """What the page shows of one output: the texts, the red-team flag, the rater's answer so far.
        Never the run, the model, or any automated score."""
        run, row = self._at(index)
        return {"index": index, "n": len(self), **{c: row.get(c) for c in SHOWN},
                "red_team": row.get("kind") == "red_team", "answer": run.ratings.get(row["id"])}

    def n_rated(self) -> int:
        return sum(len(run.ratings) for run in self.runs)

    def resume_at(self) -> int:
        """The first output in the order without an answer (``len(self)`` when all are rated)."""
        for index, (k, i) in enumerate(self.order):
            if self.runs[k].rows[i]["id"] not in self.runs[k].ratings:
                return index
        return len(self)

    def answer(self, index: int, values: Dict[str, Any]) -> None:
        """Check, record and write one answer (ValueError/IndexError and nothing written when bad)."""
        run, row = self._at(index)
        answer = check(values)
        ratings = {**run.ratings, row["id"]: answer}
        lines = [json.dumps({"id": r["id"], **ratings[r["id"]]}, ensure_ascii=False) + "\n"
                 for r in run.rows if r["id"] in ratings]
        atomic_write_text(run.path, "".join(lines))
        run.ratings = ratings
