"""EWC: the per-sample Fisher against a plain autograd loop, the penalty, anchors, modes, memory."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from ftexp.config.schema import EwcConfig
from ftexp.data.datamodule import pad_batch
from ftexp.mitigation.base import StageContext
from ftexp.mitigation.ewc import EWC, trainable_parameters
from ftexp.mitigation.fisher import per_sample_fisher
from ftexp.training.module import completion_loss
from tests.test_eval import tiny_lm

PAD = 0


def make_rows(n, seed=0):
    """Rows as encode_split makes them: a prompt (label -100) then a completion; lengths 4..12."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        ids = [1] + [rng.randrange(3, 40) for _ in range(rng.randrange(3, 12))]
        prompt = rng.randrange(1, len(ids) - 1)
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return rows


def no_target(row):
    return {"input_ids": row["input_ids"], "labels": [-100] * len(row["input_ids"])}


def batches(rows, size):
    return [pad_batch(rows[i:i + size], PAD) for i in range(0, len(rows), size)]


def loop_fisher(model, rows, params):
    """The reference: one sample at a time, no padding, transformers' own loss, plain autograd."""
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    counted = [r for r in rows if any(t != -100 for t in r["labels"][1:])]
    for r in counted:
        loss = model(input_ids=torch.tensor([r["input_ids"]]), labels=torch.tensor([r["labels"]])).loss
        for (name, _), g in zip(params.items(), torch.autograd.grad(loss, list(params.values()))):
            total[name] += g.square()
    return {name: t / len(counted) for name, t in total.items()}


def stage(model, rows, index=1, split="train"):
    """A StageContext whose task's examples are already-encoded rows."""
    task = SimpleNamespace(name="toy", splits={split: rows})
    return StageContext(index=index, name=f"s{index}", model=model, datamodule=None, task=task,
                        tokenizer=SimpleNamespace(pad_token_id=PAD), encode=lambda examples: list(examples), seed=3)


def ewc(**values):
    return EWC(EwcConfig(**{"lambda": 10.0, "fisher_batch_size": 4, **values}))


def assert_close(a, b, atol):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=atol), name


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_fisher_matches_a_batch_size_one_loop_for_every_batch_size(impl):
    model = tiny_lm(impl).double()
    rows = make_rows(8)
    params = trainable_parameters(model)
    reference = loop_fisher(model, rows, params)
    assert sum(float(f.sum()) for f in reference.values()) > 0
    by_size = {size: per_sample_fisher(model, batches(rows, size), params) for size in (1, 3, 8)}
    for fisher in by_size.values():
        assert_close(fisher, reference, atol=1e-6)
        assert_close(fisher, by_size[1], atol=1e-7)  # not 0: eager's softmax runs in fp32, padding moves its rounding


def test_samples_without_targets_add_nothing_and_no_nan():
    model = tiny_lm().double()
    rows = make_rows(5)
    params = trainable_parameters(model)
    with_empty = per_sample_fisher(model, batches(rows + [no_target(r) for r in rows[:3]], 4), params)
    assert_close(with_empty, per_sample_fisher(model, batches(rows, 4), params), atol=1e-12)
    only_empty = per_sample_fisher(model, batches([no_target(r) for r in rows], 4), params)
    assert all(not f.isnan().any() and not f.any() for f in only_empty.values())


def test_fisher_runs_in_eval_mode_and_restores_the_modes():
    model = tiny_lm()
    model.train()
    model.model.layers[0].eval()
    per_sample_fisher(model, batches(make_rows(2), 2), trainable_parameters(model))
    assert model.training and model.model.layers[1].training and not model.model.layers[0].training
    assert model.config._attn_implementation == "sdpa"  # eager only while the Fisher is taken


