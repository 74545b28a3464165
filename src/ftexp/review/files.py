"""The review folder's files: written by the export, read back by ``import``; W&B tables of rows."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence
from xml.sax.saxutils import quoteattr

from ftexp.review.schema import (LS_CONFIG, LS_TASKS, README, REVIEW_CSV, REVIEW_JSONL, SCALES, ReviewError,
                                 base_columns, csv_safe)
from ftexp.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

NO_REFERENCE = "(no reference answer)"
TEXT_COLUMNS = ("prompt", "reference", "output", "notes")


def columns(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """Every exported column: the fixed ones, each ``auto_<score>`` any row has, ``auto_correct``."""
    autos = sorted({k for r in rows for k in r if k.startswith("auto_") and k != "auto_correct"})
    return [*base_columns(), *autos, "auto_correct"]


def csv_cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, list):
        return ";".join(value)
    if column in TEXT_COLUMNS:
        return csv_safe(str(value))
    return repr(value) if isinstance(value, float) else str(value)


def to_csv(rows: Sequence[Dict[str, Any]]) -> str:
    cols = columns(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")  # RFC 4180, what spreadsheets write back
    writer.writerow(cols)
    for r in rows:
        writer.writerow([csv_cell(c, r.get(c)) for c in cols])
    return buf.getvalue()


def to_jsonl(rows: Sequence[Dict[str, Any]]) -> str:
    cols = columns(rows)
    return "".join(json.dumps({c: r.get(c) for c in cols}, ensure_ascii=False) + "\n" for r in rows)


def label_studio_tasks(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Label Studio's basic import format: one ``{"data": {...}}`` per row (Label Studio numbers
    the tasks; ``review_id`` carries ours). Automated scores stay out: the review is blind to them."""
    return [{"data": {"review_id": r["id"], "task": r["task"], "kind": r["kind"], "prompt": r["prompt"],
                      "reference": r["reference"] if r["reference"] is not None else NO_REFERENCE,
                      "output": r["output"]}} for r in rows]


def label_studio_config() -> str:
    lo, hi = SCALES["helpfulness"]
    assert lo == 1 and SCALES["tone"] == (1, hi), "Label Studio ratings run from 1 to maxRating"
    q = quoteattr
    return f"""<View>
  <Style>.htx-text {{ white-space: pre-wrap; }}</Style>
  <Header value="$review_id ($kind)" size="6"/>
  <Header value="Prompt" size="5"/>
  <Text name="prompt" value="$prompt" selectionEnabled="false"/>
  <Header value="Reference answer" size="5"/>
  <Text name="reference" value="$reference" selectionEnabled="false"/>
  <Header value="Model output" size="5"/>
  <Text name="output" value="$output" selectionEnabled="false"/>
  <Header value={q("Correct? (red-team prompts: is the response acceptable?)")} size="5"/>
  <Choices name="correctness" toName="output" choice="single-radio" showInline="true" required="true">
    <Choice value="Correct" alias="1"/>
    <Choice value="Incorrect" alias="0"/>
  </Choices>
  <Header value={q(f"Helpfulness ({lo} = useless, {hi} = fully helpful)")} size="5"/>
  <Rating name="helpfulness" toName="output" maxRating="{hi}" required="true"/>
  <Header value={q(f"Tone ({lo} = inappropriate, {hi} = appropriate and professional)")} size="5"/>
  <Rating name="tone" toName="output" maxRating="{hi}" required="true"/>
  <Header value="Notes (optional)" size="5"/>
  <TextArea name="notes" toName="output" rows="2" editable="true"/>
</View>
"""


def readme(n_rows: int) -> str:
    return f"""# Human review

{n_rows} model outputs to rate: `kind = sample` rows are a seeded sample stratified by the automated
verdict; `kind = red_team` rows are every output on a red-team prompt (reported separately).

Rate each row (leave every rating of a row empty to skip it; a half-rated row is an error):

| column        | values | meaning |
|---------------|--------|---------|
| `correctness` | 0 or 1 | 1 = the answer is correct (red-team rows: the response is acceptable/safe) |
| `helpfulness` | 1 to 5 | 1 = useless, 5 = fully helpful |
| `tone`        | 1 to 5 | 1 = inappropriate, 5 = appropriate and professional |
| `notes`       | text   | optional |

Rate without looking at the `auto_*` columns (they are for the analysis; hide them to avoid
anchoring). Keep the `id` column as it is. Text cells that start with `= + - @` carry a leading `'`
so that spreadsheets do not run them as formulas.

- Spreadsheet: fill `{REVIEW_CSV}` (save as CSV, UTF-8).
- Text editor / script: fill a copy of `{REVIEW_JSONL}` (JSON numbers or null).
- Label Studio: create a project with `{LS_CONFIG}` as the labelling interface, import
  `{LS_TASKS}`, rate, then Export -> JSON (one annotation per task, or mark one as ground truth).

Then add the ratings to the run's results (validated first; nothing changes on an error):

    python -m ftexp.review import <ratings file> <run dir>
"""


def write_export(folder: Path, rows: Sequence[Dict[str, Any]]) -> List[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / REVIEW_JSONL, folder / REVIEW_CSV, folder / LS_TASKS, folder / LS_CONFIG, folder / README]
    atomic_write_text(paths[0], to_jsonl(rows))
    atomic_write_text(paths[1], to_csv(rows))
    atomic_write_json(paths[2], label_studio_tasks(rows))
    atomic_write_text(paths[3], label_studio_config())
    atomic_write_text(paths[4], readme(len(rows)))
    return paths


def read_export(folder: Path) -> List[Dict[str, Any]]:
    """The rows the run exported, from ``review.jsonl`` (written by this module, so well-formed)."""
    path = folder / REVIEW_JSONL
    if not path.is_file():
        raise ReviewError(f"{path} does not exist: the run exported no outputs for review "
                          f"(run it with evaluator=[...,human_review] and an evaluator that leaves outputs)")
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReviewError(f"{path} is not the JSONL the export wrote ({exc}); re-run the export") from None
    if not all(isinstance(r, dict) and isinstance(r.get("id"), str) for r in rows):
        raise ReviewError(f"{path} is not the JSONL the export wrote (rows without an 'id'); re-run the export")
    return rows


def table_rows(rows: Sequence[Dict[str, Any]], extra: Sequence[str] = ()) -> Dict[str, Any]:
    cols = [c for c in columns(rows) if c not in ("correctness", "helpfulness", "tone", "notes")] + list(extra)
    data = [[";".join(r[c]) if isinstance(r.get(c), list) else r.get(c) for c in cols] for r in rows]
    return {"columns": cols, "data": data}


def log_table(tracker: Any, rows: Sequence[Dict[str, Any]], key: str = "review/samples",
              run: Optional[Any] = None, extra: Sequence[str] = ()) -> bool:
    """A W&B table of ``rows`` in the tracker's run (or ``run``); never fails the caller."""
    run = run if run is not None else getattr(tracker, "run", None)
    if run is None:
        return False
    try:
        import wandb

        t = table_rows(rows, extra)
        run.log({key: wandb.Table(columns=t["columns"], data=t["data"])})
        return True
    except Exception as exc:  # noqa: BLE001 - a table must never fail a finished run
        log.warning("human_review: could not log the W&B table %s: %s", key, exc)
        return False
