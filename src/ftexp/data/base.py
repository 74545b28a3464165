"""Examples, tasks and the tokenisation that training and evaluation share."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ftexp.errors import FtexpError

log = logging.getLogger(__name__)


class DataError(FtexpError):
    """Bad or missing data; the message names the file, record or setting."""


@dataclass
class Example:
    """One prompt -> completion pair with its provenance."""

    prompt: str
    completion: str
    label: Optional[str] = None  # for classification
    origin: str = "real"  # real | synthetic | replay
    source: str = ""  # the data source (or generator) it came from
    text: str = ""  # the input text before templating: what leakage checks and slices look at
    meta: Dict[str, Any] = field(default_factory=dict)  # the record's other fields
    where: str = ""  # file and line it was read from, for error messages


@dataclass
class Task:
    """A named task with its splits. Subclasses load the data; everything else is shared."""

    name: str
    splits: Dict[str, List[Example]] = field(default_factory=dict)
    kind = ""  # classification | generation | corpus | multiple_choice: which evaluators apply
    completion_prefix: str = " "
    eval_only: bool = False
    chat_template: bool = False  # prompts go through the tokenizer's chat template when it has one
    slices: Dict[str, List[int]] = field(default_factory=dict)  # named subsets of the test split (indices)
    report: Dict[str, Any] = field(default_factory=dict)  # what loading dropped, checked and mixed
    # Adversarial prompts without a reference, and test slices whose examples count as red-team too:
    # their outputs always go to human review, counted apart.
    red_team: List[Example] = field(default_factory=list)
    red_team_slices: List[str] = field(default_factory=list)

    def red_team_indices(self) -> set:
        """Indices of test examples that belong to a red-team slice."""
        return {i for name in self.red_team_slices for i in self.slices.get(name, [])}

    def texts(self, split: str = "train") -> Iterator[str]:
        """A split's texts as the model sees them."""
        for ex in self.splits.get(split, []):
            yield ex.prompt + self.completion_prefix + ex.completion

    def tokenizer_corpus(self) -> Iterator[str]:
        """The texts a tokenizer trained per run is fitted to (tasks with subsampling widen this)."""
        return self.texts("train")

    def count_cut(self, tokenizer, max_length: int) -> None:
        """Count, per split, the examples longer than ``max_length`` tokens as training encodes them,
        record the counts in ``report`` and warn when any prompt or completion is cut."""
        cut = {split: cut_counts(tokenizer, examples, max_length, self.completion_prefix, self.chat_template)
               for split, examples in self.splits.items()}
        self.report["cut_to_max_length"] = {
            "max_length": max_length,
            "prompts_cut_from_left": {split: n for split, (n, _) in cut.items()},
            "completions_cut_from_right": {split: n for split, (_, n) in cut.items()},
        }
        for i, (part, side, lost) in enumerate((("prompts", "left", "start"), ("completions", "right", "end"))):
            if any(n[i] for n in cut.values()):
                tally = ", ".join(f"{n[i]} of {len(self.splits[split])} {split}" for split, n in cut.items())
                log.warning("data '%s': %s examples do not fit model.max_length=%d tokens: their %s are cut from "
                            "the %s (the %s is lost); raise model.max_length or shorten the texts",
                            self.name, tally, max_length, part, side, lost)

    def counts(self) -> Dict[str, Dict[str, Any]]:
        """Per split: total, and counts by origin, by source and (classification) by label."""
        out: Dict[str, Dict[str, Any]] = {}
        for split, examples in self.splits.items():
            entry: Dict[str, Any] = {"total": len(examples)}
            for key in ("origin", "source", "label"):
                tally: Dict[str, int] = {}
                for ex in examples:
                    value = getattr(ex, key)
                    if value is not None:
                        tally[value] = tally.get(value, 0) + 1
                if tally:
                    entry[f"by_{key}"] = dict(sorted(tally.items()))
            if len(entry.get("by_origin", {})) > 1 and "by_label" in entry:  # e.g. real and synthetic per label
                per: Dict[str, Dict[str, int]] = {}
                for ex in examples:
                    cell = per.setdefault(ex.origin, {})
                    cell[ex.label] = cell.get(ex.label, 0) + 1
                entry["by_origin_label"] = {o: dict(sorted(c.items())) for o, c in sorted(per.items())}
            out[split] = entry
        return out


