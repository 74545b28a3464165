"""Run folders with a review set whose automated scores are unmistakable numbers (so a test can look for
them in what the review page serves), a review server in a thread, and small HTTP helpers."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

from ftexp.eval.base import Output
from ftexp.review.serve import ReviewServer
from ftexp.review.sitting import Sitting
from tests.helpers.review import export, read_jsonl


def review_run(run_dir: Path, model: str, n: int = 8) -> Path:
    """A run of ``model`` with ``n`` sample outputs and one red-team output exported for review."""
    run_dir.mkdir(parents=True)
    outs = [Output(id=f"qa/test/{i}", task="qa", prompt=f"question {i}", output=f"{model} says {i}",
                   reference=f"reference {i}", scores={"rougeL": 0.61803 + i / 1000, "bleu": 27.1828 + i},
                   auto_correct=i % 2 == 0) for i in range(n)]
    outs.append(Output(id="qa/red_team/0", task="qa", prompt="attack", output=f"{model} refuses",
                       red_team=True))
    export(run_dir, {"qa": outs}, n=n)
    return run_dir


def auto_values(run_dir: Path) -> List[str]:
    """Every automated score of the run's review set as text (what must never reach the page)."""
    rows = read_jsonl(run_dir / "review" / "review.jsonl")
    vals = {repr(v) for r in rows for k, v in r.items() if k.startswith("auto_") and isinstance(v, float)}
    assert vals, "the fixture has automated scores"
    return sorted(vals)


@contextlib.contextmanager
def serving(sitting: Sitting, host: str = "127.0.0.1") -> Iterator[ReviewServer]:
    import threading

    server = ReviewServer(sitting, host, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def call(url: str, body: Any = None, raw: bool = False) -> Tuple[int, Any]:
    """(status, parsed JSON or text) of a GET, or a POST of ``body`` as JSON."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    return status, (text if raw else json.loads(text))


def answer(correctness: int, helpfulness: int, tone: int, notes: str = None) -> Dict[str, Any]:
    return {"correctness": correctness, "helpfulness": helpfulness, "tone": tone, "notes": notes}
