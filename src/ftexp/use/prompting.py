"""How a run's model reads a prompt: the data config's prompt_template around the user's text, inside the
tokenizer's chat template where the data config asks for it, cut from the left as evaluation cuts it."""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

from ftexp.data.base import encode_prompt, uses_chat_template
from ftexp.use import UseError

# The data config keys that name the record field a prompt is made from (classification, generation ...).
TEXT_KEYS = ("text_field", "question_field")


@dataclass
class Prompting:
    template: str = "{text}"
    field: Optional[str] = "text"  # the template's field the user's text fills (None: the text as it is)
    chat: bool = True  # the data config's chat_template
    max_length: int = 2048  # model.max_length: prompts are cut from the left to leave room for the answer

    @classmethod
    def of_config(cls, cfg: Any) -> "Prompting":
        """The primary task's prompting, from a run's resolved config."""
        data = cfg.data
        template = str(data.get("prompt_template", "") or "")
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
        field = next((data[k] for k in TEXT_KEYS if data.get(k) in fields), None)
        if field is None and len(set(fields)) == 1:
            field = fields[0]
        if fields and field is None:
            raise UseError(f"data.prompt_template '{template}' uses the fields {', '.join(sorted(set(fields)))}; "
                           "`ftexp generate` fills one field with your text. Give the whole prompt with --raw.")
        chat = bool(data.get("chat_template", False)) and "CorpusTask" not in str(data.get("_target_", ""))
        return cls(template if fields else "", field if fields else None, chat, int(cfg.model.max_length))

    @classmethod
    def of_dict(cls, d: Dict[str, Any]) -> "Prompting":
        return cls(**{k: d[k] for k in ("template", "field", "chat", "max_length") if k in d})

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def render(self, text: str) -> str:
        """The user's text as the task's prompt (``format_prompt`` of the data pipeline, one field)."""
        return self.template.format(**{self.field: text}) if self.field else text

    def encode(self, tokenizer, texts: List[str], answers: List[str], max_new_tokens: int) -> List[int]:
        """The ids of a prompt: the last of ``texts`` (the earlier ones with their ``answers``, as turns of a
        conversation where the tokenizer has a chat template and ``chat``), as evaluation encodes it."""
        keep = max(1, self.max_length - max_new_tokens)
        if len(texts) == 1 or not uses_chat_template(tokenizer, self.chat):
            return encode_prompt(tokenizer, self.render(texts[-1]), self.chat)[-keep:]
        messages = []
        for i, text in enumerate(texts):
            messages.append({"role": "user", "content": self.render(text)})
            if i < len(answers):
                messages.append({"role": "assistant", "content": answers[i]})
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(rendered, add_special_tokens=False)["input_ids"][-keep:]
