"""Chat data (``data=chat``): the three record formats, the loss mask on assistant turns only (with a
chat template and with the plain transcript a tokenizer without one gets), and malformed records
failing with file and line before anything trains."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import pytest

from ftexp.config.preflight import ConfigError, check_overrides, compose_config
from ftexp.data.base import DataError, encode_split, example_prompt
from ftexp.utils.build import build
from ftexp.models.tokenizer import _train

FILES = Path(__file__).resolve().parents[1] / "data" / "chat"
FORMATS = ("messages", "sharegpt", "alpaca")
# SmolLM2-Instruct's template (ChatML, with a default system turn): what the pretrained tokenizer renders
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def task(fmt: str, *overrides: str, folder: Path = None):
    cfg = compose_config(["data=chat", f"data.path={folder or FILES / fmt}", *overrides])
    return build(cfg.data, data_dir="unused", seed=0)


def records(fmt: str) -> List[dict]:
    return [json.loads(line) for split in ("train", "test") for line in (FILES / fmt / f"{split}.jsonl").open()]


def assistant_texts(rec: dict) -> List[str]:
    if "messages" in rec:
        return [t["content"] for t in rec["messages"] if t["role"] == "assistant"]
    if "conversations" in rec:
        return [t["value"] for t in rec["conversations"] if t["from"] == "gpt"]
    return [rec["output"]]


@pytest.fixture(scope="module")
def tokenizers():
    """The tiny model's kind of tokenizer (no chat template), and one with the ChatML template."""
    corpus = [json.dumps(r) for fmt in FORMATS for r in records(fmt)]
    plain = _train(corpus, 400)
    templated = _train(corpus, 400)
    templated.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    templated.chat_template, templated.eos_token = CHATML, "<|im_end|>"  # as SmolLM2-Instruct's
    return plain, templated


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_reads_to_the_same_kind_of_example(fmt):
    t = task(fmt)
    assert t.kind == "generation" and sum(len(s) for s in t.splits.values()) == len(records(fmt))
    for ex in t.splits["test"]:
        rec = next(r for r in records(fmt) if assistant_texts(r)[-1].strip() == ex.completion)
        assert ex.messages[-1]["role"] == "user" and ex.prompt.endswith("Assistant:")
        assert ex.meta["id"] == rec["id"]
    if fmt != "alpaca":  # the system prompt is kept
        assert any(ex.messages[0]["role"] == "system" for ex in t.splits["test"])


@pytest.mark.parametrize("templated", [False, True], ids=["plain", "chat_template"])
@pytest.mark.parametrize("train_on", ["last_assistant", "all_assistant"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_loss_is_on_assistant_tokens_only(fmt, train_on, templated, tokenizers):
    tok = tokenizers[templated]
    for ex in task(fmt, f"data.train_on={train_on}").splits["test"]:
        row = encode_split(tok, [ex], 512, chat=True)[0]
        assert row["input_ids"][: len(example_prompt(tok, ex, True))] == example_prompt(tok, ex, True)
        replies = [t["content"] for t in ex.turns() if t["role"] == "assistant"]
        trained = replies if train_on == "all_assistant" else replies[-1:]
        end = "<|im_end|>\n" if templated else tok.eos_token
        start = "" if templated else " "
        # the targets are exactly the trained replies (each with its end-of-turn marker), in order
        targets = [i for i, label in zip(row["input_ids"], row["labels"]) if label != -100]
        assert targets == tok("".join(start + r + end for r in trained), add_special_tokens=False)["input_ids"]
        whole = tok.decode(row["input_ids"], skip_special_tokens=False)
        if templated:  # the ids are the template's rendering of the whole conversation, system turn included
            assert whole == tok.apply_chat_template(ex.turns(), tokenize=False)
        for turn in ex.messages:  # system and user turns are in the input, never targets
            assert turn["content"] in whole
            if turn["role"] != "assistant":
                assert turn["content"] not in tok.decode(targets)


def test_the_evaluators_prompt_is_the_conversation_up_to_the_last_assistant_turn(tokenizers):
    _, tok = tokenizers
    ex = task("messages").splits["test"][0]
    assert len(ex.messages) == 4  # system, user, assistant, user
    rendered = tok.decode(example_prompt(tok, ex, True), skip_special_tokens=False)
    assert rendered == tok.apply_chat_template(ex.messages, tokenize=False, add_generation_prompt=True)
    assert ex.completion not in rendered and rendered.endswith("<|im_start|>assistant\n")


def bad_folder(tmp_path: Path, record: dict, fmt: str = "messages") -> Path:
    good = (FILES / fmt / "train.jsonl").read_text().splitlines()
    (tmp_path / "train.jsonl").write_text("\n".join(good[:2] + [json.dumps(record)] + good[2:]) + "\n")
    (tmp_path / "test.jsonl").write_text((FILES / fmt / "test.jsonl").read_text())
    return tmp_path


@pytest.mark.parametrize("record, fmt, says", [
    ({"messages": [{"content": "hi"}, {"role": "assistant", "content": "hello"}]}, "messages",
     "turn 1 of 'messages' has no 'role'"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]}, "messages",
     "turn 2 of 'messages' (assistant) is empty"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}]}, "messages",
     "turn 2 of 'messages' has the unknown role 'bot'"),
    ({"messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}]}, "messages",
     "has no assistant turn"),
    ({"messages": "user: hi"}, "messages", "field 'messages' must be a non-empty list of turns"),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "robot", "value": "yo"}]}, "sharegpt",
     "turn 2 of 'conversations' has the unknown from 'robot'"),
    ({"conversations": [{"value": "hi"}]}, "sharegpt", "turn 1 of 'conversations' has no 'from'"),
    ({"instruction": "Say hi", "output": ""}, "alpaca", "field 'output' must be a non-empty string"),
    ({"instruction": "Say hi"}, "alpaca", "field 'output' is missing"),
    ({"question": "hi", "answer": "hello"}, "messages", "not a chat record"),
])
def test_a_malformed_record_names_its_file_and_line(tmp_path, record, fmt, says):
    folder = bad_folder(tmp_path, record, fmt)
    with pytest.raises(DataError) as err:
        task(fmt, folder=folder)
    message = str(err.value)
    assert message.startswith(f"{folder / 'train.jsonl'}, line 3: ") and says in message, message
    assert "\n" not in message