# ------------------------------------------------------------------------------ tokenisation


def uses_chat_template(tokenizer, chat: bool) -> bool:
    return bool(chat and getattr(tokenizer, "chat_template", None))


def prompt_text(tokenizer, prompt: str, chat: bool = False) -> str:
    """The prompt as the model reads it: inside a user turn of the chat template when asked for
    and the tokenizer has one (the template then supplies BOS and the assistant header)."""
    if uses_chat_template(tokenizer, chat):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return prompt


def encode_prompt(tokenizer, prompt: str, chat: bool = False) -> List[int]:
    """The prompt's ids, with the tokenizer's own special tokens (e.g. BOS) in front."""
    text = prompt_text(tokenizer, prompt, chat)
    return tokenizer(text, add_special_tokens=not uses_chat_template(tokenizer, chat))["input_ids"]


def encode_completion(tokenizer, completion: str, prefix: str = " ") -> List[int]:
    """The completion's ids, encoded on its own (so prompt and label never merge into one token)
    and closed with EOS, which also tells a label from a longer label it is a prefix of."""
    ids = tokenizer(prefix + completion, add_special_tokens=False)["input_ids"]
    return ids + [tokenizer.eos_token_id]


def fitted_lengths(n_prompt: int, n_completion: int, max_length: int) -> Tuple[int, int]:
    """How many prompt and completion tokens an example keeps within ``max_length``.

    Over-long examples lose prompt tokens from the left first; a completion that alone nearly fills
    ``max_length`` (long answers) is cut from the right, keeping the prompt's last half-window.
    """
    completion = min(n_completion, max_length - min(n_prompt, max_length // 2))
    return min(n_prompt, max(1, max_length - completion)), completion


def assemble(prompt: List[int], completion: List[int], max_length: int, train_on_prompt: bool = False):
    """input_ids and labels, cut to ``max_length`` as :func:`fitted_lengths` says: -100 on the prompt,
    so the loss is on completion tokens only, unless ``train_on_prompt`` (then every token but the
    first is a target)."""
    keep_prompt, keep_completion = fitted_lengths(len(prompt), len(completion), max_length)
    prompt, completion = prompt[len(prompt) - keep_prompt:], completion[:keep_completion]
    prompt_labels = ([-100] + prompt[1:]) if train_on_prompt else [-100] * len(prompt)
    return {"input_ids": prompt + completion, "labels": prompt_labels + completion}


def split_ids(tokenizer, examples: Sequence[Example], prefix: str = " ",
              chat: bool = False) -> Tuple[List[List[int]], List[List[int]]]:
    """The prompts' and the completions' ids (EOS closing each completion) of a split, in two batched
    calls, exactly as :func:`encode_prompt` and :func:`encode_completion` would one by one."""
    if not examples:
        return [], []
    texts = [prompt_text(tokenizer, ex.prompt, chat) for ex in examples]
    prompts = tokenizer(texts, add_special_tokens=not uses_chat_template(tokenizer, chat))["input_ids"]
    completions = tokenizer([prefix + ex.completion for ex in examples], add_special_tokens=False)["input_ids"]
    return prompts, [c + [tokenizer.eos_token_id] for c in completions]


def encode_split(tokenizer, examples: Sequence[Example], max_length: int, prefix: str = " ",
                 train_on_prompt: bool = False, chat: bool = False) -> List[Dict]:
    """Tokenise a split (evaluation relies on it matching :func:`encode_prompt` and
    :func:`encode_completion`) and cut each example to ``max_length``."""
    prompts, completions = split_ids(tokenizer, examples, prefix, chat)
    return [assemble(p, c, max_length, train_on_prompt) for p, c in zip(prompts, completions)]


def cut_counts(tokenizer, examples: Sequence[Example], max_length: int, prefix: str = " ",
               chat: bool = False) -> Tuple[int, int]:
    """How many of ``examples`` lose prompt tokens (from the left) and how many lose completion tokens
    (from the right) to ``max_length``."""
    prompts, completions = split_ids(tokenizer, examples, prefix, chat)
    kept = [fitted_lengths(len(p), len(c), max_length) for p, c in zip(prompts, completions)]
    return (sum(keep_p < len(p) for (keep_p, _), p in zip(kept, prompts)),
            sum(keep_c < len(c) for (_, keep_c), c in zip(kept, completions)))
