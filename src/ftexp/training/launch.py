"""Lightning's DDP launcher under Hydra: a child rank runs *this job*, never the sweep.

Lightning starts ranks 1..N-1 by re-running the command line (``lightning_fabric``'s
``_hydra_subprocess_cmd``: ``sys.argv`` plus ``hydra.run.dir``). Under ``-m`` that command still
holds ``-m`` and every swept value, so the child re-ran the whole sweep in a second timestamped
folder. Here the child gets the job's own overrides (Hydra's ``overrides.task``: the sweep's values
for this job included), the command line's choice of config (``--config-name``, ``--config-dir``,
``--config-path``, ``hydra.searchpath``: without them the child would compose a different config) and the
job's output folder, in run mode: one folder, one results.json and one W&B run per job, for single runs
and sweeps alike.
"""

from __future__ import annotations

import os
import sys
from typing import List, Tuple


def job_command(local_rank: int) -> Tuple[List[str], str]:
    """The command (and working directory) that starts ``local_rank`` of the current Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    import __main__

    hydra_cfg = HydraConfig.get()
    if __main__.__spec__ is None:  # a script, not ``python -m``
        command = [sys.executable, os.path.abspath(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    command += config_choice(sys.argv[1:])
    command += [*hydra_cfg.overrides.task,
                f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
                f"hydra.job.name=rank_{local_rank}",  # the rank's log: <job folder>/rank_<k>.log
                "hydra.output_subdir=null"]  # the job's .hydra/ is rank 0's
    return command, get_original_cwd()


def config_choice(argv: List[str]) -> List[str]:
    """The options of ``argv`` that choose which config the job composes: the primary config's name and
    folder, extra config folders and search-path overrides (the job's other overrides come from Hydra)."""
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(argv)
    chosen = []
    for option, value in (("--config-name", args.config_name), ("--config-path", args.config_path),
                          ("--config-dir", args.config_dir)):
        if value is not None:
            chosen += [option, value]
    return chosen + [o for o in args.overrides if o.lstrip("+~").startswith("hydra.searchpath")]


def install() -> None:
    """Make Lightning's subprocess launcher start child ranks with :func:`job_command`."""
    from pytorch_lightning.strategies.launchers import subprocess_script

    subprocess_script._hydra_subprocess_cmd = job_command
