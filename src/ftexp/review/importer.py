"""``python -m ftexp.review import``: validate a ratings file, then add what it says to the run.

On success: ``<run dir>/<review folder>/ratings.jsonl`` holds the ratings, normalised (one line per
rated row, in export order), and ``<run dir>/results.json`` gains ``review`` (provenance, counts and
:func:`ftexp.review.stats.summarise`). Both are written atomically and only after everything has
validated; an existing different ``ratings.jsonl`` is replaced only when asked (``replace``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from ftexp.review.files import log_table, read_export
from ftexp.review.raters import between_raters, combine, rater_name
from ftexp.review.ratings import Ratings, read_ratings
from ftexp.review.schema import NOTES, RATINGS, RATINGS_JSONL, REVIEW_JSONL, ReviewError
from ftexp.review.stats import summarise
from ftexp.tracking.results import RESULTS_FILE, now
from ftexp.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def load_results(run_dir: Path) -> Dict[str, Any]:
    path = run_dir / RESULTS_FILE
    if not run_dir.is_dir():
        raise ReviewError(f"run folder {run_dir} does not exist")
    if not path.is_file():
        raise ReviewError(f"{path} does not exist: {run_dir} is not a finished ftexp run folder")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReviewError(f"{path} is not valid JSON ({exc}); nothing was imported") from None
    if not isinstance(results, dict):
        raise ReviewError(f"{path} is not an ftexp results file (not a JSON object)")
    return results


def review_folder(run_dir: Path, results: Dict[str, Any]) -> Path:
    """Where the run exported its review: as results.json records it, else as configured, else ``review``."""
    recorded = (results.get("evaluators") or {}).get("human_review") or {}
    configured = (((results.get("config") or {}).get("evaluator") or {}).get("human_review") or {})
    candidates = [f for f in (recorded.get("folder"), configured.get("folder"), "review") if f]
    for name in candidates:
        if (run_dir / name / REVIEW_JSONL).is_file():
            return run_dir / name
    return run_dir / candidates[0]


def normalised(exported: List[Dict[str, Any]], ratings: Ratings) -> str:
    lines = []
    for row in exported:
        if row["id"] in ratings.by_id:
            r = ratings.by_id[row["id"]]
            lines.append(json.dumps({"id": row["id"], **{c: r[c] for c in RATINGS}, NOTES: r[NOTES]},
                                    ensure_ascii=False))
    return "".join(line + "\n" for line in lines)


def ratings_paths(given: Union[Path, Sequence[Path]]) -> List[Path]:
    """The files named; a folder stands for its ``ratings-*.jsonl`` (the files ``ftexp review serve`` writes)."""
    out: List[Path] = []
    for p in [given] if isinstance(given, (str, Path)) else given:
        p = Path(p)
        if p.is_dir():
            found = sorted(p.glob("ratings-*.jsonl"))
            if not found:
                raise ReviewError(f"{p} is a folder without ratings-<rater>.jsonl files; nothing was imported")
            out += found
        else:
            out.append(p)
    names = [rater_name(p) for p in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ReviewError(f"rater(s) {', '.join(twice)} named by more than one file ({[str(p) for p in out]}); "
                          f"one file per rater; nothing was imported")
    return out


def read_raters(paths: List[Path], exported: List[Dict[str, Any]], folder: Path) -> Dict[str, Any]:
    """Each file validated, the human verdict of every output (combined when several), between-rater stats."""
    each = [read_ratings(p, exported, folder) for p in paths]
    by_rater = {rater_name(p): r.by_id for p, r in zip(paths, each)}
    ids = [row["id"] for row in exported]
    by_id = each[0].by_id if len(each) == 1 else combine(by_rater, ids)[0]
    fmt = each[0].format if len({r.format for r in each}) == 1 else "mixed"
    ratings = Ratings(path=paths[0], format=fmt, by_id=by_id, n_rows=sum(r.n_rows for r in each),
                      n_exported=each[0].n_exported)
    digest = hashlib.sha256()
    for p in paths:
        digest.update(hashlib.sha256(p.read_bytes()).digest() if len(paths) > 1 else p.read_bytes())
    return {"ratings": ratings, "raters": between_raters(by_rater, ids), "sha256": digest.hexdigest(),
            "files": ", ".join(str(p.resolve()) for p in paths)}


def import_ratings(ratings_file: Union[Path, Sequence[Path]], run_dir: Path, replace: bool = False,
                   use_wandb: bool = True) -> Dict[str, Any]:
    """Validate the ratings file(s) against the run's export and record them; returns ``results["review"]``.
    Several files (one per rater) add the agreement between them and are compared with the metrics by
    their combined verdict (:mod:`ftexp.review.raters`)."""
    paths, run_dir = ratings_paths(ratings_file), Path(run_dir)
    results = load_results(run_dir)
    folder = review_folder(run_dir, results)
    exported = read_export(folder)
    read = read_raters(paths, exported, folder)
    ratings = read["ratings"]
    text = normalised(exported, ratings)
    target = folder / RATINGS_JSONL
    previous = results.get("review") if isinstance(results.get("review"), dict) else None
    if target.is_file() and target.read_text(encoding="utf-8") != text and not replace:
        since = f" (imported from {previous.get('ratings_file')} at {previous.get('imported_at')})" if previous else ""
        raise ReviewError(f"{target} already holds different ratings{since}; nothing was imported. "
                          f"Pass --replace to replace them with those of {read['files']}")
    review: Dict[str, Any] = {
        "ratings_file": read["files"],
        "format": ratings.format,
        "sha256": read["sha256"],
        "imported_at": now(),
        "ratings": os.path.relpath(target, run_dir),
        "n_exported": ratings.n_exported,
        "n_rated": ratings.n_rated,
        "n_unrated": ratings.n_unrated,
        "raters": read["raters"],
        **summarise(exported, ratings.by_id),
    }
    if previous and previous.get("sha256") != review["sha256"]:
        review["replaces"] = {k: previous.get(k) for k in ("ratings_file", "sha256", "imported_at")}
    results["review"] = review
    atomic_write_text(target, text)
    atomic_write_json(run_dir / RESULTS_FILE, results)
    if use_wandb:
        location = log_to_wandb(run_dir, results, exported, ratings)
        if location:
            print(f"ftexp.review: W&B: {location}")
    return review


def log_to_wandb(run_dir: Path, results: Dict[str, Any], exported: List[Dict[str, Any]],
                 ratings: Ratings) -> Optional[str]:
    """When the run logged to W&B: a new run (job_type ``review``) in the reviewed run's own W&B group (a
    sweep's arm, or the single run's group) with the reviewed run's id in its config (``reviewed_run_id``),
    a table of the rated rows and the statistics in its summary. A run of its own rather than the reviewed
    run resumed: an offline run cannot be resumed (W&B ignores ``resume`` offline), and compare reads the
    review from it by job_type. Offline unless the run's mode or WANDB_MODE say otherwise; skipped when
    disabled; a failure only warns. Returns the W&B run's folder."""
    if (results.get("logger") or {}).get("type") != "WandbLogger":
        return None
    cfg = (results.get("config") or {}).get("logger") or {}
    mode = os.environ.get("WANDB_MODE") or cfg.get("mode") or "offline"
    if mode == "disabled":
        return None
    try:
        import wandb

        logged = results["logger"]
        name = cfg.get("name") or "/".join(run_dir.resolve().parts[-2:])
        group = logged.get("run_group") or logged.get("group") or cfg.get("group") or name
        rid = reviewed_id(logged)
        # The import prints nothing worth a Logs tab while its run is open.
        run = wandb.init(project=cfg.get("project") or "ftexp", entity=cfg.get("entity"), group=group,
                         job_type="review", name=f"{name}/review", dir=str(run_dir), mode=mode,
                         tags=[f"review-of:{rid}"] if rid else None,
                         config={"run_dir": str(run_dir.resolve()), "reviewed_run": logged.get("dir"),
                                 "reviewed_run_id": rid, "sweep": logged.get("group"),
                                 "ratings_sha256": results["review"]["sha256"]},
                         settings=wandb.Settings(silent=True, console="off", init_timeout=30))
        try:
            rows = [{**row, **ratings.by_id[row["id"]]} for row in exported if row["id"] in ratings.by_id]
            log_table(None, rows, key="review/rated", run=run, extra=[*RATINGS, NOTES])
            review = results["review"]
            for part in ("sample", "red_team"):
                for key, value in _flat(review[part], f"review/{part}").items():
                    run.summary[key] = value
            return str(Path(run.dir).parent) if getattr(run, "dir", None) else None
        finally:
            run.finish()
    except Exception as exc:  # noqa: BLE001 - the ratings are imported; W&B is a copy of them
        log.warning("ftexp.review: could not log the review to W&B (%s); the results are in %s", exc,
                    run_dir / RESULTS_FILE)
        return None


def reviewed_id(logged: Dict[str, Any]) -> Optional[str]:
    """The reviewed run's W&B id: as results.json records it, else from its folder's name
    (``[offline-]run-<time>-<id>``)."""
    if logged.get("id"):
        return str(logged["id"])
    folder = Path(str(logged.get("dir") or "")).name
    return folder.rsplit("-", 1)[-1] if folder.count("-") >= 2 and "run-" in folder else None


def _flat(d: Dict[str, Any], prefix: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}/{k}"))
        elif v is not None:
            out[f"{prefix}/{k}"] = v
    return out
