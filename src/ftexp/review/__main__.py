"""``python -m ftexp.review import <ratings file or folder> [...] <run dir> [--replace] [--no-wandb]`` and
``python -m ftexp.review serve <run dir> [<run dir> ...] --rater NAME [--host 127.0.0.1] [--port 0]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ftexp.review.schema import RATINGS, ReviewError

PROG = "python -m ftexp.review"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Human review of a run's model outputs.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    imp = sub.add_parser(
        "import", help="add a filled ratings file to the run's results.json",
        description="Validate a filled ratings file (review.csv, a copy of review.jsonl, or a Label Studio "
                    "JSON export) against the outputs the run exported for review, then add the human "
                    "ratings and their agreement with the automated metrics to <run dir>/results.json "
                    "under 'review'. Nothing is written if the file has a problem. Several files (one per "
                    "rater, or a review folder standing for its ratings-<rater>.jsonl) add the agreement "
                    "between the raters (Krippendorff's alpha) and the outputs they disagree on; people are "
                    "then compared with the metrics by their majority verdict.")
    imp.add_argument("ratings", type=Path, nargs="+",
                     help="the ratings file(s) (.csv, .jsonl, or .json from Label Studio), or a folder of "
                          "ratings-<rater>.jsonl")
    imp.add_argument("run_dir", type=Path, help="the run folder (the one holding results.json)")
    imp.add_argument("--replace", action="store_true",
                     help="replace ratings imported before from a different file")
    imp.add_argument("--no-wandb", action="store_true",
                     help="do not log the reviewed samples to W&B even when the run used W&B")
    srv = sub.add_parser(
        "serve", help="rate a run's outputs in a local web page",
        description="Serve a review page for one rater: one output at a time (prompt, reference, output; "
                    "never the automated scores), rated with the keyboard; every answer is written at once "
                    "to <run dir>/review/ratings-<rater>.jsonl, which `import` reads. Several runs are "
                    "interleaved in an order seeded by the rater's name, the run hidden from the page.")
    srv.add_argument("run_dirs", type=Path, nargs="+", metavar="run_dir", help="run folder(s) with a review set")
    srv.add_argument("--rater", required=True, help="the rater's name (names the ratings file)")
    srv.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1; any other needs the printed token)")
    srv.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    return p


def _fmt(x: Optional[float], pct: bool = False, why: Optional[str] = None) -> str:
    if x is None:
        return f"undefined ({why})" if why else "none (no rows)"
    return f"{100 * x:.0f}%" if pct else f"{x:.3g}"


def _kappa(a: Dict[str, Any]) -> str:
    ci = a.get("cohen_kappa_ci95")
    text = f"{_fmt(a['cohen_kappa'], why=a.get('cohen_kappa_undefined'))} (n={a['n']}"
    return text + (f"; 95 % CI {ci[0]:.2f} to {ci[1]:.2f}, bootstrap over rows)" if ci else ")")


def _rho(r: Dict[str, Any], c: str) -> str:
    p = r.get(f"{c}_p")
    return _fmt(r[c], why=(r.get("undefined") or {}).get(c)) + ("" if p is None else f" (p = {p:.2g})")


def raters_lines(r: Optional[Dict[str, Any]]) -> List[str]:
    if not r or r["n_raters"] < 2:
        return []
    ci = r.get("krippendorff_alpha_ci95")
    alpha = _fmt(r["krippendorff_alpha"], why=r.get("krippendorff_alpha_undefined"))
    lines = [f"  between {r['n_raters']} raters ({', '.join(r['names'])}): Krippendorff's alpha (correctness) "
             f"{alpha} over {r['n_units']} outputs rated twice or more"
             + (f"; 95 % CI {ci[0]:.2f} to {ci[1]:.2f}, bootstrap over outputs" if ci else ""),
             f"  human verdict vs automated: {r['human_verdict']}"]
    if r["disagreements"]:
        lines.append(f"  to adjudicate ({len(r['disagreements'])} outputs the raters disagree on): "
                     + ", ".join(d["id"] for d in r["disagreements"]))
    return lines


def summary(review: Dict[str, Any]) -> str:
    s, red = review["sample"], review["red_team"]
    a = s["agreement"]
    lines = [f"ftexp.review: imported {review['n_rated']} rated outputs ({review['n_unrated']} of "
             f"{review['n_exported']} unrated) from {review['ratings_file']}"]
    if s["n_rated"]:
        lines.append("  sample (" + str(s["n_rated"]) + "): " + ", ".join(f"{c} {_fmt(s[c])}" for c in RATINGS)
                     + f"; Cohen's kappa vs automated {_kappa(a)}; automated pass but "
                     f"human fail {_fmt(a['auto_pass_human_fail_rate'], True, 'the automated verdict passes no row')} "
                     f"({a['n_auto_pass_human_fail']}/{a['n_auto_pass']})")
        for name, r in s["spearman"].items():
            lines.append(f"  Spearman vs {name} (n={r['n']}): correctness {_rho(r, 'correctness')}, "
                         f"helpfulness {_rho(r, 'helpfulness')}")
    lines += raters_lines(review.get("raters"))
    if red["n_rated"]:
        lines.append(f"  red team ({red['n_rated']}): " + ", ".join(f"{c} {_fmt(red[c])}" for c in RATINGS))
    return "\n".join(lines)


def serve(args: argparse.Namespace) -> int:
    from ftexp.review.serve import ReviewServer
    from ftexp.review.sitting import Sitting

    try:
        sitting = Sitting(args.run_dirs, args.rater).open()
    except ReviewError as exc:
        print(f"ftexp.review: error: {exc}", file=sys.stderr)
        return 1
    try:
        server = ReviewServer(sitting, args.host, args.port)
    except OSError as exc:
        sitting.close()
        print(f"ftexp.review: error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"ftexp.review: {args.rater}: {sitting.n_rated()} of {len(sitting)} rated; open {server.url}", flush=True)
    for run in sitting.runs:
        print(f"ftexp.review: answers go to {run.path}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        sitting.close()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    from ftexp.review.importer import import_ratings  # torch-heavy: after the usage check

    try:
        review = import_ratings(args.ratings, args.run_dir, replace=args.replace, use_wandb=not args.no_wandb)
    except ReviewError as exc:
        print(f"ftexp.review: error: {exc}", file=sys.stderr)
        return 1
    print(summary(review))
    print(f"ftexp.review: results: {args.run_dir / 'results.json'} (review)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
