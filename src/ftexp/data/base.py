"""Examples, tasks and the tokenisation that training and evaluation share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

from ftexp.errors import FtexpError


class DataError(FtexpError):
    """Bad or missing data; the message names the file, record or setting."""


@dataclass
class Example:
    """One prompt -> completion pair with its provenance."""

    prompt: str
    completion: str
    label: Optional[str] = None  # for classification
    origin: str = "real"  # real | synthetic | replay
    source: str = ""  # the task or file it came from


@dataclass
class Task:
    """A named task with its splits. Subclasses load the data; everything else is shared."""

    name: str
    splits: Dict[str, List[Example]] = field(default_factory=dict)
    completion_prefix: str = " "
    eval_only: bool = False

    def texts(self, split: str = "train") -> Iterator[str]:
        """Training texts as the model sees them (for tokenizers trained per run)."""
        for ex in self.splits.get(split, []):
            yield ex.prompt + self.completion_prefix + ex.completion

    def counts(self) -> Dict[str, Dict[str, int]]:
        out: Dict[str, Dict[str, int]] = {}
        for split, examples in self.splits.items():
            by_origin: Dict[str, int] = {}
            for ex in examples:
                by_origin[ex.origin] = by_origin.get(ex.origin, 0) + 1
            out[split] = {"total": len(examples), **by_origin}
        return out


def resolve_folder(path: Optional[str], data_dir: str, subdir: Optional[str]) -> Path:
    if path:
        return Path(path).expanduser()
    return Path(data_dir).expanduser() / (subdir or "")


# ------------------------------------------------------------------------------ tokenisation


def encode_prompt(tokenizer, prompt: str) -> List[int]:
    """The prompt's ids, with the tokenizer's own special tokens (e.g. BOS) in front."""
    return tokenizer(prompt, add_special_tokens=True)["input_ids"]


def encode_completion(tokenizer, completion: str, prefix: str = " ") -> List[int]:
    """The completion's ids, encoded on its own (so prompt and label never merge into one token)
    and closed with EOS, which also tells a label from a longer label it is a prefix of."""
    ids = tokenizer(prefix + completion, add_special_tokens=False)["input_ids"]
    return ids + [tokenizer.eos_token_id]


def assemble(prompt: List[int], completion: List[int], max_length: int, train_on_prompt: bool = False):
    """input_ids and labels: -100 on the prompt, so the loss is on completion tokens only, unless
    ``train_on_prompt`` (then every token but the first is a target).

    Over-long examples lose prompt tokens from the left, never completion tokens.
    """
    keep = max(1, max_length - len(completion))
    prompt = prompt[-keep:] if len(prompt) > keep else prompt
    prompt_labels = ([-100] + prompt[1:]) if train_on_prompt else [-100] * len(prompt)
    return {"input_ids": prompt + completion, "labels": prompt_labels + completion}


def encode_split(tokenizer, examples: Sequence[Example], max_length: int, prefix: str = " ",
                 train_on_prompt: bool = False) -> List[Dict]:
    """Tokenise a split in two batched calls, exactly as :func:`encode_prompt` and
    :func:`encode_completion` would one by one (evaluation relies on that)."""
    if not examples:
        return []
    prompts = tokenizer([ex.prompt for ex in examples], add_special_tokens=True)["input_ids"]
    completions = tokenizer([prefix + ex.completion for ex in examples], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [assemble(p, c + [eos], max_length, train_on_prompt) for p, c in zip(prompts, completions)]
