"""``python -m ftexp.compare <multirun dir> [--out DIR] [--metric M]`` or ``--wandb ENTITY/PROJECT --group G``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from ftexp.compare import CompareError, default_out, read_multirun
from ftexp.compare.report import write_report
from ftexp.compare.wandb_log import log_report
from ftexp.compare.wandb_runs import read_wandb


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ftexp.compare",
        description="Compare the jobs of a sweep: report.md, table.csv (mean ± 95 %% CI over seeds, n per "
                    "cell) and plots chosen by the sweep; failed and unreadable jobs are listed with why.",
        epilog="examples:\n  python -m ftexp.compare multirun/2026-11-26/10-00-00\n"
               "  python -m ftexp.compare multirun/2026-11-26/10-00-00 --metric test/macro_f1 --out /tmp/e2\n"
               "  python -m ftexp.compare --wandb me/ftexp --group dataset_size/2026-11-26/10-00-00",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", nargs="?", type=Path, help="a Hydra multirun folder: multirun/<date>/<time>/")
    p.add_argument("--out", type=Path, help="where to write (default: <folder>/compare, or compare/<group>)")
    p.add_argument("--metric", help="the primary metric (default: test/accuracy when the jobs have it)")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from W&B instead of a folder")
    p.add_argument("--group", help="the W&B group of the sweep (results.json -> logger.group)")
    p.add_argument("--log-wandb", action="store_true",
                   help="also log the report, table and plots as an artifact of a 'compare' run in the sweep's "
                        "W&B group (offline unless WANDB_MODE=online; then `wandb sync <out>/wandb/offline-run-*`)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.wandb and args.folder:
        p.error("give a folder or --wandb ENTITY/PROJECT --group G, not both")
    if args.wandb and not args.group:
        p.error("--wandb needs --group (a sweep's group is '<sweep file>/<date>/<time>')")
    if not args.wandb and args.folder is None:
        p.error("give a multirun folder (multirun/<date>/<time>/), or --wandb ENTITY/PROJECT --group G")
    try:
        sweep = read_wandb(args.wandb, args.group) if args.wandb else read_multirun(args.folder)
        report = write_report(sweep, args.out or default_out(args.folder, args.group), args.metric)
        print(f"ftexp.compare: report: {report}")
        print(f"ftexp.compare: table: {report.parent / 'table.csv'}")
        if args.log_wandb:
            print(f"ftexp.compare: W&B: {log_report(sweep, report)}")
        if not sweep.completed:  # the report lists why; a caller must not take it for a result
            raise CompareError(f"no job of {sweep.source} completed, so there is nothing to compare: "
                               + "; ".join(f"{j.name}: {j.status}, {j.error or 'no error recorded'}"
                                           for j in sweep.jobs[:5])
                               + (f"; and {len(sweep.jobs) - 5} more" if len(sweep.jobs) > 5 else "")
                               + f". Every job is listed with its error in {report}.")
    except CompareError as exc:
        print(f"ftexp.compare: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
