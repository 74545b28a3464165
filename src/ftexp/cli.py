"""Entry point: ``python -m ftexp`` / ``ftexp``.

The command line is checked (every swept value composed once) before Hydra starts, so a typo
fails in a second with a message that names the key or option, instead of after a model load
or in the middle of a sweep.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

import hydra
from omegaconf import DictConfig

from ftexp.config import config_dir
from ftexp.config.schema import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> Optional[float]:
    from ftexp.job import run_job  # heavy imports only once the config is known to be good

    return run_job(cfg)


def main(argv: Optional[Sequence[str]] = None) -> None:
    from hydra._internal.utils import get_args_parser

    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_args_parser().parse_args(argv)
    if args.help:
        from ftexp.config.help import render_help

        print(render_help())
        return
    # Extra config folders (--config-dir/--config-path) are Hydra's to search; it checks those runs itself.
    extra_configs = args.config_dir or args.config_path
    if not (args.hydra_help or args.shell_completion or args.info or args.experimental_rerun or extra_configs):
        from ftexp.config.preflight import ConfigError, check_overrides

        try:
            check_overrides(args.overrides, args.config_name or "config", multirun=args.multirun)
        except ConfigError as exc:
            print(f"ftexp: error: {exc}", file=sys.stderr)
            sys.exit(2)
    sys.argv = [sys.argv[0], *argv]
    _hydra_main()
