"""Reading records from local files (JSONL, CSV, Parquet) or a Hugging Face dataset id.

Every record keeps where it came from (file and line), so that any later complaint about it —
a missing field, a text that is not a string, an unknown label — names the exact place to fix.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ftexp.data.base import DataError

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")  # the files read_rows reads


@dataclass
class Row:
    """One record and where it came from (``path, line N`` or ``hub id (split), row N``)."""

    where: str
    fields: Dict[str, Any]


def read_rows(path: Path) -> List[Row]:
    """All records of one file; malformed or unreadable input raises :class:`DataError` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            return _read_jsonl(path)
        if suffix == ".csv":
            return _read_csv(path)
        if suffix == ".parquet":
            return _read_parquet(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    raise DataError(f"{path}: unsupported file type '{suffix}' (use .jsonl, .csv or .parquet)")


def _lines(path: Path):
    """(line number, text) pairs; a byte sequence that is not UTF-8 names its line. A byte-order mark
    (spreadsheet exports write one) is dropped, or it would be part of the first field's name."""
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}, line {n}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


def _read_jsonl(path: Path) -> List[Row]:
    rows = []
    for n, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {n}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}, line {n}: expected a JSON object, got {type(obj).__name__}")
        rows.append(Row(f"{path}, line {n}", obj))
    return rows


def _read_csv(path: Path) -> List[Row]:
    pulled: List[Tuple[int, bool]] = []  # (line number, blank) of every line the reader has taken

    def lines():
        for n, line in _lines(path):
            pulled.append((n, not line.strip()))
            yield line

    def first_line(since: int) -> int:  # where the record that began after pulled[since - 1] starts
        taken = pulled[since:] or pulled[-1:] or [(1, False)]
        return next((n for n, blank in taken if not blank), taken[0][0])

    # strict: an unclosed quote is an error, not a cell that swallows the rest of the file
    reader = csv.DictReader(lines(), strict=True)
    rows, mark = [], 0
    try:
        reader.fieldnames  # the header
        mark = len(pulled)
        for record in reader:
            where = f"{path}, line {first_line(mark)}"
            mark = len(pulled)
            if None in record:  # more cells than header columns
                raise DataError(f"{where}: more values than the header has columns")
            if None in record.values():
                raise DataError(f"{where}: fewer values than the header has columns")
            rows.append(Row(where, dict(record)))
    except csv.Error as exc:
        hint = " (a quoted cell that starts in this record is never closed)" if "end of data" in str(exc) else ""
        raise DataError(f"{path}, line {first_line(mark)}: malformed CSV: {exc}{hint}") from None
    return rows


def _read_parquet(path: Path) -> List[Row]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from exc
    try:
        records = pq.read_table(path).to_pylist()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    return [Row(f"{path}, row {i}", r) for i, r in enumerate(records, 1)]


def load_hub_rows(hub_id: str, split: str, revision: Optional[str] = None) -> List[Row]:
    try:
        import datasets
    except ImportError as exc:
        raise DataError(
            f"loading '{hub_id}' from the hub needs the `datasets` package (pip install 'ftexp[hub]'); "
            f"or set FTEXP_DATA_DIR / data.path to a folder with the files"
        ) from exc
    try:
        ds = datasets.load_dataset(hub_id, split=split, revision=revision)
    except Exception as exc:  # noqa: BLE001 - network, auth and missing-split errors alike
        raise DataError(f"cannot load split '{split}' of '{hub_id}' from the hub: {exc}") from exc
    # Class-label columns hold integers on the hub; the task wants the label names.
    names = {k: f.int2str for k, f in ds.features.items() if isinstance(f, datasets.ClassLabel)}
    return [
        Row(f"hub dataset {hub_id} ({split}), row {i}", {k: (names[k](v) if k in names else v) for k, v in r.items()})
        for i, r in enumerate(ds, 1)
    ]


def map_fields(rows: Sequence[Row], mapping: Mapping[str, str], text_fields: Sequence[str],
               other_fields: Sequence[str] = ()) -> List[Row]:
    """Rename the source's fields to the task's (``mapping``: task field -> source field) and check
    them: every field is present and non-empty; ``text_fields`` must hold strings."""
    out = []
    for row in rows:
        rec = dict(row.fields)
        for task_field in (*text_fields, *other_fields):
            src = mapping.get(task_field, task_field)
            if src not in rec or rec[src] is None:
                have = ", ".join(sorted(row.fields)) or "none"  # the file's own, not those renamed here
                raise DataError(f"{row.where}: field '{src}' is missing (fields present: {have})")
            value = rec[src]
            if task_field in text_fields and not isinstance(value, str):
                raise DataError(f"{row.where}: field '{src}' must be a string, got {type(value).__name__} {value!r:.60}")
            if isinstance(value, str) and not value.strip():
                raise DataError(f"{row.where}: field '{src}' is empty")
            rec[task_field] = value
        out.append(Row(row.where, rec))
    return out


def source_rows(src: Any, split: str, data_dir: str, data_name: str) -> Tuple[List[Row], Dict[str, Any]]:
    """The records of one split of a source (its local file when present, else its hub copy) and
    where they came from: the file and its SHA-256, or the hub id and revision."""
    file_name = src.train_file if split == "train" else src.test_file
    if file_name is None:
        return [], {}
    folder = Path(src.path).expanduser() if src.path else Path(data_dir).expanduser() / (src.subdir or "")
    path = folder / file_name
    if path.is_file():
        rows = read_rows(path)
        return rows, {"path": str(path.resolve()), "sha256": file_sha256(path)}
    where = _missing_file(path) if src.path else (
        f"{path} does not exist. Set FTEXP_DATA_DIR (or data_dir=...) to the folder that holds "
        f"'{src.subdir}/', or data.path to the dataset folder"
    )
    if not src.hub_id:
        raise DataError(f"data '{data_name}': {where}.")
    try:
        rows = load_hub_rows(src.hub_id, split, src.hub_revision)
    except DataError as exc:
        raise DataError(f"data '{data_name}': {where}; the hub copy is not available either: {exc}") from None
    return rows, {"hub_id": src.hub_id, "revision": src.hub_revision}


def _missing_file(path: Path) -> str:
    """Why a file of a source's own folder (``path`` set) cannot be read: the folder or the file is
    not there; the folder's data files are listed, since a mistyped name is the likely cause."""
    folder = path.parent
    if not folder.is_dir():
        return f"{path} does not exist: there is no folder {folder}"
    found = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
    return (f"{path} does not exist: the folder {folder} has no file '{path.name}' (its data files: "
            f"{', '.join(found) or 'none'}); correct the file name or the folder")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
