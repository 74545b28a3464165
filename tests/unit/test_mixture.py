"""The training mixture: seeded subsamples, source weights, leakage checks, synthetic data, slices."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from ftexp.config.preflight import compose_config
from ftexp.data.base import DataError
from ftexp.data.checks import normalise
from ftexp.data.mixture import apportion, synthetic_count
from ftexp.synthesis import SynthesisInputs, SyntheticWriter, add_synthetic
from ftexp.utils.build import allow_targets, build

WORDS = {"card_arrival": "card arrive post", "top_up": "top up money", "refund": "refund return back"}


def write(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def toy(tmp_path) -> Path:
    """120 training and 30 test examples over 3 unevenly sized labels; no text in both splits."""
    folder = tmp_path / "toy"
    folder.mkdir()
    sizes = {"card_arrival": 60, "top_up": 40, "refund": 20}
    write(folder / "train.jsonl", [{"text": f"{WORDS[lb]} request {i}", "label": lb}
                                   for lb, n in sizes.items() for i in range(n)])
    write(folder / "test.jsonl", [{"text": f"{WORDS[lb]} question {i}", "label": lb}
                                  for lb in sizes for i in range(10)])
    return folder


def task_for(folder, *overrides, seed=0):
    cfg = compose_config([f"data.path={folder}", "data.slices=[]", *overrides])
    return build(cfg.data, data_dir="unused", seed=seed)


def prompts(examples):
    return [e.prompt for e in examples]


def test_apportion_and_synthetic_count():
    assert apportion(10, {"a": 7, "b": 2, "c": 1}) == {"a": 7, "b": 2, "c": 1}
    assert sum(apportion(7, {"a": 1, "b": 1, "c": 1}).values()) == 7
    assert synthetic_count(2000, 0.0, None) == 0
    assert synthetic_count(2000, 0.5, None) == 2000
    assert synthetic_count(2000, 0.83, None) == 9765
    assert synthetic_count(2000, 0.5, 17) == 17


def test_subsample_is_seeded_stratified_and_nested(toy):
    a = task_for(toy, "data.n_train=30").splits["train"]
    assert prompts(a) == prompts(task_for(toy, "data.n_train=30").splits["train"])
    assert prompts(a) != prompts(task_for(toy, "data.n_train=30", seed=1).splits["train"])
    assert Counter(e.label for e in a) == {"card_arrival": 15, "top_up": 10, "refund": 5}
    small = task_for(toy, "data.n_train=15").splits["train"]
    assert set(prompts(small)) <= set(prompts(a))  # a learning curve varies only how many
    with pytest.raises(DataError, match=r"data.n_train=500: 'banking77' has 108 training examples"):
        task_for(toy, "data.n_train=500")


def test_validation_and_test_do_not_change_with_the_mixture(toy):
    base = task_for(toy)
    other = task_for(toy, "data.n_train=20", "data.synthetic.method=augment", "data.synthetic.share=0.5", seed=3)
    add_synthetic(other, compose_config(["data.synthetic.method=augment", "data.synthetic.share=0.5"]).data.synthetic,
                  SynthesisInputs(seed=3, cache_dir=Path("unused")))
    for split in ("val", "test"):
        assert prompts(other.splits[split]) == prompts(base.splits[split])
        assert {e.origin for e in other.splits[split]} == {"real"}


def test_train_test_duplicates_are_dropped_counted_and_capped(toy):
    rows = [json.loads(line) for line in (toy / "train.jsonl").read_text().splitlines()]
    rows += [{"text": "CARD arrive post,  question 3!", "label": "card_arrival"},  # normalised copy of a test text
             {"text": "top up money question 4", "label": "top_up"}]  # exact copy
    write(toy / "train.jsonl", rows)
    task = task_for(toy, "data.checks.max_test_overlap=0.1")
    test_keys = {normalise(e.text) for e in task.splits["test"]}
    assert not any(normalise(e.text) in test_keys for e in task.splits["train"] + task.splits["val"])
    assert task.report["dropped"]["train_test_duplicates"] == {"train": 2}
    assert task.report["checks"]["test_in_train_fraction"] == {"banking77": pytest.approx(2 / 30)}
    with pytest.raises(DataError, match=r"6.7% of the test examples also occur .*data.checks.max_test_overlap=0.05"):
        task_for(toy, "data.checks.max_test_overlap=0.05")


@pytest.mark.parametrize("share", [0.1, 0.5, 0.83])
def test_synthetic_share_is_realised_within_one_example(toy, share):
    task = task_for(toy, "data.n_train=50")
    cfg = compose_config(["data.synthetic.method=augment", f"data.synthetic.share={share}"])
    add_synthetic(task, cfg.data.synthetic, SynthesisInputs(seed=cfg.seed, cache_dir=Path("unused")))
    train = task.splits["train"]
    n_syn = sum(e.origin == "synthetic" for e in train)
    assert sum(e.origin == "real" for e in train) == 50
    assert abs(n_syn - share * len(train)) <= 1
    assert task.report["synthetic"]["kept"] == n_syn
    assert task.counts()["train"]["by_origin_label"]["synthetic"] == dict(sorted(
        Counter(e.label for e in train if e.origin == "synthetic").items()))
    # per label in proportion to the real subset; never a copy of a real text
    real_keys = {normalise(e.text) for split in task.splits.values() for e in split if e.origin == "real"}
    assert not any(normalise(e.text) in real_keys for e in train if e.origin == "synthetic")
    syn_labels = Counter(e.label for e in train if e.origin == "synthetic")
    assert syn_labels["card_arrival"] > syn_labels["top_up"] > syn_labels["refund"]


def test_model_written_synthetic_data_is_cached_and_reproducible(toy, tmp_path, cache_dir):
    from tests.helpers import TINY

    overrides = [*TINY, f"data.path={toy}", "data.slices=[]", "data.n_train=60", "data.synthetic.generator_epochs=1",
                 "data.synthetic.max_new_tokens=8", "data.synthetic.temperature=1.5"]

    def synthetic(share, cache):
        cfg = compose_config([*overrides, f"data.synthetic.share={share}"])
        task = build(cfg.data, data_dir="unused", seed=0)
        source = build(cfg.model)
        tokenizer = source.load_tokenizer(task.tokenizer_corpus, cache_dir)
        run = SynthesisInputs(seed=cfg.seed, cache_dir=cache, model_source=source, model=cfg.model, tokenizer=tokenizer,
                              optim=cfg.optim, trainer=cfg.trainer)
        add_synthetic(task, cfg.data.synthetic, run)
        made = [(e.label, e.text) for e in task.splits["train"] if e.origin == "synthetic"]
        return made, task.report["synthetic"]

    first, stats = synthetic(0.5, tmp_path / "a")
    assert len(first) == 60 and stats["generated"] >= 60 and Path(stats["cache"]).is_file()
    again, stats = synthetic(0.5, tmp_path / "a")
    assert again == first and stats["generated"] == 0  # a sweep generates once
    extended, _ = synthetic(0.6, tmp_path / "a")  # extends the cached pool ...
    fresh, _ = synthetic(0.6, tmp_path / "b")  # ... to exactly what a fresh run writes
    assert extended == fresh and len(fresh) == 90
    overrides.append("data.synthetic.temperature=1.2")  # a setting that changes the samples: another pool
    hotter, stats_hot = synthetic(0.5, tmp_path / "a")
    assert stats_hot["cache"] != stats["cache"] and hotter != first


class EchoWriter(SyntheticWriter):
    """A writer of one's own: sample k of a label says so."""

    def produce(self, requests):
        return {label: [f"{label} own sample {k}" for k in range(start, start + n)] for label, start, n in requests}


