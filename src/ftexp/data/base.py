"""Examples, tasks and the tokenisation that training and evaluation share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence

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


def assemble(prompt: List[int], completion: List[int], max_length: int, train_on_prompt: bool = False):
    """input_ids and labels: -100 on the prompt, so the loss is on completion tokens only, unless
    ``train_on_prompt`` (then every token but the first is a target).

    Over-long examples lose prompt tokens from the left first; a completion that alone nearly fills
    ``max_length`` (long answers) is cut from the right, keeping the prompt's last half-window.
    """
    completion = completion[: max_length - min(len(prompt), max_length // 2)]
    keep = max(1, max_length - len(completion))
    prompt = prompt[-keep:] if len(prompt) > keep else prompt
    prompt_labels = ([-100] + prompt[1:]) if train_on_prompt else [-100] * len(prompt)
    return {"input_ids": prompt + completion, "labels": prompt_labels + completion}


def encode_split(tokenizer, examples: Sequence[Example], max_length: int, prefix: str = " ",
                 train_on_prompt: bool = False, chat: bool = False) -> List[Dict]:
    """Tokenise a split in two batched calls, exactly as :func:`encode_prompt` and
    :func:`encode_completion` would one by one (evaluation relies on that)."""
    if not examples:
        return []
    texts = [prompt_text(tokenizer, ex.prompt, chat) for ex in examples]
    prompts = tokenizer(texts, add_special_tokens=not uses_chat_template(tokenizer, chat))["input_ids"]
    completions = tokenizer([prefix + ex.completion for ex in examples], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [assemble(p, c + [eos], max_length, train_on_prompt) for p, c in zip(prompts, completions)]
