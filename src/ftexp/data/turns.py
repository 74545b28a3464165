"""Conversations as token ids: the chat template (or a plain transcript) rendered turn by turn, so
that the loss mask covers exactly the assistant turns.

The mask comes from incremental rendering: the conversation up to each assistant turn is rendered
with the generation prompt, then with that turn; the text between the two is the turn as the template
writes it (its content and end-of-turn marker). Each piece is tokenised on its own, so a piece's
tokens never merge with a neighbour's and the boundaries are exact; the prompt an evaluator decodes
from is the same pieces up to the last assistant turn.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

ROLES = ("system", "user", "assistant")
PLAIN_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}

Turn = Dict[str, str]


class TemplateError(ValueError):
    """The chat template renders a conversation's beginning as something other than a prefix of the whole."""


def plain_transcript(messages: Sequence[Turn]) -> str:
    """The turns as plain text, ending with the assistant's cue (what a tokenizer without a chat template
    reads, and what human review shows)."""
    lines = [f"{PLAIN_NAMES[m['role']]}: {m['content']}" for m in messages]
    return "\n".join(lines + ["Assistant:"])


def template_pieces(tokenizer, turns: Sequence[Turn]) -> List[Tuple[str, bool]]:
    """(text, is an assistant turn) pieces whose concatenation is the template's rendering of ``turns``."""
    pieces: List[Tuple[str, bool]] = []
    done = ""
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        head = tokenizer.apply_chat_template(list(turns[:i]), tokenize=False, add_generation_prompt=True)
        whole = tokenizer.apply_chat_template(list(turns[: i + 1]), tokenize=False)
        if not (head.startswith(done) and whole.startswith(head)):
            raise TemplateError(f"the tokenizer's chat template does not render the turns before assistant turn "
                                f"{i + 1} as the start of the conversation, so its tokens cannot be told apart")
        pieces += [(head[len(done):], False), (whole[len(head):], True)]
        done = whole
    return pieces


def plain_pieces(turns: Sequence[Turn], prefix: str) -> List[Tuple[str, bool]]:
    """The plain transcript in pieces: each assistant turn is ``prefix`` + its content (EOS follows)."""
    pieces: List[Tuple[str, bool]] = []
    lines: List[str] = []
    for turn in turns:
        if turn["role"] != "assistant":
            lines.append(f"{PLAIN_NAMES[turn['role']]}: {turn['content']}\n")
            continue
        lead = "\n" if pieces else ""  # after an earlier reply's EOS
        pieces += [(lead + "".join(lines) + "Assistant:", False), (prefix + turn["content"], True)]
        lines = []
    return pieces


def conversation_ids(tokenizer, turns: Sequence[Turn], prefix: str, templated: bool,
                     train_all_turns: bool) -> Tuple[List[int], List[bool], List[int]]:
    """The ids of the conversation before its last assistant turn, which of them are trained on (the
    earlier assistant turns when ``train_all_turns``), and the last assistant turn's ids, closed with EOS.

    ``templated``: render with the tokenizer's chat template (which supplies BOS); otherwise the plain
    transcript, with the tokenizer's own special tokens in front and EOS after every assistant turn.
    """
    pieces = template_pieces(tokenizer, turns) if templated else plain_pieces(turns, prefix)
    eos = tokenizer.eos_token_id
    prompt: List[int] = []
    trained: List[bool] = []
    completion: List[int] = []
    for k, (text, assistant) in enumerate(pieces):
        ids = tokenizer(text, add_special_tokens=(k == 0 and not templated))["input_ids"]
        if assistant and (not templated or k == len(pieces) - 1) and eos not in ids:
            ids = ids + [eos]  # the model learns to stop; a template's own end-of-turn marker is kept as is
        if k == len(pieces) - 1:
            completion = ids
        else:
            prompt += ids
            trained += [assistant and train_all_turns] * len(ids)
    return prompt, trained, completion
