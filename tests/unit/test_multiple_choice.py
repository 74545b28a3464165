"""Multiple-choice QA: data checks, MC1 / MC2 / MC1_norm scoring, the choice shuffle, lm-eval."""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM

from ftexp.config.preflight import compose_config
from ftexp.data.base import DataError
from ftexp.errors import FtexpError
from ftexp.eval import multiple_choice as mc
from ftexp.eval.base import EvalContext
from ftexp.eval.lm_eval import _check_task_names, flatten_results
from ftexp.utils.build import build

TRUE_WORDS = ["yes", "right", "true", "indeed", "correct"]
FALSE_WORDS = ["no", "wrong", "false", "never", "bad", "untrue", "nope"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine OpenMP threads
    contending for the cores make them tens of times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_jsonl(folder: Path, rows, name="mc.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def load_task(folder: Path, *overrides):
    cfg = compose_config(["data=truthfulqa_mc", f"data.path={folder}", "data.test_file=mc.jsonl", *overrides])
    return build(cfg.data, data_dir="unused", seed=0)


def evaluator(seed=0):
    return build(compose_config(["evaluator=[multiple_choice]", f"evaluator.multiple_choice.shuffle_seed={seed}"])
                 .evaluator.multiple_choice)


class WordTokenizer:
    """One id per known word (pad 0, BOS 1, EOS 2): choices' token counts are their word counts."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def __init__(self, words):
        self.ids = {w: i + 3 for i, w in enumerate(sorted(set(words)))}
        self.vocab_size = len(self.ids) + 3

    def __call__(self, text, add_special_tokens=True):
        ids = [self.ids.get(w, 3) for w in text.replace("\n", " ").split()]
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}


def questions(n=20, seed=0, words=2, same_length=False):
    """Questions whose correct choice (listed first, as in TruthfulQA) is made of TRUE_WORDS; correct
    choices have 1 to ``words`` words, wrong ones 1 to ``words + 1`` (all ``words`` with ``same_length``)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        choices = [" ".join(rng.choice(TRUE_WORDS) for _ in range(words if same_length else rng.randint(1, words)))]
        while len(choices) < 4:
            length = words if same_length else rng.randint(1, words + 1)
            wrong = " ".join(rng.choice(FALSE_WORDS) for _ in range(length))
            if wrong not in choices:
                choices.append(wrong)
        rows.append({"question": f"question {i} yes no", "choices": choices, "answer_index": 0,
                     "mc2_choices": choices[:1] + ["yes indeed correct right"] + choices[1:],
                     "mc2_labels": [1, 1, 0, 0, 0],
                     "type": "Adversarial" if i % 3 == 0 else "Plain"})
    return rows


def vocabulary(rows):
    return [w for r in rows for text in (r["question"], *r["choices"], *r["mc2_choices"]) for w in text.split()] + ["Q:", "A:"]


def tiny_lm(vocab, seed=0):
    torch.manual_seed(seed)
    cfg = MistralConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                        attn_implementation="sdpa")
    return MistralForCausalLM(cfg).eval()


def pairwise_loglik(model, prompt, choice):
    """The reference: log p(choice | prompt) from one plain forward pass over prompt + choice."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + choice])).logits[0].float(), -1)
    return float(sum(logp[len(prompt) - 1 + k, t] for k, t in enumerate(choice)))


# ------------------------------------------------------------------------------------ scoring


def test_scores_pick_the_max_likelihood_choice_and_mc2_follows_the_likelihoods(tmp_path):
    rows = questions(n=12, words=3)
    task = load_task(write_jsonl(tmp_path, rows))
    tok = WordTokenizer(vocabulary(rows))
    model = tiny_lm(tok.vocab_size, seed=1)
    ctx = EvalContext(tokenizer=tok, max_length=128)
    metrics = evaluator(seed=3).evaluate(model, task, ctx)

    hits, hits_norm, mc2 = [], [], []
    for ex, out in zip(task.splits["test"], ctx.outputs[task.name]):
        prompt = tok(ex.prompt)["input_ids"]
        ll = {c: pairwise_loglik(model, prompt, tok(" " + c, add_special_tokens=False)["input_ids"])
              for c in ex.meta["mc2_choices"]}
        best = max(ex.meta["choices"], key=ll.get)
        assert out.output == best and out.reference == ex.meta["choices"][0]
        hits.append(best == ex.completion)
        hits_norm.append(max(ex.meta["choices"], key=lambda c: ll[c] / len(c)) == ex.completion)
        probs = [math.exp(ll[c]) for c in ex.meta["mc2_choices"]]
        mc2.append(sum(p for p, lab in zip(probs, ex.meta["mc2_labels"]) if lab) / sum(probs))
    assert 0 < sum(hits) < len(hits)  # a random model: the check below is not all-or-nothing
    assert metrics["test/mc1"] == pytest.approx(sum(hits) / len(hits))
    assert metrics["test/mc1_norm"] == pytest.approx(sum(hits_norm) / len(hits_norm))
    assert metrics["test/mc2"] == pytest.approx(sum(mc2) / len(mc2), rel=1e-4)
    assert metrics["test/n"] == 12


class UniformLM(torch.nn.Module):
    """Every token has probability 1/vocab whatever the context: log p(choice) = -tokens * log(vocab)."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.config = type("C", (), {"_attn_implementation": "sdpa"})()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        return type("O", (), {"logits": logits[:, -logits_to_keep:] if logits_to_keep else logits})()


def test_mc2_equals_the_hand_computed_probability_mass(tmp_path):
    row = {"question": "q", "choices": ["yes", "no"], "answer_index": 0,
           "mc2_choices": ["yes", "no no", "right", "no no no"], "mc2_labels": [1, 0, 0, 1]}
    task = load_task(write_jsonl(tmp_path, [row]))
    tok = WordTokenizer(["yes", "no", "right", "q"])  # 7 ids: p(token) = 1/7
    metrics = evaluator().evaluate(UniformLM(7), task, EvalContext(tokenizer=tok, max_length=32))
    v = 7.0  # true choices have 1 and 3 tokens; false ones 2 and 1
    assert metrics["test/mc2"] == pytest.approx((v**-1 + v**-3) / (v**-1 + v**-2 + v**-1 + v**-3))


def test_a_model_that_knows_the_answers_scores_one_under_every_shuffle(tmp_path):
    rows = questions(n=20)
    task = load_task(write_jsonl(tmp_path, rows))
    tok = WordTokenizer(vocabulary(rows))
    model = tiny_lm(tok.vocab_size)
    # A real transformer whose output layer is a bias towards the words of the true answers.
    bias = torch.zeros(tok.vocab_size)
    bias[[tok.ids[w] for w in TRUE_WORDS]] = 6.0
    model.lm_head = torch.nn.Linear(32, tok.vocab_size, bias=True)
    torch.nn.init.zeros_(model.lm_head.weight)
    model.lm_head.bias.data = bias
    moved = 0
    for seed in range(4):
        ctx = EvalContext(tokenizer=tok, max_length=64)
        metrics = evaluator(seed).evaluate(model, task, ctx)
        assert metrics["test/mc1"] == 1.0 and metrics["test/mc1_norm"] == 1.0
        assert [o.output for o in ctx.outputs[task.name]] == [r["choices"][0] for r in rows]
        moved += sum(mc.shuffled_order(seed, i, 4)[0] != 0 for i in range(len(rows)))
    assert moved > len(rows)  # the correct answer was mostly not shown first


def test_the_shuffle_defeats_a_scorer_that_falls_back_to_position(tmp_path, monkeypatch):
    """Equal-length choices under a uniform model tie; the tie goes to the first choice shown."""
    rows = questions(n=40, words=2, same_length=True)  # all log-likelihoods equal
    task = load_task(write_jsonl(tmp_path, rows))
    tok = WordTokenizer(vocabulary(rows))
    model = UniformLM(tok.vocab_size)
    shuffled = evaluator(seed=0).evaluate(model, task, EvalContext(tokenizer=tok, max_length=64))["test/mc1"]
    first_shown = [mc.shuffled_order(0, i, len(r["choices"]))[0] == 0 for i, r in enumerate(rows)]
    assert shuffled == pytest.approx(sum(first_shown) / len(rows)) and shuffled < 0.5
    monkeypatch.setattr(mc, "shuffled_order", lambda seed, index, n: list(range(n)))
    unshuffled = evaluator(seed=0).evaluate(model, task, EvalContext(tokenizer=tok, max_length=64))["test/mc1"]
    assert unshuffled == 1.0  # the source order would hand a position-biased scorer every answer


def test_shuffled_order_is_a_seeded_permutation():
    assert sorted(mc.shuffled_order(5, 7, 6)) == list(range(6))
    assert mc.shuffled_order(5, 7, 6) == mc.shuffled_order(5, 7, 6)
    assert len({tuple(mc.shuffled_order(s, 0, 6)) for s in range(20)}) > 10


def test_slices_outputs_and_training_mode(tmp_path):
    rows = questions(n=9)
    task = load_task(write_jsonl(tmp_path, rows), "data.slices=[{name: adversarial, field: type, values: [Adversarial]}]",
                     "data.red_team.slices=[adversarial]")
    tok = WordTokenizer(vocabulary(rows))
    model = tiny_lm(tok.vocab_size, seed=2).train()
    ctx = EvalContext(tokenizer=tok, max_length=64)
    metrics = evaluator().evaluate(model, task, ctx)
    assert model.training  # restored after scoring
    outs = ctx.outputs[task.name]
    adversarial = [i for i, r in enumerate(rows) if r["type"] == "Adversarial"]
    assert [o.id for o in outs] == [f"{task.name}/test/{i}" for i in range(9)]
    assert [i for i, o in enumerate(outs) if o.red_team] == adversarial
    assert [i for i, o in enumerate(outs) if o.slices == ["adversarial"]] == adversarial
    assert all(o.auto_correct == (o.scores["mc1"] == 1.0) == (o.output == o.reference) for o in outs)
    assert metrics["test/slice/adversarial/n"] == len(adversarial)
    assert metrics["test/slice/adversarial/mc1"] == pytest.approx(
        sum(outs[i].scores["mc1"] for i in adversarial) / len(adversarial))


# --------------------------------------------------------------------------------------- data


def test_truthfulqa_mc_loads_the_real_file(data_dir):
    task = build(compose_config(["data=truthfulqa_mc"]).data, data_dir=str(data_dir), seed=0)
    test = task.splits["test"]
    assert task.kind == "multiple_choice" and task.eval_only
    assert len(test) == 817 and not task.splits["train"] and not task.splits["val"]
    for ex in test:
        choices, answer = ex.meta["choices"], ex.meta["answer_index"]
        assert ex.completion == choices[answer] and ex.prompt == f"Q: {ex.text}\nA:"
        assert len(ex.meta["mc2_choices"]) == len(ex.meta["mc2_labels"]) and 1 in ex.meta["mc2_labels"]


GOOD = {"question": "q?", "choices": ["a", "b"], "answer_index": 1, "mc2_choices": ["a", "b"], "mc2_labels": [0, 1]}


@pytest.mark.parametrize("change,field", [
    ({"choices": []}, "choices"),
    ({"choices": "a"}, "choices"),
    ({"choices": ["a", " "]}, "choices"),
    ({"choices": ["a", "a"]}, "choices"),
    ({"answer_index": 2}, "answer_index"),
    ({"answer_index": "1"}, "answer_index"),
    ({"answer_index": True}, "answer_index"),
    ({"mc2_labels": [1]}, "mc2_labels"),
    ({"mc2_labels": [0, 2]}, "mc2_labels"),
    ({"mc2_labels": [0, 0]}, "mc2_labels"),
    ({"mc2_choices": ["a", 3]}, "mc2_choices"),
])
def test_a_malformed_record_names_file_line_and_field(tmp_path, change, field):
    folder = write_jsonl(tmp_path, [GOOD, {**GOOD, **change}])
    with pytest.raises(DataError, match=rf"mc\.jsonl, line 2: field '{field}'"):
        load_task(folder)


def test_a_missing_field_and_half_an_mc2_config_are_errors(tmp_path):
    folder = write_jsonl(tmp_path, [GOOD, {k: v for k, v in GOOD.items() if k != "answer_index"}])
    with pytest.raises(DataError, match=r"line 2: field 'answer_index' is missing"):
        load_task(folder)
    with pytest.raises(DataError, match="mc2_choices_field and data.mc2_labels_field go together"):
        load_task(write_jsonl(tmp_path / "b", [GOOD]), "data.mc2_labels_field=null")
    no_mc2 = load_task(write_jsonl(tmp_path / "c", [GOOD]), "data.mc2_labels_field=null", "data.mc2_choices_field=null")
    tok = WordTokenizer(["a", "b", "q?"])
    metrics = evaluator().evaluate(UniformLM(tok.vocab_size), no_mc2, EvalContext(tokenizer=tok, max_length=16))
    assert "test/mc2" not in metrics and "test/mc1" in metrics


# ------------------------------------------------------------------------------------ lm-eval

LM_EVAL_MC1 = """task: toy_mc1
dataset_path: json
dataset_kwargs: {data_files: {test: "DATA"}, cache_dir: "CACHE"}
test_split: test
output_type: multiple_choice
doc_to_text: "Q: {{question}}\\nA:"
doc_to_choice: "{{choices}}"
doc_to_target: answer_index
metric_list:
  - {metric: acc, aggregation: mean, higher_is_better: true}
  - {metric: acc_norm, aggregation: mean, higher_is_better: true}
"""
# truthfulqa_mc2 as lm-eval defines it (its own process_results), over our JSONL's field names.
LM_EVAL_MC2 = LM_EVAL_MC1.replace("toy_mc1", "toy_mc2").replace("{{choices}}", "{{mc2_choices}}").replace(
    "doc_to_target: answer_index", "doc_to_target: 0\nprocess_results: !function mc2_utils.process_results_mc2"
).split("metric_list")[0] + "metric_list:\n  - {metric: acc, aggregation: mean, higher_is_better: true}\n"
MC2_UTILS = """from lm_eval.tasks.truthfulqa.utils import process_results_mc2 as truthfulqa_mc2


def process_results_mc2(doc, results):
    return truthfulqa_mc2({"mc2_targets": {"labels": doc["mc2_labels"]}}, results)
"""


@pytest.fixture
def lm_eval_setup(tmp_path, monkeypatch):
    """12 questions as an ftexp task and as two local lm-eval tasks; a tiny model with a real tokenizer."""
    pytest.importorskip("lm_eval")
    from ftexp.models.tokenizer import bpe_tokenizer

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = questions(n=12, words=3)
    data = write_jsonl(tmp_path / "data", rows)
    tasks = tmp_path / "lm_eval_tasks"
    tasks.mkdir()
    for name, text in (("toy_mc1.yaml", LM_EVAL_MC1), ("toy_mc2.yaml", LM_EVAL_MC2)):
        text = text.replace("DATA", str(data / "mc.jsonl")).replace("CACHE", str(tmp_path / "hf_cache"))
        (tasks / name).write_text(text)
    (tasks / "mc2_utils.py").write_text(MC2_UTILS)
    tok = bpe_tokenizer([" ".join(vocabulary(rows))] * 3, 300, tmp_path / "tok")
    model = tiny_lm(len(tok), seed=4)
    return load_task(data), tok, model, tasks


def lm_eval_evaluator(tasks_dir, tasks="[toy_mc1,toy_mc2]"):
    return build(compose_config(["evaluator=[lm_eval]", f"evaluator.lm_eval.tasks={tasks}",
                                 f"evaluator.lm_eval.include_path={tasks_dir}"]).evaluator.lm_eval)


def test_lm_eval_scores_match_the_multiple_choice_evaluator(lm_eval_setup):
    task, tok, model, tasks_dir = lm_eval_setup
    model.train()
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    got = lm_eval_evaluator(tasks_dir).evaluate(model, None, EvalContext(tokenizer=tok, max_length=128))
    assert torch.equal(torch.rand(3), expected_draw)  # lm-eval's global seeding did not leak into the run
    assert model.training  # restored after HFLM switched it to eval
    ours = evaluator(seed=1).evaluate(model, task, EvalContext(tokenizer=tok, max_length=128))
    assert 0 < ours["test/mc1"] < 1
    assert got["lm_eval/toy_mc1/acc"] == pytest.approx(ours["test/mc1"])
    assert got["lm_eval/toy_mc1/acc_norm"] == pytest.approx(ours["test/mc1_norm"])
    assert got["lm_eval/toy_mc2/acc"] == pytest.approx(ours["test/mc2"], rel=1e-4)
    assert got["lm_eval/toy_mc1/n"] == 12 and not any("stderr" in k or "," in k for k in got)


def test_lm_eval_measures_the_lora_weights_of_a_peft_model(lm_eval_setup):
    from peft import LoraConfig, get_peft_model

    task, tok, model, tasks_dir = lm_eval_setup
    ctx = EvalContext(tokenizer=tok, max_length=128)
    base_mc2 = evaluator().evaluate(model, task, ctx)["test/mc2"]
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)  # random B: not a no-op
    peft_model = get_peft_model(model, lora)
    ours = evaluator().evaluate(peft_model, task, ctx)["test/mc2"]
    got = lm_eval_evaluator(tasks_dir, "[toy_mc2]").evaluate(peft_model, None, ctx)
    assert ours != pytest.approx(base_mc2, rel=1e-3)
    assert got["lm_eval/toy_mc2/acc"] == pytest.approx(ours, rel=1e-4)


