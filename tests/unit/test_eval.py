"""Label scoring: the tree-attention pass equals scoring each (prompt, label) pair on its own."""

from __future__ import annotations

import pytest
import torch

from ftexp.data.base import Example, Task
from ftexp.eval.base import EvalContext
from ftexp.eval.classification import ClassificationEvaluator, label_chunks, label_logprobs, label_trie, trie_size
from ftexp.config.preflight import compose_config
from ftexp.utils.build import build
from tests.helpers.models import LABELS, PROMPTS, tiny_lm


def pairwise(model, prompts, labels):
    """The reference: one forward pass per (prompt, label), no padding anywhere."""
    out = torch.zeros(len(prompts), len(labels))
    with torch.no_grad():
        for i, p in enumerate(prompts):
            for j, lab in enumerate(labels):
                logp = torch.log_softmax(model(input_ids=torch.tensor([p + lab])).logits[0].float(), -1)
                out[i, j] = sum(logp[len(p) - 1 + k, t] for k, t in enumerate(lab))
    return out


@pytest.mark.parametrize("chunk", [1, 2, 5])
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_tree_scoring_equals_pairwise_scoring(impl, chunk):
    model = tiny_lm(impl)
    got = label_logprobs(model, PROMPTS, LABELS, pad_id=0, label_chunk=chunk)
    assert torch.allclose(got, pairwise(model, PROMPTS, LABELS), atol=1e-4)


def test_labels_sharing_a_prefix_feed_it_once():
    tokens, parent, depth, steps = label_trie(LABELS)
    assert len(tokens) == trie_size(LABELS) == 9 < sum(len(label) - 1 for label in LABELS)  # 20 and 21 22 once each
    assert tokens.count(20) == 1 and tokens.count(22) == 1 and max(depth) == 2
    shared = 1 + tokens.index(22)
    assert steps[1] == [0, 1 + tokens.index(21), shared, 1 + tokens.index(23)] and steps[5][2] == shared
    assert parent[tokens.index(22)] == tokens.index(21) and parent[tokens.index(21)] == -1


def test_memory_bound_splits_labels_into_chunks():
    model = tiny_lm()
    full = label_logprobs(model, PROMPTS, LABELS, pad_id=0)
    assert label_chunks(LABELS, 4, 40, 2**27) == [(0, 6)]
    small = 4 * 5 * 40  # room for 5 - 1 tokens after the prompt
    ranges = label_chunks(LABELS, 4, 40, small)
    assert ranges[0] == (0, 2) and ranges[-1][1] == 6 and len(ranges) > 2
    got = label_logprobs(model, PROMPTS, LABELS, pad_id=0, max_logits=small)
    assert torch.allclose(got, full, atol=1e-5)


def test_memory_bound_splits_prompts_before_labels():
    """Where one prompt's logits over all labels fit, prompts are split, never labels: every pass then
    holds every label, and no prompt is run through the model twice."""
    model = tiny_lm()
    full = label_logprobs(model, PROMPTS, LABELS, pad_id=0)
    one_row = (1 + trie_size(LABELS)) * 40
    passes = []
    hook = model.register_forward_hook(lambda mod, args, kwargs, out: passes.append(kwargs["input_ids"].shape),
                                       with_kwargs=True)
    got = label_logprobs(model, PROMPTS, LABELS, pad_id=0, max_logits=2 * one_row)
    hook.remove()
    assert torch.allclose(got, full, atol=1e-5)
    assert [shape[0] for shape in passes] == [2] * (len(PROMPTS) // 2) + [1] * (len(PROMPTS) % 2)
    block = trie_size(LABELS)
    widths = [max(len(p) for p in PROMPTS[i:i + 2]) + block for i in range(0, len(PROMPTS), 2)]
    assert [shape[1] for shape in passes] == widths  # every label in every pass


def toy_task(labels, n=12):
    task = Task(name="toy")
    task.labels = labels
    task.splits = {"test": [Example(prompt=f"p{i}", completion=labels[i % len(labels)], label=labels[i % len(labels)])
                            for i in range(n)]}
    return task


class StubTokenizer:
    """Maps each word to an id; a label's ids are fixed so the stub model can prefer one."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def __call__(self, text, add_special_tokens=True):
        ids = [3 + (sum(map(ord, w)) % 30) for w in text.split()]
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}


def test_accuracy_and_f1_follow_the_argmax_of_the_label_scores():
    model, tok = tiny_lm(seed=3), StubTokenizer()
    task = toy_task(["alpha", "beta_x", "gamma"], n=12)
    task.slices = {"firsts": [0, 1, 2, 3], "empty": []}
    cfg = compose_config(["evaluator.classification.batch_size=5"]).evaluator.classification
    metrics = build(cfg).evaluate(model, task, EvalContext(tokenizer=tok, max_length=64))
    labels = [[*tok(" " + lab, add_special_tokens=False)["input_ids"], 2] for lab in task.labels]
    scores = pairwise(model, [tok(ex.prompt)["input_ids"] for ex in task.splits["test"]], labels)
    target = torch.tensor([i % 3 for i in range(12)])
    hits = (scores.argmax(-1) == target).float()
    assert metrics["test/accuracy"] == pytest.approx(hits.mean().item())
    assert metrics["test/n"] == 12 and 0.0 <= metrics["test/macro_f1"] <= 1.0
    assert metrics["test/slice/firsts/accuracy"] == pytest.approx(hits[:4].mean().item())
    assert metrics["test/slice/firsts/n"] == 4 and metrics["test/slice/empty/n"] == 0
    assert "test/slice/empty/accuracy" not in metrics


def test_a_model_that_prefers_the_right_label_scores_one():
    """A model whose output always favours the label whose token is the prompt's last token."""

    class Echo(torch.nn.Module):
        config = type("C", (), {"_attn_implementation": "sdpa"})()

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0):
            logits = torch.full((*input_ids.shape, 40), -10.0)
            logits.scatter_(-1, input_ids.unsqueeze(-1), 10.0)  # predict "repeat the last token"
            logits[..., 2] = 9.0  # then end
            keep = logits[:, -logits_to_keep:] if logits_to_keep else logits
            return type("O", (), {"logits": keep})()

    task = Task(name="echo")
    task.labels = ["a", "b", "c"]
    ids = {"a": 10, "b": 11, "c": 12}

    class Tok(StubTokenizer):
        def __call__(self, text, add_special_tokens=True):
            word = text.split()[-1]
            return {"input_ids": ([1] if add_special_tokens else []) + [ids.get(word, 5)]}

    task.splits = {"test": [Example(prompt=f"x {lab}", completion=lab, label=lab) for lab in "abcabc"]}
    evaluator = ClassificationEvaluator(compose_config([]).evaluator.classification)
    metrics = evaluator.evaluate(Echo(), task, EvalContext(tokenizer=Tok(), max_length=16))
    assert metrics["test/accuracy"] == 1.0 and metrics["test/macro_f1"] == 1.0


def test_flash_attention_models_score_on_sdpa_and_switch_back():
    from ftexp.eval.classification import scoring_attention

    class Switchable(torch.nn.Module):
        def __init__(self, impl):
            super().__init__()
            self.config = type("C", (), {"_attn_implementation": impl})()

        def set_attn_implementation(self, impl):
            self.config._attn_implementation = impl

    model = Switchable("flash_attention_2")
    with scoring_attention(model):
        assert model.config._attn_implementation == "sdpa"
    assert model.config._attn_implementation == "flash_attention_2"
    eager = Switchable("eager")
    with scoring_attention(eager):
        assert eager.config._attn_implementation == "eager"  # takes 4D masks as it is
