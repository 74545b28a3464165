"""``ftexp merge <run dir> [--out DIR]``: a run's trained model as a standard Hugging Face folder (config,
safetensors weights, tokenizer with its chat template, generation config) that ``AutoModelForCausalLM`` loads
without ftexp, with a model card (README.md) of what the run recorded. A LoRA run's adapter is merged into its
base (rebuilt as the run built it); a full fine-tune's saved weights are copied."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from ftexp.errors import FtexpError
from ftexp.use import UseError
from ftexp.use.card import write_card
from ftexp.use.load import USE_FILE, load_run
from ftexp.use.prompting import Prompting
from ftexp.use.run_folder import RunFolder, read_run
from ftexp.utils.io import publish_dir


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ftexp merge",
        description="Merge a LoRA run's adapter into its base (or copy a full fine-tune's weights) and save a "
                    "standard Hugging Face folder with a model card: the data files and their SHA-256, the "
                    "metrics beside row 0, the config, the cost and the seed.",
        epilog="example:\n  ftexp merge outputs/2026-12-07/10-00-00-123 --out models/banking77-lora",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a completed run's folder (the one that holds results.json)")
    p.add_argument("--out", type=Path, help="the folder to write (default: <run>/merged); it must not exist")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    return p


def merge(run_dir: Path, out: Optional[Path] = None, overwrite: bool = False) -> Path:
    """Write the merged folder; its path."""
    run = read_run(run_dir)
    out = Path(out) if out else run.path / "merged"
    if out.exists() and not overwrite:
        raise UseError(f"'{out}' exists; give another --out, or --overwrite to replace it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        if run.is_adapter:
            _merge_adapter(run, tmp)
        else:
            shutil.copytree(run.saved, tmp, dirs_exist_ok=True)
        _finish_folder(run, tmp)
        if out.exists():
            shutil.rmtree(out)
        return publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _merge_adapter(run: RunFolder, folder: Path) -> None:
    loaded = load_run(run)
    model = loaded.model.merge_and_unload()
    model.save_pretrained(folder)  # safetensors
    loaded.tokenizer.save_pretrained(folder)


def _finish_folder(run: RunFolder, folder: Path) -> None:
    """The generation config that decodes as ftexp does (EOS and padding of the run's tokenizer, greedy), the
    prompting of the run's task, and the card."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    generation = GenerationConfig.from_model_config(AutoConfig.from_pretrained(str(folder)))
    generation.update(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=tokenizer.bos_token_id, do_sample=False)
    generation.save_pretrained(folder)
    use = {"run_dir": str(run.path), "weights": str(run.saved), "merged_adapter": run.is_adapter,
           "prompting": Prompting.of_config(run.cfg).to_dict()}
    (folder / USE_FILE).write_text(json.dumps(use, indent=2) + "\n")
    write_card(folder, run.results, merged=run.is_adapter)


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        out = merge(args.run, args.out, args.overwrite)
    except FtexpError as exc:
        print(f"ftexp merge: error: {exc}", file=sys.stderr)
        return 1
    print(f"ftexp merge: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
