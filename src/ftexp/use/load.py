"""A run's trained model rebuilt from its folder: the base loaded as the run loaded it (from its resolved config,
seeded as the run was), its saved adapter on top (peft=lora) or its saved weights (peft=full); or a folder that
``ftexp merge`` wrote, with plain transformers."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Iterator, Tuple

from omegaconf import DictConfig, OmegaConf

from ftexp.use import UseError
from ftexp.use.prompting import Prompting
from ftexp.use.run_folder import RunFolder, read_run

log = logging.getLogger(__name__)

USE_FILE = "ftexp.json"  # in a merged folder: the run it came from and how its prompts are made


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    prompting: Prompting
    source: str  # what was loaded, in words


def typed_node(group: str, node: DictConfig) -> DictConfig:
    """A group's node of results.json's config on its schema (so ``build`` finds its class by ``_target_``)."""
    from ftexp.config.schema import SCHEMAS

    target = node.get("_target_")
    for schema in SCHEMAS[group].values():
        if getattr(schema, "_target_", None) == target:
            return OmegaConf.merge(OmegaConf.structured(schema), node)
    raise UseError(f"{group}._target_ '{target}' is none of ftexp's {group} options "
                   f"({', '.join(SCHEMAS[group])}); `ftexp merge/generate` rebuild only those.")


def run_corpus(cfg: DictConfig) -> Iterator[str]:
    """The texts the run fitted its tokenizer to (models that train one per run), as :class:`ftexp.run.Run` does."""
    from ftexp.parts import build_tasks

    cfg = OmegaConf.merge(cfg, {"data": typed_node("data", cfg.data),
                                "tasks": {k: typed_node("data", v) for k, v in cfg.tasks.items()}})
    tasks = build_tasks(cfg)
    return chain.from_iterable(t.tokenizer_corpus() for t in tasks.values() if not t.eval_only)


def load_base(cfg: DictConfig) -> Tuple[Any, Any]:
    """The run's untrained model and tokenizer, built as the run built them: the same source and weights, and a
    random-weight model drawn with the same seed (torch's, after seeding as the run seeds)."""
    import pytorch_lightning as pl

    from ftexp.utils.build import allow_targets, build

    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    allow_targets(list(cfg.get("allowed_targets") or []))
    source = build(typed_node("model", cfg.model))
    tokenizer = source.load_tokenizer(lambda: run_corpus(cfg), Path(cfg.cache_dir))
    return source.load_model(tokenizer), tokenizer


def load_run(run: RunFolder) -> Loaded:
    """The run's trained model: base + adapter (not merged), or the saved full weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = run.cfg
    tokenizer = AutoTokenizer.from_pretrained(str(run.saved))  # the run's own, saved beside its weights
    if run.is_adapter:
        from peft import PeftModel

        base, base_tokenizer = load_base(cfg)
        if len(base_tokenizer) != len(tokenizer):
            raise UseError(f"'{run.saved}': the saved tokenizer has {len(tokenizer)} tokens and the rebuilt base's "
                           f"{len(base_tokenizer)}; the base model or its cache changed since the run.")
        model = PeftModel.from_pretrained(base, str(run.saved))
        what = f"run {run.path}: base '{cfg.model.name}' + LoRA adapter {run.saved}"
    else:
        from ftexp.models.base import torch_dtype

        model = AutoModelForCausalLM.from_pretrained(str(run.saved), dtype=torch_dtype(cfg.model.dtype))
        what = f"run {run.path}: full weights {run.saved}"
    return Loaded(model.eval(), tokenizer, Prompting.of_config(cfg), what)


def load_merged(folder: Path) -> Loaded:
    """A folder that ``ftexp merge`` wrote (or any Hugging Face causal-LM folder: its prompts are then the text
    as given, in the chat template when the tokenizer has one)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    use = folder / USE_FILE
    prompting = Prompting.of_dict(json.loads(use.read_text())["prompting"]) if use.is_file() else Prompting()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype="auto")
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # noqa: BLE001 - any load failure gets the same one-paragraph answer
        raise UseError(f"'{folder}': cannot be loaded as a Hugging Face causal LM ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''}).") from exc
    return Loaded(model.eval(), tokenizer, prompting, f"model folder {folder}")


def load_any(path: Path) -> Loaded:
    """A run's folder or a model folder (one with config.json and no results.json)."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file() and not (path / "results.json").is_file():
        return load_merged(path)
    return load_run(read_run(path))
