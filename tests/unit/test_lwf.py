"""LwF: which model the teacher is, that the student survives the swap, and the loss itself."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from ftexp.config.schema import LwfConfig
from ftexp.mitigation.base import StageContext
from ftexp.mitigation.lwf import LwF, forward_kl
from tests.helpers.models import tiny_lm

BATCH = {
    "input_ids": torch.tensor([[1, 5, 6, 7, 20, 2], [1, 8, 21, 22, 2, 0]]),
    "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]]),
    "labels": torch.tensor([[-100, -100, -100, -100, 20, 2], [-100, -100, 21, 22, 2, -100]]),
}


def lora_lm():
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.2, target_modules=["q_proj", "v_proj"])
    return get_peft_model(tiny_lm(), config).train()


def start_stage(lwf, model, index=1):
    lwf.before_stage(StageContext(index=index, name=f"s{index}", model=model, datamodule=None, task=None))


def perturb(model, scale=0.5, seed=1):
    """Stands in for training: every trainable weight moves."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * scale)


def logits(model):
    with torch.no_grad():
        return model(input_ids=BATCH["input_ids"], attention_mask=BATCH["attention_mask"]).logits


def hand_kl(p_logits, q_logits, temperature=1.0):
    """KL(p || q) per row, by the definition."""
    log_p = torch.log_softmax(p_logits / temperature, -1)
    log_q = torch.log_softmax(q_logits / temperature, -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def test_stage1_teacher_is_the_base_model_with_the_adapter_disabled():
    model, lwf = lora_lm(), LwF(LwfConfig())
    start_stage(lwf, model)  # fresh adapter: B = 0
    perturb(model)
    teacher = lwf.teacher_logits(model, BATCH)
    model.eval()
    with model.disable_adapter():
        base = logits(model)
    assert torch.allclose(teacher, base, atol=1e-5)
    assert not torch.allclose(logits(model), base, atol=1e-2)  # the perturbed student really differs


def test_later_stage_teacher_is_the_adapter_the_stage_began_with():
    model, lwf = lora_lm(), LwF(LwfConfig())
    perturb(model, seed=1)  # stage 1 trained
    start_stage(lwf, model, index=2)
    stage_start = copy.deepcopy(model).eval()
    perturb(model, seed=2)  # stage 2 trains
    assert torch.allclose(lwf.teacher_logits(model, BATCH), logits(stage_start), atol=1e-5)


def test_full_finetuning_teacher_is_the_weights_at_stage_start():
    model, lwf = tiny_lm().requires_grad_(True).train(), LwF(LwfConfig())
    start_stage(lwf, model)
    stage_start = copy.deepcopy(model).eval()
    perturb(model, scale=0.05)
    assert torch.allclose(lwf.teacher_logits(model, BATCH), logits(stage_start), atol=1e-5)
    assert lwf.teacher_bytes == sum(p.numel() * p.element_size() for p in model.parameters())


def test_student_weights_and_modes_survive_the_teacher_forward_bit_for_bit():
    model, lwf = lora_lm(), LwF(LwfConfig())
    start_stage(lwf, model)
    perturb(model)
    model.base_model.model.model.layers[0].mlp.eval()  # a submodule in its own mode must stay so
    before = {n: (p.data_ptr(), p.detach().clone()) for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    teachers = [lwf.teacher_logits(model, BATCH) for _ in range(2)]
    assert torch.equal(teachers[0], teachers[1])  # dropout off: the teacher is deterministic
    for n, p in model.named_parameters():
        assert p.data_ptr() == before[n][0] and torch.equal(p, before[n][1])  # same storage, same bits
    assert {n: m.training for n, m in model.named_modules()} == modes


def test_teacher_snapshot_holds_only_the_adapter():
    model, lwf = lora_lm(), LwF(LwfConfig())
    start_stage(lwf, model)
    adapter = [p for p in model.parameters() if p.requires_grad]
    assert lwf.teacher_bytes == sum(p.numel() for p in adapter) * 4
    assert all("lora_" in name for name in lwf.teacher)
    assert lwf.teacher_bytes < sum(p.numel() * 4 for p in model.parameters()) / 10


def test_forward_kl_is_kl_teacher_to_student_per_completion_token():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 6, 40, generator=g) * 3, torch.randn(2, 6, 40, generator=g) * 3
    mask = BATCH["labels"][:, 1:] != -100
    s, t = student[:, :-1][mask], teacher[:, :-1][mask]
    got = forward_kl(student, teacher, BATCH["labels"], temperature=1.0, chunk_rows=4)
    dists = torch.distributions
    expected = dists.kl_divergence(dists.Categorical(logits=t), dists.Categorical(logits=s)).mean()
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(got, hand_kl(t, s).mean(), atol=1e-5)
    assert not torch.allclose(got, hand_kl(s, t).mean(), atol=1e-2)  # not the reverse KL


def test_temperature_softens_both_sides_and_scales_by_t_squared():
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(2, 6, 40, generator=g) * 3, torch.randn(2, 6, 40, generator=g) * 3
    mask = BATCH["labels"][:, 1:] != -100
    expected = 4 * hand_kl(teacher[:, :-1][mask], student[:, :-1][mask], temperature=2.0).mean()
    got = forward_kl(student, teacher, BATCH["labels"], temperature=2.0, chunk_rows=3)
    assert torch.allclose(got, expected, atol=1e-5)


def test_prompt_padding_and_last_positions_do_not_count():
    g = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(2, 6, 40, generator=g), torch.randn(2, 6, 40, generator=g)
    ignored = torch.ones(2, 6, dtype=torch.bool)
    ignored[:, :-1] = BATCH["labels"][:, 1:] == -100  # plus the last position, which predicts nothing
    changed = student.clone()
    changed[ignored] += torch.randn(int(ignored.sum()), 40, generator=g) * 10
    kd = forward_kl(student, teacher, BATCH["labels"], 1.0, 8)
    assert torch.equal(kd, forward_kl(changed, teacher, BATCH["labels"], 1.0, 8))
    assert forward_kl(student, teacher, torch.full_like(BATCH["labels"], -100), 1.0, 8) == 0


@pytest.mark.parametrize("chunk_rows", [1, 2, 5, 100])
def test_chunks_change_neither_value_nor_gradient_and_teacher_gets_none(chunk_rows):
    g = torch.Generator().manual_seed(3)
    student = (torch.randn(2, 6, 40, generator=g) * 2).requires_grad_(True)
    teacher = (torch.randn(2, 6, 40, generator=g) * 2).requires_grad_(True)
    kd = forward_kl(student, teacher, BATCH["labels"], 2.0, chunk_rows)
    kd.backward()
    ref_student = student.detach().clone().requires_grad_(True)
    mask = BATCH["labels"][:, 1:] != -100
    ref = 4 * hand_kl(teacher.detach()[:, :-1][mask], ref_student[:, :-1][mask], 2.0).mean()
    ref.backward()
    assert torch.allclose(kd, ref, atol=1e-5)
    assert torch.allclose(student.grad, ref_student.grad, atol=1e-6)
    assert teacher.grad is None


def test_training_loss_adds_alpha_kd_zero_at_the_start_and_trains_only_the_adapter():
    model, lwf = lora_lm(), LwF(LwfConfig(alpha=0.5, temperature=2.0, vocab_chunk=3))
    start_stage(lwf, model)
    model.eval()  # no dropout: the student is exactly the teacher
    outputs = model(**BATCH)
    total, logged = lwf.training_loss(outputs.loss, BATCH, model, outputs)
    assert abs(float(logged["lwf_kd"])) < 1e-6 and torch.allclose(total, outputs.loss, atol=1e-6)

    perturb(model)
    model.train()
    outputs = model(**BATCH)
    total, logged = lwf.training_loss(outputs.loss, BATCH, model, outputs)
    assert logged["lwf_kd"] > 0 and not logged["lwf_kd"].requires_grad
    assert torch.allclose(total, outputs.loss + 0.5 * logged["lwf_kd"])
    assert torch.allclose(logged["lwf_ratio"], 0.5 * logged["lwf_kd"] / outputs.loss)
    total.backward()  # the swap must not have disturbed the student's graph
    for name, p in model.named_parameters():
        assert (p.grad is not None) == ("lora_" in name)


def test_state_dict_round_trip_restores_the_teacher():
    model, lwf = lora_lm(), LwF(LwfConfig())
    perturb(model, seed=1)
    start_stage(lwf, model)
    expected = lwf.teacher_logits(model, BATCH)
    perturb(model, seed=2)
    resumed = LwF(LwfConfig())
    resumed.load_state_dict(lwf.state_dict())
    assert torch.equal(resumed.teacher_logits(model, BATCH), expected)
    assert resumed.teacher_bytes == lwf.teacher_bytes


def test_without_before_stage_the_first_step_fixes_the_teacher():
    model, lwf = lora_lm().eval(), LwF(LwfConfig())
    perturb(model)
    outputs = model(**BATCH)
    _, logged = lwf.training_loss(outputs.loss, BATCH, model, outputs)
    assert abs(float(logged["lwf_kd"])) < 1e-6 and lwf.teacher_bytes > 0


def test_no_teacher_in_the_first_stage_of_a_model_trained_from_scratch():
    model = tiny_lm().train()
    lwf = LwF(LwfConfig())
    lwf.before_stage(StageContext(index=1, name="s1", model=model, datamodule=None, task=None, pretrained=False))
    loss = torch.tensor(2.0, requires_grad=True)
    batch = {"input_ids": torch.tensor([[1, 5, 6, 7]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
             "labels": torch.tensor([[-100, -100, 6, 7]])}
    out, extras = lwf.training_loss(loss, batch, model, model(input_ids=batch["input_ids"]))
    assert out is loss and extras == {} and lwf.teacher_bytes == 0
    lwf.before_stage(StageContext(index=2, name="s2", model=model, datamodule=None, task=None, pretrained=False))
    assert lwf.teacher_bytes > 0  # from stage 2 on, the previous stage's model is the teacher


def test_under_ddp_the_distillation_term_is_weighted_like_the_task_loss():
    """A rank's term is its share of the global batch's per-token mean: times the batch's token_weight
    (global_token_weight's factor, which the module also applies to the task loss)."""
    model, lwf = lora_lm().eval(), LwF(LwfConfig(alpha=1.0))
    start_stage(lwf, model)
    perturb(model)
    outputs = model(**{k: BATCH[k] for k in ("input_ids", "attention_mask")})
    zero = torch.tensor(0.0)
    one_process, _ = lwf.training_loss(zero, dict(BATCH), model, outputs)
    weighted, extra = lwf.training_loss(zero, {**BATCH, "token_weight": torch.tensor(0.25)}, model, outputs)
    assert float(one_process) > 0 and torch.isclose(weighted, 0.25 * one_process)
    assert torch.isclose(extra["lwf_kd"], 0.25 * one_process)
