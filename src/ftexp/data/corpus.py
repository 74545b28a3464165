"""Plain text cut into chunks (``data=general``: Tiny Shakespeare), for language-model stages and
perplexity. Each chunk is a completion with an empty prompt, so the loss covers all of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

from ftexp.data.base import DataError, Example, Task
from ftexp.data.mixture import derived_rng


def chunk_text(text: str, size: int) -> List[str]:
    """Pieces of about ``size`` characters that end at a line break where there is one."""
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = text.rfind("\n", start + size // 2, end)
            end = cut + 1 if cut > 0 else end
        piece = text[start:end].strip()
        if piece:
            out.append(piece)
        start = end
    return out


class CorpusTask(Task):
    """One text file split contiguously: the last ``test_fraction`` is test, the ``val_fraction``
    before it is validation (no chunk straddles two splits); ``n_train`` takes seeded chunks."""

    kind = "corpus"

    def __init__(self, cfg: Any, data_dir: str, seed: int) -> None:
        super().__init__(name=cfg.name, completion_prefix=cfg.completion_prefix, eval_only=cfg.eval_only,
                         chat_template=False)
        self.cfg = cfg
        folder = Path(cfg.path).expanduser() if cfg.path else Path(data_dir).expanduser() / (cfg.subdir or "")
        path = folder / (cfg.train_file or "")
        if not path.is_file():
            raise DataError(f"data '{cfg.name}': {path} does not exist. Set FTEXP_DATA_DIR (or data_dir=...) to the "
                            f"folder that holds '{cfg.subdir}/', or data.path to the folder with {cfg.train_file}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            line = path.read_bytes()[: exc.start].count(b"\n") + 1
            raise DataError(f"{path}, line {line}: not valid UTF-8 ({exc.reason})") from None
        except OSError as exc:
            raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        if not 0 < cfg.test_fraction < 1 or not 0 <= cfg.val_fraction < 1 - cfg.test_fraction:
            raise DataError(f"data.test_fraction={cfg.test_fraction}, data.val_fraction={cfg.val_fraction}: need "
                            f"0 < test_fraction < 1 and 0 <= val_fraction < 1 - test_fraction")
        test_at = int(len(text) * (1 - cfg.test_fraction))
        val_at = int(len(text) * (1 - cfg.test_fraction - cfg.val_fraction))

        def examples(part: str) -> List[Example]:
            return [Example(prompt="", completion=c, source=cfg.name, text=c) for c in chunk_text(part, cfg.chunk_chars)]

        train, val, test = examples(text[:val_at]), examples(text[val_at:test_at]), examples(text[test_at:])
        if not train or not test:
            raise DataError(f"data '{cfg.name}': {path} is too short to split into train and test chunks")
        if cfg.n_train is not None:
            if not 0 < cfg.n_train <= len(train):
                raise DataError(f"data.n_train={cfg.n_train}: '{cfg.name}' has {len(train)} training chunks of "
                                f"~{cfg.chunk_chars} characters; choose 1 to {len(train)}")
            order = list(range(len(train)))
            derived_rng(seed, "subsample").shuffle(order)
            train = [train[i] for i in sorted(order[: cfg.n_train])]
        if cfg.n_test is not None and cfg.n_test < len(test):
            test = test[: cfg.n_test]  # contiguous from the start of the held-out text: the same for every run
        self.splits = {"train": train, "val": val, "test": test}
