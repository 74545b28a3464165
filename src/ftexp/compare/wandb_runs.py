"""A sweep's runs from W&B into :mod:`collect`'s shape: ``wandb.Api().runs(path, filters=...)`` by the
sweep's identity (results.json's ``logger.group``): the runs of that W&B group, else (a sweep grouped
per arm) the runs whose config says ``sweep: <it>``.

The job wrapper logs the resolved config (plus ``swept``: this job's values of the keys its sweep
varies, typed; ``sweep`` and ``arm``) as the run's config, results.json's ``metrics`` as
``final/<metric>`` in its summary and ``status`` (completed | failed). ``python -m ftexp.review
import`` logs a second run in the reviewed run's group (job_type ``review``, config ``run_dir`` and
``sweep``) whose summary holds ``review/sample/...``.
"""

from __future__ import annotations

from typing import Any, Dict, List

from ftexp.compare.collect import CompareError, Job, Sweep, derive, finish, number


def _plain(config: Any) -> Dict[str, Any]:
    """W&B's config, whether values come plain or wrapped as ``{"value": ...}``."""
    config = dict(config or {})
    return {k: v["value"] if isinstance(v, dict) and set(v) <= {"value", "desc"} and "value" in v else v
            for k, v in config.items()}


def _summary(run: Any) -> Dict[str, Any]:
    summary = getattr(run, "summary_metrics", None)
    if not isinstance(summary, dict):
        raw = getattr(run, "summary", None) or {}
        summary = getattr(raw, "_json_dict", None) or {k: raw[k] for k in raw.keys()}
    return dict(summary)


def _text(value: Any) -> str:
    """A swept value (typed since ``swept`` holds numbers) as an override writes it."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


STATES = {"finished": "completed", "failed": "failed", "crashed": "failed", "killed": "failed",
          "running": "incomplete", "pending": "incomplete", "preempted": "incomplete"}


def wandb_job(run: Any) -> Job:
    """One W&B run of a sweep: the final metrics (``final/...``), ``config.swept`` as its overrides."""
    config, summary = _plain(run.config), _summary(run)
    source = getattr(run, "url", None) or "/".join(getattr(run, "path", []) or []) or str(run.id)
    job = Job(name=str(getattr(run, "name", None) or run.id), source=source, status="unreadable",
              overrides={str(k): _text(v) for k, v in (config.get("swept") or {}).items()},
              seed=config.get("seed"), tags=[str(t) for t in (config.get("tags") or getattr(run, "tags", None) or [])])
    job.report = config.get("report") if isinstance(config.get("report"), dict) else None
    final = {k[len("final/"):]: v for k, v in summary.items() if k.startswith("final/")}
    if not final:  # runs from before ``final/``: every numeric summary entry but W&B's own
        final = {k: v for k, v in summary.items() if not k.startswith("_")}
    job.metrics = {k: number(v) for k, v in final.items() if number(v) is not None}
    status = summary.get("status") if summary.get("status") in ("completed", "failed") else None
    job.status = status or STATES.get(str(getattr(run, "state", "")), "incomplete")
    if job.status == "failed":
        job.error = str(summary.get("error") or f"W&B run state '{getattr(run, 'state', '?')}' (the error is in "
                                                  f"the run's logs and its results.json)")
    elif job.status == "incomplete":
        job.error = f"W&B run state '{getattr(run, 'state', '?')}': not finished"
    return job


def sweep_runs(api: Any, path: str, group: str) -> List[Any]:
    """The runs of W&B group ``group``; when it holds no job (a sweep grouped per arm, whose ``group`` is
    the sweep's identity), the runs whose config names it as their ``sweep``."""
    runs = list(api.runs(path, filters={"group": group}))
    if any(getattr(run, "job_type", None) not in ("compare", "review") for run in runs):
        return runs
    return list(api.runs(path, filters={"config.sweep": group}))


def read_wandb(path: str, group: str, api: Any = None) -> Sweep:
    """Every run of the sweep ``group`` (see :func:`sweep_runs`) in ``entity/project``; review runs (job_type
    ``review``, written by ``python -m ftexp.review import``) add their ``review/...`` summary to the run they
    review."""
    try:
        if api is None:
            import wandb

            api = wandb.Api()
        runs = sweep_runs(api, path, group)
    except Exception as exc:  # noqa: BLE001 - no wandb, no login, no network, a wrong path: say which
        raise CompareError(f"could not list the runs of W&B group '{group}' in '{path}' "
                           f"({type(exc).__name__}: {exc}); W&B needs network and a login (wandb login or "
                           f"WANDB_API_KEY). Offline, compare the sweep's folder instead.") from None
    jobs, reviews = [], {}
    for run in runs:
        config = _plain(run.config)
        if getattr(run, "job_type", None) == "compare":  # an earlier report of this sweep, not a job
            continue
        if getattr(run, "job_type", None) == "review":
            reviews[str(config.get("run_dir") or "")] = {k: number(v) for k, v in _summary(run).items()
                                                         if k.startswith("review/") and number(v) is not None}
        else:
            job = wandb_job(run)
            job.sweep_name = group.split("/")[0] if "/" in group else None
            job_type = getattr(run, "job_type", None)  # the experiment (ftexp.job names it so)
            job.experiment = job_type if job_type not in ("run", "sweep") else None
            jobs.append((str(config.get("output_dir") or ""), job))
    for output_dir, job in jobs:  # the review of a job, matched by the job's folder
        job.metrics = derive({**reviews.get(output_dir, {}), **job.metrics})
    if not jobs:
        raise CompareError(f"W&B group '{group}' in '{path}' holds no runs, nor does config sweep={group} (check "
                           f"the entity/project and the group: a sweep's is '<sweep file>/<date>/<time>', as "
                           f"results.json's logger.group says)")
    entity, _, project = path.rpartition("/")
    where = {"project": project, "entity": entity or None, "group": group, "mode": "online"}
    return finish(Sweep(source=f"wandb:{path} group={group}", jobs=[j for _, j in jobs], wandb=where))
