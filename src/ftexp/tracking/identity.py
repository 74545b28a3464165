"""How a job is named in the tracker, so that W&B shows a sweep already split by arm.

A sweep's jobs differ in the keys it varies. ``seed`` makes replicates; every other swept key makes
arms. Each arm is one W&B group (``<sweep>/<arm>``, e.g. ``mitigation/2026-12-07/10-00-00/mitigation=ewc``),
so a group's members are the seeds of one arm and W&B draws their mean and spread. The whole sweep
stays queryable: the tag ``sweep:<sweep>`` and the config field ``sweep``. ``swept`` holds this job's
values of the swept keys, typed as Hydra parses them (``data.n_train=100`` -> 100, ``optim.lr=1e-4``
-> 0.0001, ``mitigation=ewc`` -> "ewc"), so W&B sorts and plots them as numbers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

SEED = "seed"  # the swept key that makes replicates, not arms
TAG_MAX = 64  # W&B refuses longer tags
GROUP_MAX = 128  # and keeps group names to 128 characters


@dataclass
class RunIdentity:
    """How the job is named in the tracker: its name, its group
    (a sweep's arm, or the run itself), job type and tags; for a sweep, the sweep and the arm."""

    name: str
    group: Optional[str] = None
    job_type: Optional[str] = None
    tags: List[str] = field(default_factory=list)  # the run's own tags (``tags=[...]``), then the sweep's
    swept: Dict[str, Any] = field(default_factory=dict)  # this job's values of the keys its sweep varies, typed
    sweep: Optional[str] = None  # ``<sweep file or "sweep">/<date>/<time>``: every job of the sweep
    arm: Optional[str] = None  # the swept values but the seed (``a=1,b=x``); "" when only seeds vary

    def config(self) -> Dict[str, Any]:
        """What the tracker's config adds to the resolved config: ``swept`` (and ``sweep``, ``arm``)."""
        extra: Dict[str, Any] = {"swept": dict(self.swept)}
        if self.sweep is not None:
            extra.update(sweep=self.sweep, arm=self.arm)
        return extra


def typed_value(key: str, text: str) -> Any:
    """``text`` (an override's value) as Hydra's override grammar types it; the text itself when it does
    not parse (e.g. a value scrubbed of a secret) or is not a plain value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        [override] = OverridesParser.create().parse_overrides([f"{key}={text}"])
        value = override.value()
    except Exception:  # noqa: BLE001 - a value the grammar refuses is kept as written
        return text
    return value if value is None or isinstance(value, (bool, int, float, str)) else text


def typed_swept(own: Dict[str, str], keys: Iterable[str]) -> Dict[str, Any]:
    """key -> this job's value (typed) for every swept key; ``own``: the job's overrides as written."""
    return {k: typed_value(k, own[k]) if k in own else None for k in keys}


def arm_of(own: Dict[str, str], keys: Iterable[str]) -> str:
    """The job's arm: its values of the swept keys other than the seed, as written (``a=1,b=x``); "" when
    only the seed is swept."""
    return ",".join(f"{k}={own.get(k, '')}" for k in sorted(keys) if k.lstrip("+~") != SEED)


def group_of(sweep: str, arm: str) -> str:
    """``<sweep>/<arm>`` (the sweep alone when only seeds vary); an arm too long for W&B's group names is cut
    and ends with a hash of the whole arm, so two arms never share a group."""
    group = f"{sweep}/{arm}" if arm else sweep
    if len(group) <= GROUP_MAX:
        return group
    digest = hashlib.sha1(arm.encode("utf-8")).hexdigest()[:8]
    return f"{group[:GROUP_MAX - 9]}~{digest}"


def tags(*groups: Iterable[str]) -> List[str]:
    """The tags in order, each once, cut to W&B's length limit."""
    out: List[str] = []
    for tag in (str(t)[:TAG_MAX] for group in groups for t in group):
        if tag and tag not in out:
            out.append(tag)
    return out


def sweep_identity(sweep: str, run_dir: Path, experiment: Optional[str], own: Dict[str, str],
                   keys: List[str], run_tags: Optional[List[str]] = None) -> RunIdentity:
    """A job of sweep ``sweep`` (``<sweep file or "sweep">/<date>/<time>``): its arm's group, job type the
    experiment (else ``sweep``), tags naming the sweep, its arm and the swept keys (``swept:seed`` marks
    the replicates)."""
    arm = arm_of(own, keys)
    name = sweep.split("/")[0]
    return RunIdentity(
        name=f"{sweep}/{run_dir.name}", group=group_of(sweep, arm), job_type=experiment or "sweep",
        tags=tags(run_tags or [], [name, f"sweep:{sweep}"], [f"arm:{arm}"] if arm else [],
                  [f"swept:{k}" for k in keys]),
        swept=typed_swept(own, keys), sweep=sweep, arm=arm)


def single_identity(run_dir: Path, experiment: Optional[str], run_tags: Optional[List[str]] = None) -> RunIdentity:
    """A single run: named after its folder, in a group of its own (the review import joins it there)."""
    parts = run_dir.parts
    name = "/".join(parts[-2:]) if len(parts) >= 2 else run_dir.name
    return RunIdentity(name=name, group=name, job_type=experiment or "run", tags=tags(run_tags or []))
