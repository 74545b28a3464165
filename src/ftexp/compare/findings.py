"""``python -m ftexp.compare.findings docs/findings.yaml``: the findings page, rebuilt from the runs.

The YAML names, per question, the sweep folder that answers it (outputs are never committed: the page
says which folder on which machine its numbers come from), what was held fixed, and what the result does
and does not support. For each folder this runs the compare report into ``<page dir>/<id>/`` (table.csv,
report.md, plots) and puts its results table and plots on the page, so every number on it comes from a
run. Prose may quote a number only through a placeholder, filled from the same cells:

    {{E3 | finetune=lora, mitigation=none | cl/forgetting/banking77}}    ->  0.41 ± 0.03 (or "0.41 (n=1)")

Single runs (not sweeps) are named under ``runs`` and shown as a table of one row's metrics per run,
e.g. the untouched pretrained model beside the same architecture with random weights. A run is a folder,
or ``{folder: ..., row: N}`` for a row other than the question's ``row`` (default 0); prose quotes it by
its name: ``{{floor | random weights | truthfulqa_mc/test/mc1}}``.

``examples`` shows a few of a job's exported review rows (question, reference, the model's answer, its
automated scores), so that a reader can judge answers a metric passed:
``examples: {job: "seed=0", n: 4, auto_correct: true}`` (or a list of such).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ftexp.compare.collect import CompareError, Sweep, read_multirun
from ftexp.compare.report import write_report
from ftexp.compare.stats import cells as make_cells, fmt, number_text
from ftexp.review.files import read_export
from ftexp.review.schema import REVIEW_JSONL, ReviewError
from ftexp.utils.io import atomic_write_text

PLACEHOLDER = re.compile(r"\{\{\s*([^|}]+?)\s*\|\s*([^|}]*?)\s*\|\s*([^|}]+?)\s*\}\}")


def load_spec(path: Path) -> Dict[str, Any]:
    import yaml

    try:
        spec = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CompareError(f"{path}: cannot read the findings spec ({exc})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("questions"), list):
        raise CompareError(f"{path}: needs a 'questions' list (id, title, folder, held_fixed, supports, ...)")
    return spec


def results_table(report_md: str) -> str:
    """The '## Results' table of a compare report (its explanation line and the table itself)."""
    part = report_md.split("## Results", 1)[1].split("\n## ", 1)[0]
    return part.strip()


def parse_where(where: str) -> Dict[str, str]:
    """'k=v, k=v' -> {k: v}."""
    pairs = (part.split("=", 1) for part in (p.strip() for p in where.split(",")) if part)
    return {k.strip(): v.strip() for k, v in pairs}


def cell_value(sweep: Sweep, where: str, metric: str) -> str:
    """The mean ± CI of ``metric`` in the cell whose swept values match ``where`` ('k=v, k=v'; '' = one cell)."""
    wanted = parse_where(where)
    found = [c for c in make_cells(sweep)
             if all(dict(zip(sweep.keys, c.values)).get(k) == v for k, v in wanted.items())]
    if len(found) != 1:
        raise CompareError(f"placeholder '{where} | {metric}': matches {len(found)} cells of {sweep.source}, "
                           f"not one (swept: {', '.join(sweep.keys)})")
    summary = found[0].summary(metric)
    if summary.n == 0:
        raise CompareError(f"placeholder '{where} | {metric}': no completed job of that cell has {metric}")
    return fmt(summary)


def run_value(rows: Dict[str, Dict[str, Any]], qid: str, name: str, metric: str) -> str:
    """A single run's number: ``metric`` is task/metric in the run's row."""
    if name not in rows:
        raise CompareError(f"placeholder '{qid} | {name} | {metric}': no run named '{name}' "
                           f"(runs: {', '.join(rows)})")
    task, _, key = metric.partition("/")
    value = rows[name]["metrics"].get(task, {}).get(key)
    if value is None:
        raise CompareError(f"placeholder '{qid} | {name} | {metric}': the run's row has no {metric}")
    return number_text(value)


def fill(text: str, sweeps: Dict[str, Sweep], runs: Optional[Dict[str, Dict[str, Dict[str, Any]]]] = None) -> str:
    runs = runs or {}

    def one(m: "re.Match[str]") -> str:
        qid, where, metric = m.group(1), m.group(2), m.group(3)
        if qid in runs:
            return run_value(runs[qid], qid, where, metric)
        if qid not in sweeps:
            return f"(not run yet: {qid})"
        return cell_value(sweeps[qid], where, metric)

    return PLACEHOLDER.sub(one, text or "")


def run_row(folder: Path, row: int) -> Dict[str, Any]:
    results = json.loads((Path(folder) / "results.json").read_text(encoding="utf-8"))
    if results.get("status") != "completed":
        raise CompareError(f"{folder}: the run did not complete ({results.get('status')})")
    metrics = next((r["metrics"] for r in results.get("rows", []) if r["index"] == row), None)
    if metrics is None:
        raise CompareError(f"{folder}: results.json has no row {row}")
    model = results.get("model") or {}
    return {"metrics": metrics, "model": model.get("name"), "weights": model.get("weights") or {}}


def run_folders(entry: Dict[str, Any]) -> Dict[str, tuple]:
    """name -> (folder, row) of each single run a question names."""
    default = int(entry.get("row", 0))
    return {name: (v["folder"], int(v.get("row", default))) if isinstance(v, dict) else (v, default)
            for name, v in entry["runs"].items()}


def read_runs(entry: Dict[str, Any], root: Path) -> Optional[Dict[str, Dict[str, Any]]]:
    """Each named run's row, or None when a folder has no results.json yet (not run)."""
    folders = run_folders(entry)
    if not all((root / folder / "results.json").is_file() for folder, _ in folders.values()):
        return None
    return {name: run_row(root / folder, row) for name, (folder, row) in folders.items()}


