"""Chat and multi-turn data (``data=chat``): conversations trained on their assistant turns.

Three record formats are read (``data.format``; ``auto`` tells them apart per record):

- ``messages`` (OpenAI style): ``{"messages": [{"role": "system|user|assistant", "content": "..."}, ...]}``
- ``sharegpt``: ``{"conversations": [{"from": "system|human|gpt", "value": "..."}, ...]}``
- ``alpaca``: ``{"instruction": "...", "input": "..." (optional), "output": "..."}``, one user turn
  (instruction, then the input) and one assistant turn.

An example is the conversation up to its last assistant turn (the prompt) and that turn (the
completion), so evaluators see it as a generation example: the generation evaluator decodes from
the conversation so far and scores the last assistant turn. Training puts the loss on the last
assistant turn, or on every assistant turn (``data.train_on=all_assistant``); system and user
turns are never targets.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ftexp.data.base import DataError, Example
from ftexp.data.pipeline import SourcedTask
from ftexp.data.sources import Row
from ftexp.data.turns import ROLES, plain_transcript

# ShareGPT's speakers -> roles (its dumps also write user/assistant)
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}
# format -> (the list's field, the turn's role key, its text key)
LAYOUT = {"messages": ("messages", "role", "content"), "sharegpt": ("conversations", "from", "value")}


class ChatTask(SourcedTask):
    kind = "generation"  # scored like question answering: the reference is the last assistant turn
    text_fields: Tuple[str, ...] = ()  # each format checks its own fields (read_turns)

    def to_example(self, row: Row, source: str, split: str) -> Optional[Example]:
        cfg = self.cfg
        turns = read_turns(row, cfg.format, cfg.messages_field, dict(cfg.fields))
        messages, reply = turns[:-1], turns[-1]["content"]
        used = {"messages", "conversations", "instruction", "input", "output", cfg.messages_field, *cfg.fields.values()}
        meta = {k: v for k, v in row.fields.items() if k not in used}
        return Example(prompt=plain_transcript(messages), completion=reply.strip(), source=source,
                       text="\n".join(t["content"] for t in messages), meta=meta, messages=messages,
                       train_all_turns=cfg.train_on == "all_assistant")

    def red_team_set(self, red_team: Any) -> Tuple[List[Example], List[str]]:
        """Adversarial prompts, each one user turn."""
        unknown = [name for name in red_team.slices if name not in self.slices]
        if unknown:
            raise DataError(f"data '{self.cfg.name}': red_team.slices names '{unknown[0]}', which is not one of "
                            f"data.slices ({', '.join(self.slices) or 'none'})")
        examples = []
        for i, text in enumerate(red_team.prompts):
            where = f"data '{self.cfg.name}' red_team.prompts[{i}]"
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{where} is empty")
            messages = [{"role": "user", "content": text}]
            examples.append(Example(prompt=plain_transcript(messages), completion="", origin="red_team",
                                    source="red_team", text=text, where=where, messages=messages))
        return examples, list(red_team.slices)


def detect_format(row: Row, messages_field: Optional[str]) -> str:
    """The format of one record, from the fields it has."""
    rec = row.fields
    if messages_field and messages_field in rec:
        first = rec[messages_field][0] if isinstance(rec[messages_field], list) and rec[messages_field] else {}
        return "sharegpt" if isinstance(first, dict) and "from" in first else "messages"
    for fmt, key in (("messages", "messages"), ("sharegpt", "conversations"), ("alpaca", "instruction")):
        if key in rec:
            return fmt
    have = ", ".join(sorted(rec)) or "none"
    raise DataError(f"{row.where}: not a chat record: it has none of the fields 'messages' (OpenAI style), "
                    f"'conversations' (ShareGPT) or 'instruction' (Alpaca) (fields present: {have}); set "
                    "data.messages_field if its turns are under another name")


def read_turns(row: Row, fmt: str, messages_field: Optional[str] = None,
               fields: Optional[Dict[str, str]] = None) -> List[Dict[str, str]]:
    """The record's turns as ``{role, content}``, checked: a list of turns with known roles, none empty,
    a system turn only first, and at least one assistant turn, the last turn being one."""
    if fmt == "auto":
        fmt = detect_format(row, messages_field)
    if fmt == "alpaca":
        return alpaca_turns(row, fields or {})
    list_field, role_key, text_key = LAYOUT[fmt]
    list_field = messages_field or list_field
    raw = row.fields.get(list_field)
    if raw is None:
        have = ", ".join(sorted(row.fields)) or "none"
        raise DataError(f"{row.where}: field '{list_field}' is missing (fields present: {have})")
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{row.where}: field '{list_field}' must be a non-empty list of turns "
                        f"({{{role_key}, {text_key}}}), got {type(raw).__name__} {raw!r:.60}")
    turns = [_turn(row.where, list_field, i, t, role_key, text_key) for i, t in enumerate(raw, 1)]
    return checked_order(row.where, list_field, turns)


def _turn(where: str, list_field: str, n: int, turn: Any, role_key: str, text_key: str) -> Dict[str, str]:
    at = f"{where}: turn {n} of '{list_field}'"
    if not isinstance(turn, dict):
        raise DataError(f"{at} must be an object with '{role_key}' and '{text_key}', got {turn!r:.60}")
    if turn.get(role_key) is None:
        raise DataError(f"{at} has no '{role_key}' (keys: {', '.join(sorted(turn)) or 'none'})")
    names = SHAREGPT_ROLES if role_key == "from" else {r: r for r in ROLES}
    role = names.get(str(turn[role_key]).strip().lower()) if isinstance(turn[role_key], str) else None
    if role is None:
        known = ", ".join(sorted(set(names)))
        raise DataError(f"{at} has the unknown {role_key} {turn[role_key]!r:.40}; the {role_key}s read are {known}")
    text = text_parts(turn.get(text_key))
    if not isinstance(text, str):
        what = "no" if text is None else f"a {type(text).__name__} as its"
        raise DataError(f"{at} ({role}) has {what} '{text_key}'; it must be a string")
    if not text.strip():
        raise DataError(f"{at} ({role}) is empty")
    return {"role": role, "content": text}


def text_parts(content: Any) -> Any:
    """OpenAI's content parts (``[{"type": "text", "text": ...}]``) joined into one text; anything else as is."""
    if isinstance(content, list) and content and all(isinstance(p, dict) and p.get("type") == "text"
                                                     and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    return content


def checked_order(where: str, list_field: str, turns: List[Dict[str, str]]) -> List[Dict[str, str]]:
    late_system = next((i for i, t in enumerate(turns) if t["role"] == "system" and i > 0), None)
    if late_system is not None:
        raise DataError(f"{where}: turn {late_system + 1} of '{list_field}' is a system turn; only the first turn "
                        "may be one")
    if not any(t["role"] == "assistant" for t in turns):
        raise DataError(f"{where}: the conversation in '{list_field}' has no assistant turn, so nothing in it is "
                        "trained on or scored")
    if turns[-1]["role"] != "assistant":
        raise DataError(f"{where}: the conversation in '{list_field}' ends with a {turns[-1]['role']} turn "
                        f"(turn {len(turns)}) that no assistant turn answers; end it with the answer or drop the turn")
    return turns


def alpaca_turns(row: Row, fields: Dict[str, str]) -> List[Dict[str, str]]:
    """One user turn (the instruction, then the input when there is one) and one assistant turn (the output)."""
    rec = row.fields
    names = {k: fields.get(k, k) for k in ("instruction", "input", "output")}
    for key in ("instruction", "output"):
        value = rec.get(names[key])
        if value is None:
            have = ", ".join(sorted(rec)) or "none"
            raise DataError(f"{row.where}: field '{names[key]}' is missing (an Alpaca record has instruction, "
                            f"input (optional) and output; fields present: {have})")
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{row.where}: field '{names[key]}' must be a non-empty string, got {value!r:.60}")
    extra = rec.get(names["input"])
    if extra is not None and not isinstance(extra, str):
        raise DataError(f"{row.where}: field '{names['input']}' must be a string, got {type(extra).__name__}")
    user = rec[names["instruction"]].strip() + (f"\n\n{extra.strip()}" if extra and extra.strip() else "")
    return [{"role": "user", "content": user}, {"role": "assistant", "content": rec[names["output"]]}]
