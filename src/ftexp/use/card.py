"""The model card (README.md) of a merged folder: what results.json holds about the run that trained it, the
base model and its provenance, the data files with their SHA-256, the headline metrics beside row 0 (the
untrained model), the settings, the cost and the seed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Iterable, List

import yaml

ROW0 = "row 0 (untrained)"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_files(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every data file of every task, with its SHA-256 (computed where results.json did not record one)."""
    tasks = [results.get("data") or {}, *(results.get("tasks") or {}).values()]
    rows = []
    for task in tasks:
        for f in task.get("files") or []:
            digest = f.get("sha256")
            if not digest and f.get("path") and Path(f["path"]).is_file():
                digest = sha256_file(Path(f["path"]))
            rows.append({"task": task.get("name", ""), **f, "sha256": digest or "(file not found)"})
    return rows


def headline(results: Dict[str, Any]) -> List[List[str]]:
    """The primary task's metrics, row 0 beside the last row (counts and slices left out), then the losses."""
    rows = results.get("rows") or []
    task = (results.get("data") or {}).get("name") or results["config"]["data"]["name"]
    first = rows[0]["metrics"].get(task, {}) if rows and rows[0].get("index") == 0 else {}
    last = rows[-1]["metrics"].get(task, {}) if rows else {}
    out = [[k, _num(first.get(k)), _num(v)] for k, v in last.items() if not k.endswith("/n") and "/slice/" not in k]
    metrics = results.get("metrics") or {}
    out += [[k, "", _num(metrics[k])] for k in ("train/loss", "val/loss") if k in metrics]
    return out


def cost(results: Dict[str, Any]) -> List[List[str]]:
    stages = results.get("stages") or []
    wall = results.get("wall_time_s") or {}
    return [["wall time, whole run (s)", _num(wall.get("total", wall.get("run")))],
            ["training time (s)", _num(sum(s.get("train_time_s", 0) for s in stages))],
            ["optimizer steps", str(sum(s.get("steps", 0) for s in stages))],
            ["tokens trained on", str(int(sum(s.get("tokens", 0) for s in stages)))],
            ["device", str(results.get("device", ""))]]


def card_text(results: Dict[str, Any], merged: bool) -> str:
    """The card's Markdown, front matter included."""
    cfg = results["config"]
    model, weights = results.get("model") or {}, (results.get("model") or {}).get("weights") or {}
    how = "a LoRA adapter merged into its base" if merged else "every weight fine-tuned (peft=full)"
    lines = [f"# {cfg['model']['name']} fine-tuned on {cfg['data']['name']} with ftexp", "",
             f"Made by `ftexp merge` from the run `{results.get('run_dir')}`: {how}. The numbers below are the "
             "run's own (results.json); this folder loads with `transformers.AutoModelForCausalLM.from_pretrained`.",
             "", "## Base model", "", f"- model config: `{cfg['model']['name']}` (`{cfg['model'].get('_target_')}`)"]
    lines += [f"- {k}: `{v}`" for k, v in weights.items()]
    lines += [f"- parameters: {model.get('parameters')}", "", "## Data", "",
              *_table(["task", "split", "file", "records", "SHA-256"],
                      [[f["task"], f.get("split", ""), f"`{f.get('path')}`", str(f.get("records", "")), f["sha256"]]
                       for f in data_files(results)]),
              "", "## Metrics", "", *_table(["metric", ROW0, "after training"], headline(results)),
              "", "## Training", "", f"- seed: {results.get('seed')}",
              f"- command line overrides: `{' '.join(results.get('overrides') or []) or '(none)'}`",
              f"- config groups: `{json.dumps(results.get('choices') or {})}`",
              f"- peft: `{json.dumps(cfg.get('peft'))}`", "", *_table(["cost", "value"], cost(results)),
              "", "## Software", "", f"- versions: `{json.dumps((results.get('environment') or {}).get('versions'))}`",
              f"- git: `{json.dumps((results.get('environment') or {}).get('git'))}`",
              "", "<details><summary>The run's resolved config</summary>", "", "```yaml",
              yaml.safe_dump(cfg, sort_keys=False).rstrip(), "```", "", "</details>", ""]
    return _front_matter(results, merged) + "\n".join(lines)


def _front_matter(results: Dict[str, Any], merged: bool) -> str:
    weights = (results.get("model") or {}).get("weights") or {}
    fields = {"library_name": "transformers", "pipeline_tag": "text-generation",
              "tags": ["ftexp", "lora" if merged else "full-finetune"]}
    if weights.get("source") == "hub" and weights.get("hub_id"):
        fields["base_model"] = weights["hub_id"]
    try:
        from huggingface_hub import ModelCardData

        return f"---\n{ModelCardData(**fields).to_yaml()}\n---\n\n"
    except ImportError:  # the same fields, written as plain YAML
        return f"---\n{yaml.safe_dump(fields, sort_keys=False).rstrip()}\n---\n\n"


def write_card(folder: Path, results: Dict[str, Any], merged: bool) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(card_text(results, merged))
    return path


def _num(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _table(head: List[str], rows: Iterable[List[str]]) -> List[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows)]
