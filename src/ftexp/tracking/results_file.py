"""The job's results.json as the run goes: what is known at its start, and its record at the end."""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional

from ftexp.tracking.identity import RunIdentity
from ftexp.tracking.loggers import Loggers
from ftexp.tracking.results import now, write_results
from ftexp.utils.secrets import redact


class ResultsFile:
    """The job's results.json: what is known at the start, written with the run's record at the end
    (``completed``) or when it fails (``failed``, with the error), secrets redacted."""

    def __init__(self, run_dir: Path, main_task: str, secrets: List[str], base: Dict[str, Any]) -> None:
        self.run_dir, self.main_task, self.secrets, self.base = run_dir, main_task, secrets, base
        self.tracker_group: Optional[str] = None  # the sweep's (or the run's) W&B group: `compare --group`
        self.run_group: Optional[str] = None  # this run's W&B group: `ftexp.review import` logs next to the run
        self.t0 = time.perf_counter()

    def link(self, group: Optional[str], identity: RunIdentity) -> None:
        """Where the run is in the tracker: ``group`` (``logger.group``) holds every job when set; else the
        sweep's identity finds every job of the sweep, the identity's group (an arm's) this one's."""
        self.run_group = group or identity.group
        self.tracker_group = group or identity.sweep or identity.group

    def write(self, record: Any, tracker: Any, error: Optional[BaseException] = None) -> Dict[str, Any]:
        results = dict(self.base)
        results.update(
            status="failed" if error is not None else "completed",
            finished_at=now(),
            # A failed run has no final metrics: its rows say how far it got (row 0 is the untrained model's).
            metrics=record.final_metrics(self.main_task) if error is None else {},
            rows=record.rows,
            stages=record.stages,
            wall_time_s={**record.wall_time_s, "total": time.perf_counter() - self.t0},
            **record.info,
        )
        if record.continual:
            results["continual"] = record.continual
        main = tracker.primary if isinstance(tracker, Loggers) else tracker
        if main is not None and main.location:  # the W&B run's fields first (compare and review read them)
            each = tracker.records() if isinstance(tracker, Loggers) else []
            results["logger"] = {"type": type(main).__name__, "dir": main.location, "id": main.run_id,
                                 "group": self.tracker_group, "run_group": self.run_group,
                                 "loggers": each or [{"type": type(main).__name__, "dir": main.location,
                                                      "id": main.run_id}]}
        if error is not None:
            results["error"] = {"type": type(error).__name__, "message": str(error),
                                "traceback": traceback.format_exception(type(error), error, error.__traceback__)[-8:]}
        results = redact(results, self.secrets)  # error messages and tracebacks too
        write_results(self.run_dir, results)
        return results
