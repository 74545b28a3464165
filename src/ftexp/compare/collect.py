"""Read a sweep's jobs into one record shape, from a Hydra multirun folder or from a W&B group.

A job is ``completed`` (its metrics count), ``failed`` (listed with its error), ``incomplete``
(``status: running``: stopped before it finished) or ``unreadable`` (no results.json, a truncated or
otherwise invalid one). Nothing is dropped: every job found is in :attr:`Sweep.jobs`. The swept keys
are the override keys whose values differ across jobs; ``seed`` is the replicate axis, never a key,
and neither are overrides that only steer the run (``resume=true``, the logger, progress bars).
Reads JSON and YAML only: no training code, torch or Lightning.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

RESULTS_FILE = "results.json"  # as ftexp.tracking.results writes it (not imported: it pulls in ftexp.utils)
REPLICATE = "seed"
# Overrides that change how a job runs or is shown, not what it computes: never a swept key. (A sweep resumed
# with resume=true carries it on the jobs that ran after the resume only; cells must not split there.)
RUN_CONTROL = ("resume", "overwrite", "output_dir", "cache_dir", "cache_stages", "cache_rows", "save_model",
               "objective", "logger", "progress", "trainer.checkpoints", "trainer.enable_progress_bar",
               "trainer.num_workers", "trainer.log_every_n_steps")


def run_control(key: str) -> bool:
    key = key.lstrip("+~")
    return key in RUN_CONTROL or key.startswith(("logger.", "report.", "progress."))


QUESTIONS = {  # DESIGN.md's table, for a sweep whose files cannot be found
    "E1": "Does synthetic data help or hurt?", "E2": "How many examples are enough?",
    "E3": "How much does iterative fine-tuning forget, and what stops it?",
    "E4": "Do automated metrics agree with people?", "E5": "Is a bigger model worth it?"}


class CompareError(Exception):
    """Nothing to compare (no jobs, an unreachable W&B group); the message says what was looked at."""


@dataclass
class Job:
    name: str
    source: str  # the job folder or the W&B run's URL
    status: str  # completed | failed | incomplete | unreadable
    error: Optional[str] = None
    overrides: Dict[str, str] = field(default_factory=dict)
    seed: Optional[Any] = None
    metrics: Dict[str, float] = field(default_factory=dict)
    tags: List[str] = field(default_factory=list)
    sweep_name: Optional[str] = None  # the sweep file (``sweeps=...``)
    experiment: Optional[str] = None
    wandb: Optional[Dict[str, Any]] = None  # project, entity, group, mode of the job's W&B run
    report: Optional[Dict[str, Any]] = None  # the composed config's ``report`` node (None: a job from before it)
    row0: Dict[str, float] = field(default_factory=dict)  # the untrained model's scores (rows[0]), keyed as metrics
    labels: Dict[str, int] = field(default_factory=dict)  # classes per task ("" = the main task), where known


@dataclass
class Sweep:
    source: str
    jobs: List[Job]
    keys: List[str] = field(default_factory=list)  # swept, in sweep order
    order: Dict[str, List[str]] = field(default_factory=dict)  # each key's values as the sweep lists them
    tags: List[str] = field(default_factory=list)
    question: List[str] = field(default_factory=list)
    command: Optional[str] = None
    wandb: Optional[Dict[str, Any]] = None  # where the sweep's runs are in W&B (for the report's artifact)
    report: Optional[Dict[str, Any]] = None  # what the jobs' experiment or sweep file declares (ReportConfig)

    @property
    def completed(self) -> List[Job]:
        return [j for j in self.jobs if j.status == "completed"]

    @property
    def problems(self) -> List[Job]:
        return [j for j in self.jobs if j.status != "completed"]


# ------------------------------------------------------------------------------------ one results file


def number(v: Any) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def flatten(d: Any, prefix: str) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}/{k}"))
        elif number(v) is not None:
            out[f"{prefix}/{k}"] = number(v)
    return out


def job_metrics(results: Dict[str, Any]) -> Dict[str, float]:
    """results.json ``metrics`` plus what other sections say: parameters, real training-set size,
    wall time and the imported human review (``review/sample/...``, ``review/red_team/...``)."""
    out = {k: number(v) for k, v in (results.get("metrics") or {}).items() if number(v) is not None}
    params = ((results.get("model") or {}).get("parameters") or {})
    out.update({f"model/parameters_{k}": number(v) for k, v in params.items() if number(v) is not None})
    train = (((results.get("data") or {}).get("counts") or {}).get("train") or {}).get("total")
    if number(train) is not None:
        out["data/n_train"] = number(train)
    wall = (results.get("wall_time_s") or {}).get("total")
    if number(wall) is not None:
        out["time/wall_s"] = number(wall)
    review = results.get("review")
    if isinstance(review, dict):
        for part in ("sample", "red_team", "raters"):  # raters: several people's agreement (alpha)
            out.update(flatten(review.get(part), f"review/{part}"))
    return derive(out)


def row0_metrics(results: Dict[str, Any]) -> Dict[str, float]:
    """Row 0 (evaluators on the untouched model) keyed as the final metrics are: the main task's bare."""
    main = (results.get("data") or {}).get("name")
    row = next((r for r in results.get("rows") or [] if isinstance(r, dict) and r.get("index") == 0), None)
    values = (row or {}).get("metrics") or {}
    return {k if task == main else f"{task}/{k}": number(v) for task, metrics in values.items()
            if isinstance(metrics, dict) for k, v in metrics.items() if number(v) is not None}