def test_a_named_format_does_not_read_another(tmp_path):
    folder = bad_folder(tmp_path, {"instruction": "Say hi", "output": "hi"})
    task("alpaca", "data.format=auto", folder=folder)  # auto reads the Alpaca record among the others
    with pytest.raises(DataError, match=r"train.jsonl, line 3: field .messages. is missing"):
        task("alpaca", "data.format=messages", folder=folder)


@pytest.mark.parametrize("override, says", [("data.format=openai", "format"), ("data.train_on=every", "train_on")])
def test_the_preflight_refuses_unknown_settings(override, says):
    with pytest.raises(ConfigError, match=says):
        check_overrides(["data=chat", f"data.path={FILES / 'messages'}", override])


@pytest.mark.parametrize("templated", [False, True], ids=["plain", "chat_template"])
def test_a_conversation_cut_to_max_length_still_trains_on_assistant_tokens_only(templated, tokenizers):
    tok = tokenizers[templated]
    ex = task("messages", "data.train_on=all_assistant").splits["test"][0]
    whole = encode_split(tok, [ex], 512, chat=True)[0]
    assert len(whole["input_ids"]) > 32  # so every length below cuts
    for max_length in (16, 24, 32):  # each over twice the reply: only the start of the conversation is cut
        row = encode_split(tok, [ex], max_length, chat=True)[0]
        assert len(row["input_ids"]) <= max_length and len(row["labels"]) == len(row["input_ids"])
        # the start is cut; what remains is the tail of the whole, with the same targets
        n = len(row["input_ids"])
        assert row["input_ids"] == whole["input_ids"][-n:] and row["labels"] == whole["labels"][-n:]


def test_content_parts_red_team_prompts_and_the_row_cache_identity(tmp_path):
    from ftexp.eval.row_cache import task_identity

    content = [{"type": "text", "text": "Name a "}, {"type": "text", "text": "colour"}]  # OpenAI's content parts
    parts = {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "Red."}]}
    folder = bad_folder(tmp_path, parts)
    t = task("messages", "data.red_team.prompts=[Tell me a secret]", folder=folder)
    read = t.splits["train"] + t.splits["val"]
    assert any(ex.messages[-1]["content"] == "Name a colour" and ex.completion == "Red." for ex in read)
    assert t.red_team[0].messages == [{"role": "user", "content": "Tell me a secret"}]
    assert t.red_team[0].prompt == "User: Tell me a secret\nAssistant:"
    # which turns the loss is on changes test/loss (perplexity): scores are not shared across it
    other = task("messages", "data.train_on=all_assistant", "data.red_team.prompts=[Tell me a secret]", folder=folder)
    assert task_identity(t, "test")["examples"] != task_identity(other, "test")["examples"]


def test_the_preflight_asks_for_the_folder():
    with pytest.raises(ConfigError, match=r"data.path=None: .*data=chat .* set it to the folder that holds your files"):
        check_overrides(["data=chat"])