def runs_section(entry: Dict[str, Any], rows: Dict[str, Dict[str, Any]]) -> List[str]:
    """A table of one row's metrics for each named single run."""
    folders = run_folders(entry)
    metrics = entry.get("metrics") or sorted({f"{t}/{m}" for r in rows.values() for t, ms in r["metrics"].items()
                                              for m in ms})
    lines = ["| metric | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    for metric in metrics:
        task, _, name = metric.partition("/")
        values = [r["metrics"].get(task, {}).get(name) for r in rows.values()]
        lines.append(f"| {metric} | " + " | ".join("—" if v is None else number_text(v) for v in values) + " |")
    lines += ["", "Runs: " + "; ".join(f"{name}: `{folder}` (row {row})" for name, (folder, row) in folders.items())]
    if entry.get("command"):
        lines[-1] += f"  \nCommand: `{entry['command']}`"
    return lines


def weights_lines(sweeps: Dict[str, Sweep], runs: Dict[str, Dict[str, Dict[str, Any]]]) -> List[str]:
    """Where each model's pretrained weights came from, as the first completed job or run that has them
    recorded says (one line per model)."""
    recorded = [(r["model"], r["weights"]) for rows in runs.values() for r in rows.values()]
    for sweep in sweeps.values():
        for job in sweep.completed:
            model = json.loads((Path(job.source) / "results.json").read_text(encoding="utf-8")).get("model") or {}
            recorded.append((model.get("name"), model.get("weights") or {}))
    lines: Dict[str, str] = {}
    for name, w in recorded:
        if w.get("source") == "gguf" and name not in lines:
            files = ", ".join(f"{f['file']} ({f['package']} {f['version']})" for f in w["files"])
            lines[name] = (f"**Weights.** {name}: {files}, SHA-256 `{w['sha256']}`; {w['weights']} "
                           f"({w.get('release', '')}).")
    return list(lines.values())


def matching_job(sweep: Sweep, where: str) -> Any:
    """The one completed job whose overrides match ``where`` ('k=v, k=v')."""
    wanted = parse_where(where)
    found = [j for j in sweep.completed if all(j.overrides.get(k) == v for k, v in wanted.items())]
    if len(found) != 1:
        raise CompareError(f"examples: job '{where}' matches {len(found)} completed jobs of {sweep.source}, not one")
    return found[0]


def _cell_text(value: Any, limit: int) -> str:
    text = " ".join(str(value if value is not None else "—").split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def examples_section(spec: Dict[str, Any], sweep: Sweep) -> List[str]:
    """A table of the first ``n`` review rows of one job (those the metric passed, with auto_correct: true)."""
    job = matching_job(sweep, str(spec.get("job", "")))
    try:
        rows = read_export(Path(job.source) / str(spec.get("folder", "review")))
    except ReviewError as exc:
        raise CompareError(f"examples: {exc}") from None
    verdicts = [r.get("auto_correct") for r in rows]
    counts = (f"{len(rows)} exported: {verdicts.count(True)} the metric passed, {verdicts.count(False)} it failed, "
              f"{verdicts.count(None)} without a verdict (red-team prompts)")
    if "auto_correct" in spec:
        rows = [r for r in rows if r.get("auto_correct") is spec["auto_correct"]]
    rows = rows[: int(spec.get("n", 4))]
    scores = sorted({k for r in rows for k in r if k.startswith("auto_") and k != "auto_correct"})
    lines = ["| question | reference | answer | " + " | ".join(k[len("auto_"):] for k in scores) + " |",
             "|---|---|---|" + "---|" * len(scores)]
    for r in rows:
        values = [number_text(r[k]) if isinstance(r.get(k), (int, float)) else "—" for k in scores]
        lines.append(f"| {_cell_text(r.get('prompt'), 160)} | {_cell_text(r.get('reference'), 240)} | "
                     f"{_cell_text(r.get('output'), 400)} | " + " | ".join(values) + " |")
    which = {True: " the metric passed", False: " the metric failed"}.get(spec.get("auto_correct"), "")
    where = f"{Path(job.source).name}/{spec.get('folder', 'review')}/{REVIEW_JSONL}"
    return [f"{len(rows)} answers{which}, from the job's `{where}` ({counts}):", ""] + lines


def section(q: Dict[str, Any], sweep: Optional[Sweep], out: Path, sweeps: Dict[str, Sweep],
            runs: Dict[str, Dict[str, Dict[str, Any]]]) -> List[str]:
    lines = [f"## {q['id']}: {q['title']}", "", f"**Question.** {q['question']}", ""]
    if q.get("runs") and q["id"] in runs:
        lines += runs_section(q, runs[q["id"]]) + [""]
    elif sweep is None:
        lines += [f"**Not run yet.** Command: `{q.get('command', '')}`", ""]
        return lines
    else:
        report = write_report(sweep, out / q["id"], q.get("metric"))
        lines += [f"**Command.** `{sweep.command or q.get('command', '')}`  ",
                  f"**Sweep folder.** `{q['folder']}` ({len(sweep.completed)} of {len(sweep.jobs)} jobs completed); "
                  f"its full compare report: [{q['id']}/report.md]({q['id']}/report.md)", ""]
        lines += [results_table(report.read_text(encoding="utf-8")).replace("](table.csv)",
                                                                          f"]({q['id']}/table.csv)"), ""]
        lines += [f"![{q['id']}]({q['id']}/{p.name})" for p in sorted((out / q["id"]).glob("*.png"))] + [""]
        examples = q.get("examples") or []
        for spec in examples if isinstance(examples, list) else [examples]:
            lines += examples_section(spec, sweep) + [""]
    for key, title in (("held_fixed", "Held fixed"), ("supports", "What it supports"),
                       ("does_not_support", "What it does not support")):
        if q.get(key):
            lines += [f"**{title}.** {fill(q[key], sweeps, runs).strip()}", ""]
    return lines


def build_page(spec_path: Path, out_md: Path) -> Path:
    spec = load_spec(spec_path)
    root = Path(spec.get("root", "."))
    out = out_md.parent
    sweeps: Dict[str, Sweep] = {}
    runs: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for q in spec["questions"]:
        folder = root / q["folder"] if q.get("folder") else None
        if folder is not None and folder.is_dir():
            sweeps[q["id"]] = read_multirun(folder)
        if q.get("runs") and (rows := read_runs(q, root)) is not None:
            runs[q["id"]] = rows
    lines = [f"# {spec['title']}", "", "<!-- Generated by `python -m ftexp.compare.findings "
             f"{spec_path}`: edit {spec_path}, not this page. -->", ""]
    lines += [fill(spec.get("intro", ""), sweeps, runs).strip(), ""]
    for weights in weights_lines(sweeps, runs):
        lines += [weights, ""]
    for caveat in spec.get("caveats", []):
        lines.append(f"- {fill(caveat, sweeps, runs)}")
    lines.append("")
    for q in spec["questions"]:
        lines += section(q, sweeps.get(q["id"]), out, sweeps, runs)
    atomic_write_text(out_md, "\n".join(lines).rstrip() + "\n")
    return out_md


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ftexp.compare.findings", description=__doc__.splitlines()[0])
    p.add_argument("spec", type=Path, help="the findings spec, e.g. docs/findings.yaml")
    p.add_argument("--out", type=Path, help="the page to write (default: the spec's name with .md)")
    args = p.parse_args(argv)
    try:
        page = build_page(args.spec, args.out or args.spec.with_suffix(".md"))
    except CompareError as exc:
        print(f"ftexp.compare.findings: error: {exc}", file=sys.stderr)
        return 1
    print(f"ftexp.compare.findings: {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
