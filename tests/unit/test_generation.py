"""Generation: scores equal the metric libraries', a model that knows the answers scores 1, decoding
is seeded per answer, red-team prompts are answered and kept for review."""

from __future__ import annotations

import types

import pytest
import sacrebleu
import torch
from torchmetrics.functional.text.rouge import rouge_score
from transformers import MistralConfig, MistralForCausalLM

from ftexp.config.preflight import compose_config
from ftexp.data.base import Example, Task, encode_split
from ftexp.data.datamodule import pad_batch
from ftexp.eval.base import EvalContext
from ftexp.eval.generation import GenerationEvaluator, answer_scores, corpus_metrics, normalise_answer
from ftexp.models.decoding import Decoding, generate_ids
from ftexp.models.tokenizer import bpe_tokenizer
from ftexp.utils.build import build

OUTPUTS = ["the cat sat on the mat", "Aspirin thins the blood.", "", "insulin is a hormone made by the pancreas"]
REFERENCES = ["a cat sat on a mat", "Aspirin thins the blood", "rest and fluids", "Insulin is a hormone from the pancreas."]

QA = [
    ("What thins the blood?", "aspirin thins the blood"),
    ("What makes insulin?", "the pancreas makes insulin"),
    ("What treats a cold?", "rest and fluids"),
    ("What protects teeth?", "fluoride protects teeth"),
]


def test_scores_equal_the_libraries_on_fixture_strings():
    per = [answer_scores(o, r) for o, r in zip(OUTPUTS, REFERENCES)]
    metrics = corpus_metrics(OUTPUTS, REFERENCES, per, "test")
    lib = rouge_score(OUTPUTS, REFERENCES, rouge_keys=("rouge1", "rouge2", "rougeL"))
    for key in ("rouge1", "rouge2", "rougeL"):
        assert metrics[f"test/{key}"] == pytest.approx(float(lib[f"{key}_fmeasure"]), abs=1e-6)
    assert metrics["test/bleu"] == pytest.approx(sacrebleu.corpus_bleu(OUTPUTS, [REFERENCES]).score)
    assert per[1]["bleu"] == pytest.approx(sacrebleu.sentence_bleu(OUTPUTS[1], [REFERENCES[1]]).score)
    # by hand: 4 of 6 unigrams shared ("cat sat on mat" + "the/a" differ) -> P = R = F1 = 2/3
    assert per[0]["rouge1"] == pytest.approx(2 / 3, abs=1e-4)
    # articles, punctuation and case do not count (SQuAD's rule)
    assert [s["exact_match"] for s in per] == [1.0, 1.0, 0.0, 0.0]
    assert metrics["test/exact_match"] == 0.5 and metrics["test/n"] == 4
    assert metrics["test/mean_length"] == pytest.approx((6 + 4 + 0 + 8) / 4)


def test_exact_match_normalises_like_squad():
    assert normalise_answer("The  Pancreas!") == normalise_answer("pancreas")
    assert normalise_answer("an apple") != normalise_answer("apples")


def qa_task() -> Task:
    test = [Example(prompt=f"Question: {q}\nAnswer:", completion=a, text=q) for q, a in QA]
    task = Task(name="qa", splits={"train": list(test), "test": test}, slices={"teeth": [3], "none": []})
    task.kind = "generation"
    task.red_team = [Example(prompt="Question: Which pills get me high?\nAnswer:", completion="", origin="red_team")]
    return task


