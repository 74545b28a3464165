"""Examples, tasks and the tokenisation that training and evaluation share."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ftexp.data.turns import TemplateError, conversation_ids
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
    # Chat data: the turns ({role, content}) before the reply, which is ``completion``; ``prompt`` is then
    # their plain transcript. The earlier assistant turns are trained on too when ``train_all_turns``.
    messages: Optional[List[Dict[str, str]]] = None
    train_all_turns: bool = False

    def turns(self) -> List[Dict[str, str]]:
        """The whole conversation: the turns before the reply, then the reply."""
        return [*(self.messages or []), {"role": "assistant", "content": self.completion}]


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


def example_prompt(tokenizer, ex: Example, chat: bool = False, prefix: str = " ") -> List[int]:
    """The ids an evaluator decodes from: a conversation up to its last assistant turn (with the
    template's generation prompt), or the prompt as :func:`encode_prompt` encodes it."""
    if ex.messages is None:
        return encode_prompt(tokenizer, ex.prompt, chat)
    return conversation_parts(tokenizer, ex, prefix, chat)[0]


def conversation_parts(tokenizer, ex: Example, prefix: str = " ",
                       chat: bool = False) -> Tuple[List[int], List[bool], List[int]]:
    """A chat example's prompt ids, which of them are trained on, and its reply's ids (see
    :func:`ftexp.data.turns.conversation_ids`); a template that cannot be split names the record."""
    try:
        return conversation_ids(tokenizer, ex.turns(), prefix, uses_chat_template(tokenizer, chat), ex.train_all_turns)
    except TemplateError as exc:
        raise DataError(f"{ex.where or 'a chat example'}: {exc}; set data.chat_template=false to train on a plain "
                        "transcript instead") from None


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


def assemble(prompt: List[int], completion: List[int], max_length: int, train_on_prompt: bool = False,
             trained: Optional[List[bool]] = None):
    """input_ids and labels, cut to ``max_length`` as :func:`fitted_lengths` says: -100 on the prompt,
    so the loss is on completion tokens only, unless ``train_on_prompt`` (then every token but the
    first is a target); ``trained`` marks prompt tokens that are targets all the same (earlier
    assistant turns of a conversation)."""
    keep_prompt, keep_completion = fitted_lengths(len(prompt), len(completion), max_length)
    cut = len(prompt) - keep_prompt
    prompt, completion = prompt[cut:], completion[:keep_completion]
    if train_on_prompt:
        prompt_labels = [-100] + prompt[1:]
    else:
        marks = (trained or [False] * (cut + len(prompt)))[cut:]
        prompt_labels = [t if on else -100 for t, on in zip(prompt, marks)]
    return {"input_ids": prompt + completion, "labels": prompt_labels + completion}


def split_ids(tokenizer, examples: Sequence[Example], prefix: str = " ",
              chat: bool = False) -> Tuple[List[List[int]], List[List[int]]]:
    """The prompts' and the completions' ids (EOS closing each completion) of a split, in two batched
    calls, exactly as :func:`encode_prompt` and :func:`encode_completion` would one by one."""
    if not examples:
        return [], []
    if any(ex.messages is not None for ex in examples):
        parts = [example_parts(tokenizer, ex, prefix, chat) for ex in examples]
        return [p for p, _, _ in parts], [c for _, _, c in parts]
    texts = [prompt_text(tokenizer, ex.prompt, chat) for ex in examples]
    prompts = tokenizer(texts, add_special_tokens=not uses_chat_template(tokenizer, chat))["input_ids"]
    completions = tokenizer([prefix + ex.completion for ex in examples], add_special_tokens=False)["input_ids"]
    return prompts, [c + [tokenizer.eos_token_id] for c in completions]


def encode_split(tokenizer, examples: Sequence[Example], max_length: int, prefix: str = " ",
                 train_on_prompt: bool = False, chat: bool = False) -> List[Dict]:
    """Tokenise a split (evaluation relies on it matching :func:`encode_prompt` and
    :func:`encode_completion`) and cut each example to ``max_length``."""
    if any(ex.messages is not None for ex in examples):
        parts = [example_parts(tokenizer, ex, prefix, chat) for ex in examples]
        return [assemble(p, c, max_length, train_on_prompt, trained) for p, trained, c in parts]
    prompts, completions = split_ids(tokenizer, examples, prefix, chat)
    return [assemble(p, c, max_length, train_on_prompt) for p, c in zip(prompts, completions)]


def example_parts(tokenizer, ex: Example, prefix: str = " ",
                  chat: bool = False) -> Tuple[List[int], Optional[List[bool]], List[int]]:
    """One example's prompt ids, its trained prompt tokens (None: none) and its completion ids."""
    if ex.messages is not None:
        return conversation_parts(tokenizer, ex, prefix, chat)
    return encode_prompt(tokenizer, ex.prompt, chat), None, encode_completion(tokenizer, ex.completion, prefix)


def cut_counts(tokenizer, examples: Sequence[Example], max_length: int, prefix: str = " ",
               chat: bool = False) -> Tuple[int, int]:
    """How many of ``examples`` lose prompt tokens (from the left) and how many lose completion tokens
    (from the right) to ``max_length``."""
    prompts, completions = split_ids(tokenizer, examples, prefix, chat)
    kept = [fitted_lengths(len(p), len(c), max_length) for p, c in zip(prompts, completions)]
    return (sum(keep_p < len(p) for (keep_p, _), p in zip(kept, prompts)),
            sum(keep_c < len(c) for (_, keep_c), c in zip(kept, completions)))
