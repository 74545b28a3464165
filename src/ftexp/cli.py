"""Entry point: ``python -m ftexp`` / ``ftexp``.

The command line is checked (every swept value composed once) before Hydra starts, so a typo
fails in a second with a message that names the key or option, instead of after a model load
or in the middle of a sweep.
"""

from __future__ import annotations

import sys
from typing import List, Optional, Sequence

import hydra
from omegaconf import DictConfig

from ftexp.config import config_dir
from ftexp.config.schema import register_configs
from ftexp.utils.secrets import redact, redact_all_log_records, referenced_secrets, secret_values

register_configs()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> Optional[float]:
    from ftexp.job import run_job  # heavy imports only once the config is known to be good

    return run_job(cfg)


# ``ftexp compare/review/merge/generate ...``: the tools beside a run, by the module whose ``main`` takes the rest.
SUBCOMMANDS = {"compare": "ftexp.compare.__main__", "review": "ftexp.review.__main__",
               "merge": "ftexp.use.merge", "generate": "ftexp.use.generate"}


def main(argv: Optional[Sequence[str]] = None) -> None:
    from hydra._internal.utils import get_args_parser

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        sys.exit(run_subcommand(argv[0], argv[1:]))
    if "--version" in argv:  # Hydra's own flag names only Hydra's version
        print(version_text())
        return
    # Neither Hydra's console lines (a sweep's "#0 : <overrides>") nor the errors below echo a secret.
    secrets = secret_values(extra=referenced_secrets(argv))
    redact_all_log_records(secrets)
    args = get_args_parser().parse_args(argv)
    refused = _refused_flag(args)
    if refused:
        print(f"ftexp: error: {redact(refused, secrets)}", file=sys.stderr)
        sys.exit(2)
    if args.help:
        from ftexp.config.help import render_help

        print(render_help(args.config_dir))
        return
    from ftexp.config.preflight import ConfigError, check_hydra_nodes, check_overrides

    try:
        if args.hydra_help or args.shell_completion or args.info:
            check_hydra_nodes(args.overrides, args.config_name or "config", extra_dir=args.config_dir)
        else:
            check_overrides(args.overrides, args.config_name or "config", multirun=args.multirun,
                            extra_dir=args.config_dir)
    except ConfigError as exc:
        print(f"ftexp: error: {redact(str(exc), secrets)}", file=sys.stderr)
        sys.exit(2)
    if args.cfg and args.resolve:
        argv = [*argv, *_output_dir_override(args)]
    sys.argv = [sys.argv[0], *argv]
    _hydra_main()


def run_subcommand(name: str, args: Sequence[str]) -> int:
    """Hand ``args`` to the main function of the subcommand's module; its exit status."""
    import importlib

    return importlib.import_module(SUBCOMMANDS[name]).main(list(args)) or 0


def version_text() -> str:
    """ftexp's version (as installed, else the package's own) and Hydra's."""
    from importlib.metadata import PackageNotFoundError, version

    import ftexp

    try:
        ours = version("ftexp")
    except PackageNotFoundError:  # a source checkout on PYTHONPATH, not installed
        ours = ftexp.__version__
    return f"ftexp {ours}\nHydra {hydra.__version__}"


def _output_dir_override(args) -> List[str]:
    """Hydra sets ``hydra.runtime.output_dir`` only when a job starts, so ``--cfg ... --resolve`` (which starts
    none) fails on ``output_dir: ${hydra:runtime.output_dir}``. Name the folder a run started now would get."""
    import os

    from omegaconf import OmegaConf

    from ftexp.config.preflight import compose_config

    if any(o.split("=", 1)[0].lstrip("+~") == "hydra.runtime.output_dir" for o in args.overrides):
        return []
    cfg = compose_config(args.overrides, args.config_name or "config", return_hydra_config=True,
                         extra_dir=args.config_dir)
    folder = os.path.abspath(str(OmegaConf.select(cfg, "hydra.run.dir")))
    quoted = folder.replace("'", "\\'")  # a quoted override value: Hydra reads it as it is, but for quotes
    return [f"hydra.runtime.output_dir='{quoted}'"]


def _refused_flag(args) -> Optional[str]:
    """Hydra flags that would take the config out of ftexp's checks."""
    if args.config_path:
        return (f"--config-path {args.config_path}: ftexp composes its runs from its own conf/ tree, which this "
                "flag would replace; put your own groups and experiment files in a folder and add it with "
                "--config-dir (its files come first).")
    if args.experimental_rerun:
        return (f"--experimental-rerun {args.experimental_rerun}: loading a pickled config can run any code it "
                "names; re-run a job from its folder's .hydra/overrides.yaml, or continue it with resume=true.")
    return None
