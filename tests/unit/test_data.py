"""Data: reading files with clear errors, splits, tokenisation and batching."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch

from ftexp.config.preflight import compose_config
from ftexp.data.base import DataError, Example, assemble, encode_completion, encode_prompt, encode_split
from ftexp.data.datamodule import Batching, FineTuneDataModule, LengthGroupedBatches, Lent, RankShare, pad_batch
from ftexp.data.sources import read_rows
from ftexp.models.tokenizer import bpe_tokenizer
from ftexp.utils.build import build


def task_for(folder, *overrides):
    cfg = compose_config([f"data.path={folder}", *overrides])
    return build(cfg.data, data_dir="unused", seed=0)


def test_toy_task_splits_and_label_set(toy_data):
    task = task_for(toy_data, "data.val_fraction=0.2")
    assert task.labels == ["card_arrival", "refund", "top_up"]
    assert len(task.splits["train"]) == 24 and len(task.splits["val"]) == 6 and len(task.splits["test"]) == 9
    assert Counter(ex.label for ex in task.splits["val"]) == {"card_arrival": 2, "refund": 2, "top_up": 2}
    train_prompts = {ex.prompt for ex in task.splits["train"]}
    assert not train_prompts & {ex.prompt for ex in task.splits["val"]}
    assert all(ex.origin == "real" for split in task.splits.values() for ex in split)
    assert task.splits["train"][0].prompt.startswith("Query: ") and task.splits["train"][0].prompt.endswith("Intent:")


def test_validation_split_depends_on_split_seed_not_on_the_run_seed(toy_data):
    a = task_for(toy_data).splits["val"]
    b = build(compose_config([f"data.path={toy_data}"]).data, data_dir="unused", seed=7).splits["val"]
    c = task_for(toy_data, "data.split_seed=1").splits["val"]
    assert [e.prompt for e in a] == [e.prompt for e in b] != [e.prompt for e in c]


def test_n_train_is_exact_stratified_and_validated(toy_data):
    task = task_for(toy_data, "data.val_fraction=0.2", "data.n_train=12")
    assert Counter(ex.label for ex in task.splits["train"]) == {"card_arrival": 4, "refund": 4, "top_up": 4}
    with pytest.raises(DataError, match=r"data.n_train=99: .* has 24 training examples"):
        task_for(toy_data, "data.val_fraction=0.2", "data.n_train=99")


def test_n_test_is_a_fixed_stratified_subset(toy_data):
    a = task_for(toy_data, "data.n_test=6").splits["test"]
    assert Counter(ex.label for ex in a) == {"card_arrival": 2, "refund": 2, "top_up": 2}
    b = build(compose_config([f"data.path={toy_data}", "data.n_test=6"]).data, data_dir="unused", seed=5).splits["test"]
    assert [e.prompt for e in a] == [e.prompt for e in b]  # the run's seed does not change the test set


def test_n_val_shortens_validation_without_changing_training(toy_data):
    full = task_for(toy_data, "data.val_fraction=0.3")
    short = task_for(toy_data, "data.val_fraction=0.3", "data.n_val=3")
    assert Counter(ex.label for ex in short.splits["val"]) == {"card_arrival": 1, "refund": 1, "top_up": 1}
    assert {e.prompt for e in short.splits["val"]} < {e.prompt for e in full.splits["val"]}
    assert [e.prompt for e in short.splits["train"]] == [e.prompt for e in full.splits["train"]]
    other_seed = build(compose_config([f"data.path={toy_data}", "data.val_fraction=0.3", "data.n_val=3"]).data,
                       data_dir="unused", seed=5)
    assert [e.prompt for e in other_seed.splits["val"]] == [e.prompt for e in short.splits["val"]]


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "ok", "label": "a"}\n{"text": broken}\n')
    with pytest.raises(DataError, match=r"train.jsonl, line 2: not valid JSON"):
        read_rows(path)


def test_missing_field_names_record_and_field(toy_data):
    (toy_data / "train.jsonl").write_text(json.dumps({"text": "x", "label": "a"}) + "\n" + json.dumps({"text": "y"}) + "\n")
    with pytest.raises(DataError, match=r"train.jsonl, line 2: field 'label' is missing"):
        task_for(toy_data)


def test_unknown_test_label_is_refused(toy_data):
    with (toy_data / "test.jsonl").open("a") as f:
        f.write(json.dumps({"text": "z", "label": "never_seen"}) + "\n")
    with pytest.raises(DataError, match=r"test.jsonl, line 10: the test label 'never_seen' never occurs"):
        task_for(toy_data)


def test_missing_data_directory_says_how_to_fix(tmp_path):
    cfg = compose_config([])
    with pytest.raises(DataError, match="FTEXP_DATA_DIR"):
        build(cfg.data, data_dir=str(tmp_path / "nowhere"), seed=0)


def test_csv_with_extra_cells_names_the_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\nhello,a\nbad,b,extra\n")
    with pytest.raises(DataError, match=r"train.csv, line 3"):
        read_rows(path)


@pytest.fixture
def tokenizer(tmp_path):
    texts = ["Query: where is my card?\nIntent: card_arrival", "Query: add money\nIntent: top_up"] * 20
    return bpe_tokenizer(texts, 300, tmp_path)


def test_loss_only_on_completion_and_prompt_truncated_from_the_left(tokenizer):
    ex = Example(prompt="Query: where is my card?\nIntent:", completion="card_arrival")
    prompt, completion = encode_prompt(tokenizer, ex.prompt), encode_completion(tokenizer, ex.completion)
    full = assemble(prompt, completion, max_length=100)
    assert full["input_ids"] == prompt + completion
    assert full["labels"] == [-100] * len(prompt) + completion
    assert completion[-1] == tokenizer.eos_token_id
    short = assemble(prompt, completion, max_length=len(completion) + 2)
    assert short["input_ids"] == prompt[-2:] + completion  # completion intact, prompt cut on the left
    lm = assemble(prompt, completion, max_length=100, train_on_prompt=True)
    assert lm["labels"] == [-100] + prompt[1:] + completion


def test_batched_encoding_matches_one_by_one(tokenizer):
    examples = [Example(prompt=f"Query: item {i} where is my card?\nIntent:", completion="card_arrival") for i in range(5)]
    batched = encode_split(tokenizer, examples, max_length=64)
    single = [assemble(encode_prompt(tokenizer, e.prompt), encode_completion(tokenizer, e.completion), 64) for e in examples]
    assert batched == single


def test_padding_masks_pads_out_of_loss_and_attention():
    rows = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [5], "labels": [5]}]
    b = pad_batch(rows, pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert b["labels"].tolist() == [[-100, 6, 7], [5, -100, -100]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_length_grouped_batches_cover_every_example_once_per_epoch():
    lengths = [(i * 37) % 50 + 1 for i in range(1000)]
    sampler = LengthGroupedBatches(lengths, batch_size=16, seed=3, window=8)
    first, second = list(sampler), list(sampler)
    for epoch in (first, second):
        assert sorted(i for batch in epoch for i in batch) == list(range(1000))
        assert len(epoch) == len(sampler) == 63
    assert first != second  # a new order every epoch
    assert list(LengthGroupedBatches(lengths, 16, seed=3, window=8)) == first  # seeded
    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    shards = [list(RankShare(LengthGroupedBatches(lengths, 16, seed=3, window=8), r, 3)) for r in range(3)]
    assert [len(s) for s in shards] == [63] * 3  # every rank steps with every global batch
    for step, batch in enumerate(first):  # the ranks split each global batch between them
        parts = [shard[step] for shard in shards]
        assert sorted(i for part in parts for i in part) == sorted(batch)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    tiny = list(RankShare([[7], [1, 2, 3]], rank=1, world_size=2))
    assert tiny == [[7], [2]]  # a one-row batch is lent round rather than leave a rank without one
    assert isinstance(tiny[0][0], Lent) and not isinstance(tiny[1][0], Lent)  # ... marked: learnt from once
    plain = list(LengthGroupedBatches(lengths, 16, seed=3, window=0))  # group_by_length=false
    assert sorted(i for batch in plain for i in batch) == list(range(1000))
    assert padding(first) < 0.25 * padding(plain)


def test_banking77_from_the_data_directory(data_dir):
    task = build(compose_config([]).data, data_dir=str(data_dir), seed=0)
    assert len(task.labels) == 77
    assert len(task.splits["test"]) == 3080
    dropped = task.report["dropped"]  # texts also in val/test leave train
    n_dropped = sum(n for reason in dropped.values() for n in reason.values())
    assert 0 < n_dropped < 60
    assert len(task.splits["train"]) + len(task.splits["val"]) + n_dropped == 10003
    assert abs(len(task.splits["val"]) - 1000) < 40


def test_prompts_use_the_chat_template_when_the_tokenizer_has_one(tokenizer):
    ex = Example(prompt="Query: where is my card?\nIntent:", completion="card_arrival")
    plain = encode_prompt(tokenizer, ex.prompt, chat=True)  # no template: the prompt as it is
    assert plain == encode_prompt(tokenizer, ex.prompt)
    tokenizer.chat_template = "{% for m in messages %}<s>[INST] {{ m['content'] }} [/INST]{% endfor %}"
    wrapped = encode_prompt(tokenizer, ex.prompt, chat=True)
    assert wrapped == tokenizer("<s>[INST] " + ex.prompt + " [/INST]", add_special_tokens=False)["input_ids"]
    assert encode_prompt(tokenizer, ex.prompt, chat=False) == plain  # data.chat_template=false
    row = encode_split(tokenizer, [ex], max_length=200, chat=True)[0]
    assert row["input_ids"][: len(wrapped)] == wrapped and row["labels"][: len(wrapped)] == [-100] * len(wrapped)


def test_long_completions_are_cut_from_the_right_and_fit_max_length():
    prompt, completion = list(range(10, 30)), list(range(100, 300))  # a long answer
    row = assemble(prompt, completion, max_length=64)
    assert len(row["input_ids"]) == 64
    assert row["input_ids"][:20] == prompt and row["input_ids"][20:] == completion[:44]
    long_prompt = list(range(1000, 1100))
    row = assemble(long_prompt, completion, max_length=64)
    assert len(row["input_ids"]) == 64 and row["input_ids"][:32] == long_prompt[-32:]


def test_a_lent_row_is_computed_but_adds_nothing_to_the_global_loss(monkeypatch):
    """Three ranks, an epoch of five rows in batches of three: the last batch has two rows, so rank 2
    runs on a lent row (DDP waits for its backward), and the ranks' rescaled losses average to the mean
    over the batch's own tokens, each row once."""
    from types import SimpleNamespace

    import torch.distributed as dist

    from ftexp.training.module import global_token_weight

    rows = [{"input_ids": [1] + [5] * (i + 1), "labels": [-100] + [5] * (i + 1)} for i in range(5)]
    per_rank = []
    for rank in range(3):
        dm = FineTuneDataModule(rows, rows, Batching(pad_id=0, batch_size=3, seed=0))
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=3, current_epoch=0)
        per_rank.append(list(dm.train_dataloader()))
    short = next(step for step in range(2) if per_rank[2][step].get("lent"))
    batches = [shard[short] for shard in per_rank]
    assert [b.get("lent", False) for b in batches] == [False, False, True]
    assert batches[2]["input_ids"].shape[0] == 1  # a real row, computed as any other

    counts = [int((b["labels"][:, 1:] != -100).sum()) * (not b.get("lent", False)) for b in batches]
    monkeypatch.setattr(dist, "all_reduce", lambda t: t.fill_(sum(counts)))  # the three ranks' sum
    means = [torch.tensor(float(i + 1)) for i in range(3)]  # each rank's mean over its own tokens
    weights = [global_token_weight(b["labels"], 3, b.get("lent", False)) for b in batches]
    assert float(weights[2]) == 0.0
    ddp_average = sum(m * w for m, w in zip(means, weights)) / 3
    assert math.isclose(float(ddp_average), (1 * counts[0] + 2 * counts[1]) / (counts[0] + counts[1]), rel_tol=1e-6)


def test_a_global_batch_smaller_than_the_devices_is_refused():
    from types import SimpleNamespace

    from ftexp.errors import FtexpError

    rows = [{"input_ids": [1, 5], "labels": [-100, 5]}] * 8
    dm = FineTuneDataModule(rows, rows, Batching(pad_id=0, batch_size=4, seed=0))
    dm.trainer = SimpleNamespace(global_rank=0, world_size=8, current_epoch=0)
    with pytest.raises(FtexpError, match=r"optim.batch_size=4 is the global batch .* 8 devices"):
        dm.train_dataloader()
