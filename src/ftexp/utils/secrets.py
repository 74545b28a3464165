"""Keep credentials out of what a run writes and shows: results.json, the saved Hydra config (the job's
.hydra/, the sweep's multirun.yaml), logs, the console, W&B.

A secret is the value of an environment variable whose name looks like one (``*_KEY``, ``*_TOKEN``,
``*_SECRET``, ``*PASSWORD*``; ``WANDB_API_KEY`` and ``HF_TOKEN`` among them), and the value of any
variable the config reads with ``${oc.env:NAME}``, whatever NAME is (``DATABASE_URL``), but for the
few ftexp reads itself (``NOT_SECRET``). Wherever one appears in a string it is replaced by ``<redacted>``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Mapping, Optional

from ftexp.utils.io import atomic_write_text

REDACTED = "<redacted>"
SECRET_NAME = re.compile(r"(_KEY|_TOKEN|_SECRET|PASSWORD)", re.IGNORECASE)
ENV_REF = re.compile(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)")
MIN_LENGTH = 4  # shorter values ("1", "true") would redact half the file and protect nothing
# Variables conf/ reads with ${oc.env:...} whose values are settings, not credentials: hiding them would
# garble every path and W&B folder name that ftexp writes.
NOT_SECRET = frozenset({
    "FTEXP_DATA_DIR",  # data_dir (conf/config.yaml): a folder
    "FTEXP_CACHE_DIR",  # cache_dir (conf/config.yaml): a folder
    "WANDB_MODE",  # logger.mode (conf/logger/wandb.yaml): offline | online | disabled, part of run folder names
})


def secret_names(environ: Optional[Mapping[str, str]] = None) -> List[str]:
    environ = os.environ if environ is None else environ
    return [name for name in environ if SECRET_NAME.search(name)]


def secret_values(environ: Optional[Mapping[str, str]] = None, extra: Iterable[str] = ()) -> List[str]:
    """The secrets in ``environ`` (longest first, so a secret containing another is replaced whole)."""
    environ = os.environ if environ is None else environ
    values = {environ[n] for n in secret_names(environ)} | set(extra)
    return sorted((v for v in values if v and len(v) >= MIN_LENGTH), key=len, reverse=True)


def referenced_secrets(unresolved: Any, environ: Optional[Mapping[str, str]] = None) -> List[str]:
    """Values of the variables that the config (or a command line) reads with ``${oc.env:NAME}``: whatever
    NAME is, a value a user chose to keep out of the config is treated as a credential."""
    environ = os.environ if environ is None else environ
    names = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for v in node.values():
                walk(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v)
        elif isinstance(node, str):
            names.update(n for n in ENV_REF.findall(node) if n not in NOT_SECRET)

    walk(unresolved)
    return [environ[n] for n in names if environ.get(n)]


def redact(obj: Any, secrets: Iterable[str]) -> Any:
    """A copy of ``obj`` (dicts, lists, dataclass instances, strings ...) with every secret replaced."""
    secrets = list(secrets)
    if not secrets:
        return obj
    if isinstance(obj, str):
        for s in secrets:
            obj = obj.replace(s, REDACTED)
        return obj
    if isinstance(obj, Mapping):
        return {k: redact(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v, secrets) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: redact(getattr(obj, f.name), secrets)
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


@contextmanager
def redacted_argv(secrets: Iterable[str]) -> Iterator[None]:
    """``sys.argv`` without secrets while the block runs: W&B records the command line when a run starts.
    Put back after, as Lightning's DDP launcher starts the other ranks from it."""
    argv = sys.argv
    sys.argv = redact(argv, secrets)
    try:
        yield
    finally:
        sys.argv = argv


class RedactingFilter(logging.Filter):
    """Rewrites log records so that no handler prints a secret."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_log_filter(secrets: Iterable[str]) -> Optional[RedactingFilter]:
    """Add the filter to every handler of the root logger (Hydra's console and file handlers)."""
    secrets = list(secrets)
    if not secrets:
        return None
    flt = RedactingFilter(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(flt)
    return flt


_all_records = RedactingFilter([])  # the secrets redact_all_log_records was given in this process


def redact_all_log_records(secrets: Iterable[str]) -> None:
    """From now on, every log record this process makes is redacted as it is made. For what is logged
    before the job's own filter is on: Hydra replaces the root handlers (and their filters) when it starts
    and between jobs, and a filter on a logger misses what its children log (the launcher's job line)."""
    secrets, known = list(secrets), _all_records.secrets
    if not known and secrets:  # once per process; a later call only adds secrets
        make = logging.getLogRecordFactory()

        def make_redacted(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make(*args, **kwargs)
            _all_records.filter(record)
            return record

        logging.setLogRecordFactory(make_redacted)
    _all_records.secrets = sorted(set(known) | set(secrets), key=len, reverse=True)


def remove_log_filter(flt: Optional[RedactingFilter]) -> None:
    for handler in logging.getLogger().handlers:
        handler.removeFilter(flt)


def scrub_files(folder: Path, secrets: Iterable[str]) -> None:
    """Rewrite the text files of ``folder`` (the saved Hydra config) that contain a secret."""
    secrets = list(secrets)
    if not secrets or not Path(folder).is_dir():
        return
    for path in Path(folder).glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        cleaned = redact(text, secrets)
        if cleaned != text:
            atomic_write_text(path, cleaned)