def test_penalty_is_zero_after_consolidation_and_positive_after_a_step():
    model = tiny_lm()
    rows = make_rows(6)
    batch = pad_batch(rows[:4], PAD)
    mitigation = ewc()
    loss = completion_loss(model, batch)
    unchanged, logs = mitigation.training_loss(loss, batch, model)
    assert unchanged is loss and logs == {}  # nothing consolidated yet
    mitigation.after_stage(stage(model, rows))
    total, logs = mitigation.training_loss(loss, batch, model)
    assert logs["ewc_penalty"] == 0 and total == loss
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = completion_loss(model, batch)
    mitigation.training_loss(loss, batch, model)[0].backward()
    optimiser.step()
    loss = completion_loss(model, batch)
    total, logs = mitigation.training_loss(loss, batch, model)
    assert logs["ewc_penalty"] > 0 and torch.isclose(logs["ewc_ratio"], logs["ewc_penalty"] / loss.detach())
    assert torch.isclose(total, loss + logs["ewc_penalty"])
    assert total.requires_grad


def test_anchors_are_copies_not_aliases():
    model = tiny_lm()
    mitigation = ewc()
    mitigation.after_stage(stage(model, make_rows(4)))
    (_, anchor), = mitigation.terms
    before = {name: a.clone() for name, a in anchor.items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert_close(anchor, before, atol=0)


def test_lora_fisher_and_anchors_cover_only_the_adapter():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_lm(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    mitigation = ewc()
    mitigation.after_stage(stage(model, make_rows(6)))
    (fisher, anchor), = mitigation.terms
    trainable = trainable_parameters(model)
    assert fisher.keys() == anchor.keys() == trainable.keys()
    assert all("lora_" in name for name in fisher)
    nbytes = sum(p.numel() * p.element_size() for p in trainable.values())
    assert sum(f.numel() * f.element_size() for f in fisher.values()) == nbytes
    assert sum(a.numel() * a.element_size() for a in anchor.values()) == nbytes
    assert any(f.any() for name, f in fisher.items() if "lora_B" in name)  # B gets gradient at init, A not


def test_online_mode_decays_and_adds_while_separate_mode_keeps_one_term_per_stage():
    model = tiny_lm()
    rows = make_rows(6)
    online, separate = ewc(mode="online", gamma=0.5), ewc(mode="separate")
    snapshots = []
    for index in (1, 2):
        online.after_stage(stage(model, rows, index))
        separate.after_stage(stage(model, rows, index))
        snapshots.append({name: p.detach().clone() for name, p in model.named_parameters()})
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
    (f1, a1), (f2, a2) = separate.terms
    assert_close(a1, snapshots[0], atol=0)
    assert_close(a2, snapshots[1], atol=0)
    (combined, anchor), = online.terms
    assert_close(combined, {name: 0.5 * f1[name] + f2[name] for name in f1}, atol=0)
    assert_close(anchor, snapshots[1], atol=0)

    batch = pad_batch(rows[:2], PAD)
    loss = completion_loss(model, batch)
    current = dict(model.named_parameters())
    expected = 5.0 * sum((f[n] * (current[n] - a[n]) ** 2).sum() for f, a in separate.terms for n in f)
    assert torch.isclose(separate.training_loss(loss, batch, model)[1]["ewc_penalty"], expected.detach())


def test_fisher_subset_is_seeded_and_sized():
    model = tiny_lm()
    rows = make_rows(10)
    seen = []
    ctx = stage(model, rows)
    ctx.encode = lambda examples: seen.append(examples) or list(examples)
    first, second = ewc(fisher_samples=4), ewc(fisher_samples=4)
    first.after_stage(ctx)
    second.after_stage(ctx)
    assert len(seen[0]) == 4 and seen[0] == seen[1]
    assert_close(first.terms[0][0], second.terms[0][0], atol=0)


def test_state_dict_round_trip_gives_the_same_penalty():
    model = tiny_lm()
    rows = make_rows(4)
    mitigation = ewc(mode="separate")
    for index in (1, 2):
        mitigation.after_stage(stage(model, rows, index))
        with torch.no_grad():
            model.lm_head.weight.add_(0.05)
    restored = ewc(mode="separate")
    restored.load_state_dict(mitigation.state_dict())
    batch = pad_batch(rows, PAD)
    loss = completion_loss(model, batch)
    got, want = (m.training_loss(loss, batch, model)[1]["ewc_penalty"] for m in (restored, mitigation))
    assert want > 0 and got == want
