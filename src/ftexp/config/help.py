"""``python -m ftexp --help``: the config groups, their options and a line on each."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ftexp.config import config_dir
from ftexp.config.preflight import HIDDEN_GROUPS
from ftexp.config.session import group_options, hydra_context, search_dirs

HEADER = """\
ftexp: controlled LLM fine-tuning experiments.

  python -m ftexp [group=option ...] [key=value ...]      one run
  python -m ftexp -m key=a,b [other=c,d ...]              a sweep: one folder and one W&B run per job
  python -m ftexp --cfg job [overrides]                   print the composed config and stop
  python -m ftexp --hydra-help                            Hydra's own flags
  ftexp compare <multirun dir> [--metric M]               a sweep's table, report and plot (--help: more)
  ftexp review import <ratings> <run dir>                 human ratings into a run (ftexp review --help)

Config groups (default marked *); every key, its type, default and meaning: docs/settings.md
"""


def describe(group: str, option: str) -> str:
    """The first comment line of an option file (its one-line description), from the first folder of
    the search path that has it (a --config-dir before conf/)."""
    path = next((d / group / f"{option}.yaml" for d in search_dirs() if (d / group / f"{option}.yaml").is_file()), None)
    if path is None:
        return ""
    for line in path.read_text().splitlines():
        text = line.lstrip("# ").strip()
        if line.startswith("#") and text and not text.startswith("@package"):
            return text
        if line.strip() and not line.startswith("#"):
            break
    return ""


def render_help(extra_dir: Optional[str] = None) -> str:
    """The groups and options of ftexp's conf/ and, when given, of a --config-dir of the user's own."""
    from hydra import compose

    out = [HEADER]
    with hydra_context(extra_dir=extra_dir):
        loader = __import__("hydra").core.global_hydra.GlobalHydra.instance().config_loader()
        choices = compose(config_name="config", return_hydra_config=True).hydra.runtime.choices
        # The search path also holds the checkout root (for sweeps/): its other folders are not groups.
        conf_dirs = [config_dir(), *([Path(extra_dir)] if extra_dir else [])]
        groups = sorted(g for g in loader.list_groups("")
                        if g not in HIDDEN_GROUPS and (g == "sweeps" or any((d / g).is_dir() for d in conf_dirs)))
        for group in groups:
            out.append(f"  {group}")
            default = choices.get(group)
            chosen = {default} if isinstance(default, str) else set(default or [])  # list groups: several
            for option in group_options(group):
                mark = "*" if option in chosen else " "
                line = f"    {mark} {option:<18} {describe(group, option)}".rstrip()
                out.append(line)
    out.append("\nExamples:\n"
               "  python -m ftexp                                   the default: tiny model on Banking77, CPU\n"
               "  python -m ftexp model=smollm2_135m trainer=gpu    a hub model with LoRA on one GPU\n"
               "  python -m ftexp -m trainer.max_epochs=1,2         two jobs, results in multirun/<date>/<time>/<n>/\n"
               "  python -m ftexp debug=quick experiment=forgetting every stage, row and evaluator of a config on a\n"
               "                                                    few batches and examples: does it run end to end?")
    return "\n".join(out)