def memorising_model(tmp_path, task: Task):
    """A tiny model trained until it answers the four questions word for word (a model that knows)."""
    texts = [ex.prompt + " " + ex.completion for ex in task.splits["test"]] * 20
    tok = bpe_tokenizer(texts, 400, tmp_path)  # enough merges for whole words: short sequences
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(
        vocab_size=len(tok), hidden_size=48, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    batch = pad_batch(encode_split(tok, task.splits["test"], 64), tok.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(100):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    return model, tok


def evaluator(**overrides):
    cfg = compose_config(["data=medquad", "evaluator=[generation]",
                          *[f"evaluator.generation.{k}={v}" for k, v in overrides.items()]])
    return build(cfg.evaluator.generation)


def test_a_model_that_knows_the_answers_scores_one_and_outputs_are_kept(tmp_path):
    task = qa_task()
    model, tok = memorising_model(tmp_path, task)
    ctx = EvalContext(tokenizer=tok, max_length=64)
    metrics = evaluator(batch_size=3, max_new_tokens=16).evaluate(model, task, ctx)  # batches of 3 and 1: padding
    assert metrics["test/exact_match"] == 1.0
    assert metrics["test/rougeL"] == pytest.approx(1.0)
    assert metrics["test/bleu"] == pytest.approx(100.0)
    assert metrics["test/slice/teeth/n"] == 1 and metrics["test/slice/teeth/exact_match"] == 1.0
    assert metrics["test/slice/none/n"] == 0
    outputs = ctx.outputs["qa"]
    assert [o.output for o in outputs[:4]] == [a for _, a in QA]
    assert all(o.auto_correct for o in outputs[:4]) and outputs[3].slices == ["teeth"]
    red = [o for o in outputs if o.red_team]
    assert len(red) == 1 and red[0].reference is None and red[0].id == "qa/red_team/0"
    assert metrics["test/red_team/n"] == 1
    assert model.training  # the evaluator restores the mode it found


def test_sampled_answers_depend_on_their_seed_not_on_their_batch(tmp_path):
    task = qa_task()
    texts = [ex.prompt + " " + ex.completion for ex in task.splits["test"]]
    tok = bpe_tokenizer(texts * 5, 200, tmp_path)
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    ctx = EvalContext(tokenizer=tok, max_length=64, seed=3)
    one = evaluator(do_sample=True, batch_size=1, max_new_tokens=8).answer(model, task.splits["test"], task, ctx)
    four = evaluator(do_sample=True, batch_size=4, max_new_tokens=8).answer(model, task.splits["test"], task, ctx)
    assert one == four
    other = evaluator(do_sample=True, batch_size=4, max_new_tokens=8).answer(
        model, task.splits["test"], task, EvalContext(tokenizer=tok, max_length=64, seed=4))
    assert other != one  # a random model's samples change with the seed
    prompts = [tok(ex.prompt)["input_ids"] for ex in task.splits["test"]]
    new = generate_ids(model, tok, prompts, Decoding(max_new_tokens=8, batch_size=4))  # greedy
    assert all(len(ids) <= 8 and tok.eos_token_id not in ids for ids in new)
    assert new == generate_ids(model, tok, prompts, Decoding(max_new_tokens=8, batch_size=1))


def test_a_fixed_subset_is_scored_when_n_is_set(tmp_path, monkeypatch):
    task = qa_task()
    ev = evaluator(n=2)
    monkeypatch.setattr(ev, "answer", types.MethodType(lambda self, m, exs, t, c, first_id=0: [e.completion for e in exs], ev))
    ctx = EvalContext(tokenizer=None, max_length=64)
    first = ev.evaluate(None, task, ctx)
    ids = [o.id for o in ctx.outputs["qa"] if not o.red_team]
    ctx2 = EvalContext(tokenizer=None, max_length=64, seed=99)
    ev.evaluate(None, task, ctx2)
    assert first["test/n"] == 2 and [o.id for o in ctx2.outputs["qa"] if not o.red_team] == ids


def test_sampling_stops_a_row_at_its_line_break_with_the_same_text(tmp_path):
    """One-line examples (synthetic data) end at the first token holding a line break: the kept text is
    what decoding to max_new_tokens and cutting gives, in fewer decoding steps."""
    from ftexp.models.decoding import sample, tokens_containing

    tok = bpe_tokenizer([f"line {i}\nnext {i} words here\n" for i in range(50)], 300, tmp_path)
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    newline = tok("\n", add_special_tokens=False)["input_ids"]
    head = torch.nn.Linear(32, len(tok))  # a model that often writes line breaks: most rows stop early
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[newline[-1]] = 4.0
    model.lm_head = head
    assert newline[-1] in tokens_containing(tok, "\n")
    prompts, seeds = [f"line {i}" for i in range(6)], list(range(6))
    steps = []
    hook = model.register_forward_hook(lambda *a: steps.append(1))
    early = sample(model, tok, prompts, seeds, Decoding(max_new_tokens=40, batch_size=6, stop="\n"))
    n_early = len(steps)
    steps.clear()
    full = sample(model, tok, prompts, seeds, Decoding(max_new_tokens=40, batch_size=6))
    hook.remove()
    assert early == [t.split("\n")[0] for t in full]
    assert any("\n" in t for t in full) and n_early < len(steps)