def test_lm_eval_skips_models_trained_from_scratch_with_one_warning(lm_eval_setup, caplog):
    _, tok, model, tasks_dir = lm_eval_setup
    ev = lm_eval_evaluator(tasks_dir)
    ctx = EvalContext(tokenizer=tok, max_length=128, pretrained=False)
    with caplog.at_level("WARNING", logger="ftexp.eval.lm_eval"):
        assert ev.evaluate(model, None, ctx) == {} and ev.evaluate(model, None, ctx) == {}
    assert sum("not pretrained" in r.message for r in caplog.records) == 1
    assert ev.scope == "model"


def test_lm_eval_without_the_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    with pytest.raises(FtexpError, match=r"evaluator=lm_eval needs lm-evaluation-harness: pip install 'ftexp\[lm-eval\]'"):
        build(compose_config(["evaluator=[lm_eval]"]).evaluator.lm_eval)


def test_lm_eval_results_are_flattened_without_stderr_and_filter_suffix():
    raw = {"arc_easy": {"alias": "arc_easy", "acc,none": 0.5, "acc_stderr,none": 0.01, "acc_norm,none": 0.625,
                        "acc_norm_stderr,none": "N/A", "sample_len": 8},
           "gsm8k": {"exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": 0.1}}
    assert flatten_results(raw) == {"lm_eval/arc_easy/acc": 0.5, "lm_eval/arc_easy/acc_norm": 0.625,
                                    "lm_eval/arc_easy/n": 8.0, "lm_eval/gsm8k/exact_match/strict-match": 0.25}


def test_an_unknown_lm_eval_task_is_named_with_suggestions():
    with pytest.raises(FtexpError, match="'arc_esay' is not a task, group or tag of lm-eval.*Did you mean arc_easy"):
        _check_task_names(["arc_esay"], ["arc_easy", "arc_challenge", "hellaswag"], None)