def label_counts(results: Dict[str, Any]) -> Dict[str, int]:
    """Classes of the main task (key "") and of each task by name, where results.json records them."""
    out = {"": (results.get("data") or {}).get("labels")}
    out.update({t: d.get("labels") for t, d in (results.get("tasks") or {}).items() if isinstance(d, dict)})
    return {k: int(v) for k, v in out.items() if isinstance(v, int) and not isinstance(v, bool) and v > 1}


def derive(metrics: Dict[str, float]) -> Dict[str, float]:
    """The automated verdict's pass rate on the reviewed rows, beside the human correctness rate, and that
    rate's 95 % Wilson interval over the rated rows of the run."""
    n, passed = metrics.get("review/sample/agreement/n"), metrics.get("review/sample/agreement/n_auto_pass")
    if n and passed is not None:
        metrics["review/sample/agreement/auto_pass_rate"] = passed / n
    rate, rated = metrics.get("review/sample/correctness"), metrics.get("review/sample/n_rated")
    if rate is not None and rated:
        low, high = wilson(rate, rated)
        metrics["review/sample/correctness_ci95_low"], metrics["review/sample/correctness_ci95_high"] = low, high
    return metrics


def wilson(p: float, n: float, z: float = 1.959963984540054) -> Tuple[float, float]:
    """Wilson's score interval of a proportion: stays inside [0, 1] and is not empty at 0 or 1 (few rows)."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def parse_overrides(items: Iterable[str]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for item in items or []:
        text = str(item)
        if text.startswith("~"):
            out[text[1:].split("=", 1)[0]] = "(deleted)"
        elif "=" in text:
            key, value = text.split("=", 1)
            out[key.lstrip("+")] = value
    return out


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('type') or 'Error'}: {error.get('message') or '(no message)'}"
    return str(error) if error else "(no error recorded)"


def _yaml(path: Path) -> Any:
    import yaml  # PyYAML, already there for Hydra

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def read_job(folder: Path, name: str) -> Job:
    """One job folder; never raises: what cannot be read makes the job ``unreadable``, with why."""
    path = folder / RESULTS_FILE
    job = Job(name=name, source=str(folder), status="unreadable")
    try:  # the job's own overrides as Hydra saved them: they place even an unreadable job in its cell
        job.overrides = parse_overrides(_yaml(folder / ".hydra" / "overrides.yaml") or [])
    except Exception:  # noqa: BLE001 - optional
        pass
    job.seed = job.overrides.get(REPLICATE)
    if not path.is_file():
        job.error = f"no {RESULTS_FILE} (the job never started, or was killed before writing one)"
        return job
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        job.error = f"{RESULTS_FILE} is not valid JSON (truncated or partial?): {exc}"
        return job
    if not isinstance(results, dict) or "status" not in results:
        job.error = f"{RESULTS_FILE} is not an ftexp results file (no status)"
        return job
    try:
        return _fill(job, results)
    except (AttributeError, TypeError, ValueError) as exc:  # a section of the wrong shape
        job.status, job.metrics = "unreadable", {}
        job.error = f"{RESULTS_FILE} is malformed ({type(exc).__name__}: {exc})"
        return job


def _fill(job: Job, results: Dict[str, Any]) -> Job:
    config = results.get("config") if isinstance(results.get("config"), dict) else {}
    choices = results.get("choices") if isinstance(results.get("choices"), dict) else {}
    job.overrides = parse_overrides(results.get("overrides")) or job.overrides
    job.seed = results.get("seed", config.get("seed"))
    job.tags = [str(t) for t in (config.get("tags") or [])]
    job.report = config.get("report") if isinstance(config.get("report"), dict) else None
    job.sweep_name, job.experiment = choices.get("sweeps"), choices.get("experiment")
    job.metrics = job_metrics(results)
    job.row0, job.labels = row0_metrics(results), label_counts(results)
    logger = results.get("logger") if isinstance(results.get("logger"), dict) else {}
    if logger.get("type") == "WandbLogger":
        logged = config.get("logger") if isinstance(config.get("logger"), dict) else {}
        job.wandb = {"project": logged.get("project") or "ftexp", "entity": logged.get("entity"),
                     "group": logger.get("group") or logged.get("group"), "mode": logged.get("mode")}
    status = results.get("status")
    if status == "completed" and not isinstance(results.get("metrics"), dict):
        job.error = f"{RESULTS_FILE} says completed but holds no metrics"
    elif status == "completed":
        job.status = "completed"
    elif status == "failed":
        job.status, job.error = "failed", _error_text(results.get("error"))
    else:
        job.status = "incomplete"
        job.error = f"status '{status}': the job stopped before it finished (killed, out of memory or time?)"
    return job


# ------------------------------------------------------------------------------------ a multirun folder


def _numeric_name(p: Path) -> Tuple[int, Any]:
    return (0, int(p.name)) if p.name.isdigit() else (1, p.name)


def find_job_folders(root: Path) -> List[Path]:
    """Numbered subfolders (Hydra's ``${hydra.job.num}``) and any other holding a results.json or a job's
    .hydra record: a sweep launched in parts into one folder names its jobs by their overrides
    (``hydra.sweep.subdir=${hydra.job.override_dirname}``), and a part's unfinished job still counts."""
    if (root / RESULTS_FILE).is_file():
        return [root]
    subs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted((p for p in subs if p.name.isdigit() or (p / RESULTS_FILE).is_file() or (p / ".hydra").is_dir()),
                  key=_numeric_name)


def _sweep_values(text: str) -> Optional[List[str]]:
    if "(" in text or "[" in text:  # range(), choice(), lists: not a plain comma list
        return None
    return [v.strip() for v in text.split(",")] if "," in text else None


def read_multirun(root: Path) -> Sweep:
    root = Path(root)
    if not root.is_dir():
        raise CompareError(f"{root} is not a folder. Pass a Hydra multirun folder (multirun/<date>/<time>/, "
                           f"one numbered subfolder per job), or --wandb ENTITY/PROJECT --group GROUP.")
    folders = find_job_folders(root)
    if not folders:
        inner = sorted(str(p.parent) for p in root.glob("*/multirun.yaml")) + \
            sorted(str(p.parent) for p in root.glob("*/*/multirun.yaml"))
        hint = (f" It holds these sweeps; pass one of them: {', '.join(inner[:8])}." if inner else
                " A Hydra multirun folder is multirun/<date>/<time>/, with multirun.yaml and one numbered "
                "subfolder per job (python -m ftexp -m ...).")
        raise CompareError(f"{root} holds no jobs: no numbered subfolder and none with a {RESULTS_FILE}.{hint}")
    jobs = [read_job(f, "." if f == root else str(f.relative_to(root))) for f in folders]
    sweep = Sweep(source=str(root), jobs=jobs)
    # Jobs named by their overrides: a sweep launched in parts, and multirun.yaml records the last part's
    # command only. Its sweep file's values still give the order; no command stands for the whole.
    in_parts = any(f != root and not f.name.isdigit() for f in folders)
    try:  # the command and each key's values in sweep order
        hydra = (_yaml(root / "multirun.yaml") or {}).get("hydra") or {}
        task = [str(t) for t in ((hydra.get("overrides") or {}).get("task") or [])]
        if task and not in_parts:
            sweep.command = "python -m ftexp -m " + " ".join(shlex.quote(t) for t in [*config_dir_flag(hydra), *task])
        params = {str(k): str(v) for k, v in ((hydra.get("sweeper") or {}).get("params") or {}).items()}
        if not in_parts:
            params.update(parse_overrides(task))
        sweep.order = {k.lstrip("+"): vals for k, v in params.items() if (vals := _sweep_values(v))}
    except Exception:  # noqa: BLE001 - a launcher that writes none, or another shape: the jobs say the rest
        pass
    return finish(sweep)


def config_dir_flag(hydra: Dict[str, Any]) -> List[str]:
    """``--config-dir PATH`` when the sweep added a folder of its own configs (Hydra records it as
    the search path's command-line source)."""
    sources = (hydra.get("runtime") or {}).get("config_sources") or []
    return [x for s in sources if s.get("provider") == "command-line" for x in ("--config-dir", s.get("path", ""))]


def finish(sweep: Sweep) -> Sweep:
    """Swept keys, tags, the declared report and the question, from what the jobs say."""
    keys: List[str] = []
    for job in sweep.jobs:
        keys += [k for k in job.overrides if k not in keys and k != REPLICATE and not run_control(k)]
    known = [j for j in sweep.jobs if j.overrides]
    swept = [k for k in keys if len({j.overrides.get(k) for j in known}) > 1]
    first = [k for k in sweep.order if k in swept]
    sweep.keys = first + [k for k in swept if k not in first]
    for job in sweep.jobs:
        sweep.tags += [t for t in job.tags if t not in sweep.tags]
    sweep.wandb = sweep.wandb or next((j.wandb for j in sweep.jobs if j.wandb), None)
    # Every job of a sweep composes the same report node; a completed job's is the one whose results count.
    sweep.report = next((j.report for j in sweep.completed + sweep.jobs if j.report is not None), None)
    named = next((j for j in sweep.completed + sweep.jobs if j.sweep_name or j.experiment), None)
    sweep.question = question(named.sweep_name if named else None, named.experiment if named else None, sweep.tags)
    return sweep


def _header(path: Optional[Path]) -> List[str]:
    """The prose of a config file's leading comment: up to its first indented (command) line."""
    if path is None:
        return []
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#") or line[1:].startswith("  "):
            break
        text = line[1:].strip()
        if text and not text.startswith(("@package", "python ")):
            lines.append(text)
    return [" ".join(lines)] if lines else []


def config_file(group: str, name: Optional[str]) -> Optional[Path]:
    if not name:
        return None
    package = Path(__file__).resolve().parents[1]
    repo = package.parents[1]  # a checkout (editable install); else the wheel's copies
    roots = [repo / group, repo / "conf" / group, package / "_sweeps_root" / group, package / "conf" / group]
    return next((r / f"{name}.yaml" for r in roots if (r / f"{name}.yaml").is_file()), None)


def question(sweep_name: Optional[str], experiment: Optional[str], tags: List[str]) -> List[str]:
    header = _header(config_file("sweeps", sweep_name)) or _header(config_file("experiment", experiment))
    said = header[0].split()[0] if header and "?" in header[0] else ""  # "E3 — how much ...?" asks it already
    return [f"{t}: {QUESTIONS[t]}" for t in tags if t in QUESTIONS and t != said] + header
