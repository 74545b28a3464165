"""``ftexp generate <run dir | merged folder> --prompt TEXT``: the answer of a run's trained model, with the run's
own tokenizer and prompt template, decoded as evaluation decodes (greedy unless --temperature). Without --prompt
in a terminal (or with --chat) a conversation: read a line, answer it, keep the turns where the tokenizer has a
chat template."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, TextIO

from ftexp.errors import FtexpError
from ftexp.models.decoding import Decoding, generate_ids
from ftexp.use.load import Loaded, load_any
from ftexp.use.prompting import Prompting


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ftexp generate",
        description="Generate with a run's trained model (its adapter on its base, or its full weights) or a "
                    "folder `ftexp merge` wrote, using the run's tokenizer, prompt_template and chat template.",
        epilog="examples:\n  ftexp generate outputs/2026-12-07/10-00-00-123 --prompt 'I lost my card'\n"
               "  ftexp generate outputs/2026-12-07/10-00-00-123/merged --chat",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="a completed run's folder, or a folder that `ftexp merge` wrote")
    p.add_argument("--prompt", help="the input text (it fills the data config's prompt_template)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="at most this many new tokens (default 64)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="0 (the default): greedy; above 0: sampled at this temperature with --seed")
    p.add_argument("--top-p", type=float, default=1.0, help="sampling: keep this much of the probability mass")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (an answer depends on it and its prompt only)")
    p.add_argument("--chat", action="store_true", help="a conversation on stdin, one line a turn (/reset, /exit)")
    p.add_argument("--raw", action="store_true", help="use the text as the whole prompt (no prompt_template)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when there is one)")
    return p


class Answerer:
    """Answers prompts with a loaded model, one at a time."""

    def __init__(self, loaded: Loaded, args: argparse.Namespace) -> None:
        self.loaded, self.args = loaded, args
        self.prompting = Prompting("", None, loaded.prompting.chat, loaded.prompting.max_length) if args.raw \
            else loaded.prompting
        self.how = Decoding(max_new_tokens=args.max_new_tokens, batch_size=1, temperature=args.temperature,
                            top_p=args.top_p)

    def __call__(self, texts: List[str], answers: List[str]) -> str:
        tokenizer = self.loaded.tokenizer
        ids = self.prompting.encode(tokenizer, texts, answers, self.args.max_new_tokens)
        seeds = [self.args.seed] if self.args.temperature > 0 else None
        new = generate_ids(self.loaded.model, tokenizer, [ids], self.how, seeds)[0]
        return tokenizer.decode(new, skip_special_tokens=True).strip()


def converse(answer: Answerer, stdin: TextIO, stdout: TextIO, prompt: str = "> ") -> None:
    """Read a line, answer it; the conversation's turns go into the next prompt when the chat template
    keeps them (a model without one answers each line on its own, as it was trained)."""
    from ftexp.data.base import uses_chat_template

    keep = uses_chat_template(answer.loaded.tokenizer, answer.prompting.chat)
    texts: List[str] = []
    answers: List[str] = []
    print(f"{answer.loaded.source}\n(an empty line is skipped; /reset forgets the conversation; /exit or "
          "Ctrl-D ends)", file=sys.stderr)
    while True:
        if stdin.isatty():
            print(prompt, end="", file=sys.stderr, flush=True)
        line = stdin.readline()
        if not line or line.strip() == "/exit":
            return
        text = line.rstrip("\n")
        if text.strip() == "/reset":
            texts, answers = [], []
            continue
        if not text.strip():
            continue
        texts = [*texts, text] if keep else [text]
        reply = answer(texts, answers if keep else [])
        answers = [*answers, reply] if keep else []
        print(reply, file=stdout, flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.max_new_tokens < 1 or args.temperature < 0 or not 0 < args.top_p <= 1:
        parser().error("--max-new-tokens must be >= 1, --temperature >= 0 and --top-p in (0, 1]")
    try:
        loaded = load_any(args.folder)
        loaded.model.to(_device(args.device))
        answer = Answerer(loaded, args)
        if args.prompt is not None and not args.chat:
            print(answer([args.prompt], []))
        elif args.chat or sys.stdin.isatty():
            converse(answer, sys.stdin, sys.stdout)
        else:  # text piped in: one prompt
            print(answer([sys.stdin.read().strip()], []))
    except FtexpError as exc:
        print(f"ftexp generate: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


if __name__ == "__main__":
    sys.exit(main())