def test_a_writer_of_ones_own_is_a_class_named_in_target(toy):
    from ftexp.config.preflight import check_overrides
    from ftexp.config.session import ConfigError

    with pytest.raises(ConfigError, match=r"data.synthetic._target_='os.system': .*is not allowed"):
        check_overrides(["data.synthetic._target_=os.system"])
    check_overrides(["data.synthetic.method=augment"])  # null: the writer that method names
    task = task_for(toy, "data.n_train=30")
    cfg = compose_config([f"data.synthetic._target_={__name__}.EchoWriter", "data.synthetic.share=0.5"])
    allow_targets([f"{__name__}."])
    try:
        add_synthetic(task, cfg.data.synthetic, SynthesisInputs(seed=0, cache_dir=Path("unused")))
    finally:
        allow_targets([])
    made = [e for e in task.splits["train"] if e.origin == "synthetic"]
    assert len(made) == 30 and all(e.source == "EchoWriter" and " own sample " in e.text for e in made)
    assert task.report["synthetic"]["source"] == "EchoWriter"


def test_extra_sources_are_mixed_by_weight(toy, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    write(extra / "mine.jsonl", [{"utterance": f"{WORDS[lb]} mine {i}", "intent": lb}
                                 for lb in WORDS for i in range(20)]
          + [{"utterance": "refund return back question 1", "intent": "refund"}])  # a test text: dropped
    source = f"{{name: mine, path: {extra}, train_file: mine.jsonl, test_file: null, weight: 1.0, " \
             f"fields: {{text: utterance, label: intent}}}}"
    task = task_for(toy, "data.n_train=40", f"data.extra_sources=[{source}]")
    with pytest.raises(DataError, match=r"in extra source 'mine' — more than data.checks.max_test_overlap=0.02"):
        task_for(toy, "data.n_train=40", f"data.extra_sources=[{source}]", "data.checks.max_test_overlap=0.02")
    by_source = task.counts()["train"]["by_source"]
    assert by_source == {"banking77": 20, "mine": 20}
    assert task.report["dropped"]["mine_heldout_duplicates"] == {"train": 1}
    assert all(e.source == "banking77" for e in task.splits["val"] + task.splits["test"])


def test_slices_select_test_examples_by_words_labels_and_rarity(toy):
    slices = "[{name: long, min_words: 5}, {name: refund, labels: [refund]}, {name: rare, max_train_count: 40}]"
    task = task_for(toy, f"data.slices={slices}", "data.n_train=60")
    test = task.splits["test"]
    assert all(len(test[i].text.split()) >= 5 for i in task.slices["long"])
    assert [test[i].label for i in task.slices["refund"]] == ["refund"] * 10
    assert {test[i].label for i in task.slices["rare"]} == {"refund", "top_up"}  # 18 and 36 real, not 54
    with pytest.raises(DataError, match="field 'contract' is not a field"):
        task_for(toy, "data.slices=[{name: c, field: contract, values: [x]}]")


def test_data_configs_load_from_the_data_directory(data_dir):
    for option in ("banking77", "cuad", "medquad", "truthfulqa", "general"):
        cfg = compose_config([f"data={option}"])
        task = build(cfg.data, data_dir=str(data_dir), seed=0)
        counts = task.counts()
        assert counts["test"]["total"] > 0, option
        assert (counts["train"]["total"] > 0) != task.eval_only, option
        assert all(e.origin == "real" for split in task.splits.values() for e in split)


def test_cuad_drops_multi_label_clauses_and_keeps_38_types(data_dir):
    task = build(compose_config(["data=cuad"]).data, data_dir=str(data_dir), seed=0)
    assert len(task.labels) == 38
    assert task.report["dropped"]["multi_label"] == {"train": 1428, "test": 452}
    assert all(len(e.meta["all_labels"]) == 1 for e in task.splits["test"])


def test_truthfulqa_is_refused_for_training(data_dir):
    from ftexp.parts import stage_task

    task = build(compose_config(["data=truthfulqa"]).data, data_dir=str(data_dir), seed=0)
    stage = compose_config([]).stages[0]
    with pytest.raises(DataError, match="evaluation only"):
        stage_task(stage, {task.name: task}, task)


def test_corpus_is_split_contiguously_into_line_aligned_chunks(tmp_path):
    from ftexp.data.corpus import chunk_text

    text = "".join(f"Line number {i} of the play.\n" for i in range(400))
    chunks = chunk_text(text, 100)
    assert "\n".join(chunks) + "\n" == text  # nothing lost, nothing repeated
    assert all(len(c) <= 100 for c in chunks) and all(c.startswith("Line") for c in chunks)
    (tmp_path / "input.txt").write_text(text)
    task = build(compose_config(["data=general", f"data.path={tmp_path}", "data.chunk_chars=100"]).data,
                 data_dir="unused", seed=0)
    train, val, test = (task.splits[s] for s in ("train", "val", "test"))
    numbers = [[int(n) for e in split for n in re.findall(r"\d+", e.completion)] for split in (train, val, test)]
    assert max(numbers[0]) < min(numbers[1]) and max(numbers[1]) < min(numbers[2])  # ordered, disjoint
    assert test[-1].completion.endswith("399 of the play.") and len(test) >= 0.09 * len(chunks)


def test_augmented_texts_are_edits_of_real_ones():
    import random

    from ftexp.data.augment import edit_words

    rng = random.Random(0)
    text = "please tell me where my new card is"
    variants = {edit_words(text, rng) for _ in range(20)}
    assert text not in variants and len(variants) > 10
    assert all(set(v.split()) <= set(text.split()) for v in variants)


def test_synthetic_copies_of_real_texts_and_empty_texts_are_dropped_and_counted():
    from ftexp.synthesis import Pool, fill

    cfg = compose_config(["data.synthetic.max_rounds=2"]).data.synthetic
    seen = {normalise("where is my card"), normalise("a test question")}  # real train/val/test texts
    outputs = iter([["A TEST question!", "   ", "new text one", "new text one"], ["new text two"]])
    stats = {"generated": 0, "dropped_empty": 0, "dropped_duplicate": 0}
    kept = fill({"x": 2}, Pool(None), lambda requests: {"x": next(outputs)}, seen, stats, cfg)
    assert kept == {"x": ["new text one", "new text two"]}
    assert stats == {"generated": 5, "dropped_empty": 1, "dropped_duplicate": 2}
    outputs = iter([["a test question"]] * 3)
    with pytest.raises(DataError, match="could not make enough usable synthetic examples in 2 rounds"):
        fill({"x": 1}, Pool(None), lambda requests: {"x": next(outputs)}, set(seen), dict.fromkeys(stats, 0), cfg)


def test_label_set_tokenizer_corpus_and_rarity_do_not_move_with_n_train(toy):
    small, full = task_for(toy, "data.n_train=2"), task_for(toy)
    assert small.labels == full.labels == ["card_arrival", "refund", "top_up"]  # though 2 examples cover 2 labels
    assert list(small.tokenizer_corpus()) == list(full.tokenizer_corpus())
    rare = "data.slices=[{name: rare, max_train_count: 20}]"
    assert task_for(toy, rare, "data.n_train=30").slices == task_for(toy, rare).slices


def test_validation_split_can_keep_groups_together(tmp_path):
    folder = tmp_path / "grouped"
    folder.mkdir()
    write(folder / "train.jsonl", [{"text": f"{WORDS[lb]} clause {i}", "label": lb, "contract": f"c{i % 10}"}
                                   for lb in WORDS for i in range(40)])
    write(folder / "test.jsonl", [{"text": f"{WORDS[lb]} other {i}", "label": lb, "contract": "t"}
                                  for lb in WORDS for i in range(3)])
    task = task_for(folder, "data.group_field=contract", "data.val_fraction=0.2")
    val_groups = {e.meta["contract"] for e in task.splits["val"]}
    assert val_groups and not val_groups & {e.meta["contract"] for e in task.splits["train"]}
    assert len(task.splits["val"]) == 24  # two whole contracts of ten
    with pytest.raises(DataError, match=r"train.jsonl, line 1: field 'client' \(data.group_field\) is missing"):
        task_for(folder, "data.group_field=client")


def test_results_record_which_files_were_read(toy):
    from ftexp.data.sources import file_sha256

    files = task_for(toy).report["files"]
    assert [(f["split"], Path(f["path"]).name) for f in files] == [("test", "test.jsonl"), ("train", "train.jsonl")]
    assert files[1]["sha256"] == file_sha256(toy / "train.jsonl") and files[1]["records"] == 120


def test_few_shot_prompts_use_real_examples_of_the_label_and_are_fixed_per_sample(toy):
    from ftexp.synthesis.generator import Generator, generator_config

    class Vocab:
        def get_vocab(self):
            return {"a": 0}

    task = task_for(toy, "data.n_train=30")
    cfg = compose_config(["data.synthetic.finetune_generator=false", "data.synthetic.shots=2"])
    run = SynthesisInputs(seed=cfg.seed, cache_dir=Path("unused"), model_source=build(cfg.model), model=cfg.model,
                          tokenizer=Vocab())
    gen = Generator(cfg.data.synthetic, run, task)
    refunds = [e.text for e in task.splits["train"] if e.label == "refund"]
    prompts, seeds = gen.prompts("refund", [0, 1, 2], refunds, seed=0)
    assert all(p.count("\nText: refund return back request") == 2 and p.endswith("\nText:") for p in prompts)
    assert gen.prompts("refund", [1], refunds, seed=0) == ([prompts[1]], [seeds[1]])  # sample 1 is sample 1
    assert len(set(seeds)) == 3
    hub = generator_config(compose_config(["data.synthetic.generator={name: qwen, hub_id: Qwen/Qwen2.5-0.5B}"])
                           .data.synthetic.generator)
    assert hub._target_ == "ftexp.models.hub.HubModel" and hub.trust_remote_code is False


def test_deduplication_can_be_turned_off_but_the_overlap_is_still_measured(toy):
    rows = [json.loads(line) for line in (toy / "train.jsonl").read_text().splitlines()]
    write(toy / "train.jsonl", rows + [{"text": "top up money question 4", "label": "top_up"}])
    task = task_for(toy, "data.checks.dedupe=false")
    assert "top up money question 4" in [e.text for e in task.splits["train"] + task.splits["val"]]
    assert "train_test_duplicates" not in task.report["dropped"]
    assert task.report["checks"]["test_in_train_fraction"] == {"banking77": pytest.approx(1 / 30)}


def test_synthetic_pool_keeps_the_good_prefix_of_a_file_cut_by_a_kill(tmp_path):
    from ftexp.synthesis import Pool

    path = tmp_path / "pool.jsonl"
    good = [json.dumps({"label": "x", "text": f"sample {i}"}) for i in range(3)]
    path.write_text("\n".join(good) + '\n{"label": "x", "te')  # the last write was cut
    with Pool(path) as pool:
        assert pool.texts == {"x": ["sample 0", "sample 1", "sample 2"]}
        pool.extend({"x": ["sample 3"]})
    assert path.read_text().splitlines() == [*good, json.dumps({"label": "x", "text": "sample 3"})]
    with Pool(path) as again:  # the lock was released; the file reads back whole
        assert again.texts["x"][-1] == "sample 3"


def test_an_in_run_generator_trained_on_fewer_batches_is_another_cache_entry():
    """debug=quick's batch limits change what an in-run generator learns: its identity (the cache key of
    its weights and texts) must change with them, and stay as it was without them."""
    from ftexp.synthesis.generator import trainer_identity

    full = trainer_identity(compose_config([]).trainer)
    quick = trainer_identity(compose_config(["debug=quick"]).trainer)
    assert "limit_train_batches" not in full and "limit_val_batches" not in full  # keys as before the limits
    assert quick != full and quick["limit_train_batches"] == 4
