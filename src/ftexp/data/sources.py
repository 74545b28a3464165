"""Reading records from local files (JSONL, CSV, Parquet) or a Hugging Face dataset id."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, List, Optional

from ftexp.data.base import DataError

Record = Dict[str, object]


def read_records(path: Path) -> List[Record]:
    """All records of one file; malformed input raises :class:`DataError` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return _read_jsonl(path)
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from exc
        return pq.read_table(path).to_pylist()
    raise DataError(f"{path}: unsupported file type '{suffix}' (use .jsonl, .csv or .parquet)")


def _read_jsonl(path: Path) -> List[Record]:
    records = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {n}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}, line {n}: expected a JSON object, got {type(obj).__name__}")
            records.append(obj)
    return records


def _read_csv(path: Path) -> List[Record]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        records = []
        for row in reader:
            if None in row:  # more cells than header columns
                raise DataError(f"{path}, line {reader.line_num}: more values than the header has columns")
            records.append(row)
    return records


def load_hub_split(hub_id: str, split: str, revision: Optional[str] = None) -> List[Record]:
    try:
        import datasets
    except ImportError as exc:
        raise DataError(
            f"the local files are missing and loading '{hub_id}' from the hub needs the `datasets` package "
            f"(pip install 'ftexp[hub]'); or set FTEXP_DATA_DIR / data.path to a folder with the files"
        ) from exc
    try:
        ds = datasets.load_dataset(hub_id, split=split, revision=revision)
    except Exception as exc:  # noqa: BLE001 - network, auth and missing-split errors alike
        raise DataError(f"cannot load split '{split}' of '{hub_id}' from the hub: {exc}") from exc
    # Class-label columns hold integers on the hub; the task wants the label names.
    names = {k: f.int2str for k, f in ds.features.items() if isinstance(f, datasets.ClassLabel)}
    return [{k: (names[k](v) if k in names else v) for k, v in row.items()} for row in ds]


def require_fields(records: List[Record], fields: List[str], where: str) -> None:
    """Every record has every field, non-empty; the error names the first record that does not."""
    for n, rec in enumerate(records, 1):
        for field in fields:
            value = rec.get(field)
            if value is None or (isinstance(value, str) and not value.strip()):
                have = ", ".join(sorted(rec)) or "none"
                problem = "missing" if field not in rec else "empty"
                raise DataError(f"{where}, record {n}: field '{field}' is {problem} (fields present: {have})")
