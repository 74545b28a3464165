"""EWC: the per-sample Fisher against a plain autograd loop, the penalty and its gradient, anchors,
modes, memory; the gradient term in a training step against the penalty in the loss."""

from __future__ import annotations

import copy
import random
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from ftexp.config.preflight import compose_config
from ftexp.config.schema import EwcConfig
from ftexp.data.datamodule import Batching, FineTuneDataModule, pad_batch
from ftexp.mitigation.base import Mitigation, StageContext
from ftexp.mitigation.ewc import EWC, trainable_parameters
from ftexp.mitigation.fisher import per_sample_fisher
from ftexp.training.module import FineTuneModule, StepOptions, completion_loss
from tests.helpers.models import tiny_lm

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


def reference_penalty(mitigation, model):
    """``lambda/2 * sum F (theta - anchor)^2`` with autograd, as EWC once added it to the loss."""
    current = dict(model.named_parameters())
    return mitigation.weight / 2 * sum((f * (current[n].to(f.dtype) - anchor[n].to(f.dtype)).square()).sum()
                                       for fisher, anchor in mitigation.terms for n, f in fisher.items())


def apply_gradient_term(mitigation, model, loss=None, logged=True):
    """The term EWC adds to zero gradients, by parameter name, and its logs (``loss``: the step's task loss)."""
    params = dict(model.named_parameters())
    grads = {}

    def gradients_of(names):
        return [grads.setdefault(n, torch.zeros_like(params[n])) for n in names]

    if loss is not None:
        mitigation.training_loss(loss, {}, model)
    with torch.no_grad():
        logs = mitigation.gradient_term(model, gradients_of, logged)
    return grads, logs


def nudge(model, scale=0.01, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=gen).to(p.dtype))


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
    assert apply_gradient_term(mitigation, model, loss) == ({}, {})  # nothing consolidated yet
    mitigation.after_stage(stage(model, rows))
    grads, logs = apply_gradient_term(mitigation, model, loss)
    assert logs["ewc_penalty"] == 0 and not any(g.any() for g in grads.values())
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    completion_loss(model, batch).backward()
    optimiser.step()
    loss = completion_loss(model, batch)
    same, extra = mitigation.training_loss(loss, batch, model)
    assert same is loss and extra == {}  # the penalty goes into the gradients, not the loss
    _, logs = apply_gradient_term(mitigation, model)
    assert logs["ewc_penalty"] > 0 and torch.isclose(logs["ewc_ratio"], logs["ewc_penalty"] / loss.detach())
    assert torch.isclose(logs["ewc_penalty"], reference_penalty(mitigation, model).detach())


@pytest.mark.parametrize("mode", ["online", "separate"])
def test_gradient_term_is_the_gradient_of_the_penalty_added_to_what_is_there(mode):
    model = tiny_lm().double()
    rows = make_rows(6)
    mitigation = ewc(mode=mode, gamma=0.5)
    for index in (1, 2):
        mitigation.after_stage(stage(model, rows, index))
        nudge(model, seed=index)
    assert len(mitigation.terms) == (2 if mode == "separate" else 1)
    params = dict(model.named_parameters())
    want = dict(zip(params, torch.autograd.grad(reference_penalty(mitigation, model), list(params.values()))))
    got, logs = apply_gradient_term(mitigation, model, loss=torch.tensor(2.0))
    assert_close(got, want, atol=1e-12)
    assert any(g.abs().max() > 1e-3 for g in got.values())
    assert torch.isclose(logs["ewc_penalty"], reference_penalty(mitigation, model).detach())
    assert torch.isclose(logs["ewc_ratio"], logs["ewc_penalty"] / 2)
    start = {n: torch.randn_like(p) for n, p in params.items()}  # the task's gradients: the term adds to them
    held = {n: g.clone() for n, g in start.items()}
    with torch.no_grad():
        assert mitigation.gradient_term(model, lambda names: [held[n] for n in names], logged=False) == {}
    assert_close(held, {n: start[n] + want[n] for n in params}, atol=1e-12)  # on steps that log nothing too


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

    current = dict(model.named_parameters())
    expected = 5.0 * sum((f[n] * (current[n] - a[n]) ** 2).sum() for f, a in separate.terms for n in f)
    assert torch.isclose(apply_gradient_term(separate, model)[1]["ewc_penalty"], expected.detach())


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
    (got, got_logs), (want, want_logs) = (apply_gradient_term(m, model) for m in (restored, mitigation))
    assert want_logs["ewc_penalty"] > 0 and got_logs["ewc_penalty"] == want_logs["ewc_penalty"]
    assert_close(got, want, atol=0)


# ------------------------------------------------------------------ the gradient term in a training step

class PenaltyInTheLoss(EWC):
    """The reference: EWC as it was, the penalty added to each micro-batch's loss and differentiated by
    autograd (Lightning divides each micro-batch's loss by accumulate_grad_batches: a step gets it once)."""

    def training_loss(self, loss, batch, model, outputs=None):
        return loss + reference_penalty(self, model), {}

    def gradient_term(self, model, gradients_of, logged=True):
        return {}


class Recorded(FineTuneModule):
    """The module, recording the gradients its first optimizer step takes: right after clipping."""

    stepped = None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        if self.stepped is None:
            self.stepped = stepped_gradients(self.model, optimizer, pending_loss_scale(self.trainer, optimizer))


def stepped_gradients(model, optimizer, loss_scale=1.0):
    """By parameter name, the gradient the optimizer is about to step with, unscaled: the parameter's, or
    under master weights its copy's (the compiled step's maybe still the model's, times clipping's factor)."""
    from ftexp.training.master_weights import MasterWeightAdamW

    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not isinstance(optimizer, MasterWeightAdamW):
        return {n: p.grad / loss_scale for n, p in trainable.items()}
    factor = optimizer.grad_factor if optimizer.compiled and optimizer.grad_factor is not None else 1.0
    pending = {id(p): g.float() * factor for p, _, g in optimizer._pending()}
    return {n: pending[id(p)] for n, p in trainable.items()}


def pending_loss_scale(trainer, optimizer):
    """fp16's loss scale where the gradients still carry it (a fused step unscales them itself), else 1."""
    from torch.amp.grad_scaler import OptState

    scaler = getattr(trainer.precision_plugin, "scaler", None)
    if scaler is None or scaler._per_optimizer_states[id(optimizer)]["stage"] is not OptState.READY:
        return 1.0
    return scaler.get_scale()


def one_step(model, mitigation, accumulate=2, clip=None, precision="32-true", implementation="auto", **step):
    """One optimizer step of the training module over ``accumulate`` micro-batches of 4 rows (``step``: the
    module's StepOptions): the module (with the gradients stepped) and the trainer."""
    pl.seed_everything(0, verbose=False)
    rows = make_rows(4 * accumulate, seed=5)
    dm = FineTuneDataModule(rows, rows[:4], Batching(pad_id=PAD, batch_size=4, seed=0, group_by_length=False))
    optim = compose_config(["optim.warmup_ratio=0", f"optim.implementation={implementation}"]).optim
    module = Recorded(model, optim, lr=1e-3, mitigation=mitigation, step=StepOptions(**step))
    precision = {"plugins": [fp16_on_cpu()]} if precision == "16-mixed" else {"precision": precision}
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         accumulate_grad_batches=accumulate, gradient_clip_val=clip, log_every_n_steps=1, **precision)
    trainer.fit(module, datamodule=dm)
    return module, trainer


def fp16_on_cpu():
    """16-mixed with its loss scaling (Lightning would turn precision="16-mixed" into bf16 on a CPU)."""
    from pytorch_lightning.plugins.precision import MixedPrecision

    return MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**12))


def lora_lm():
    from peft import LoraConfig, get_peft_model

    return get_peft_model(tiny_lm(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))


def bf16_lm():
    return tiny_lm().to(torch.bfloat16)


def max_difference(a, b):
    """The largest difference between two sets of gradients, relative to the largest entry."""
    top = max(float(t.abs().max()) for t in b.values())
    return max(float((a[n].float() - b[n].float()).abs().max()) for n in b) / top


def assert_same_update(model, reference, grads, tolerance):
    """The weights after the step agree, except where the gradient is within the tolerance of zero: AdamW's
    first step is about ``lr * sign(gradient)`` and there the sign is a rounding's."""
    top = max(float(g.abs().max()) for g in grads.values())
    theirs = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        clear = grads[name].abs() > tolerance * top if name in grads else torch.ones_like(p, dtype=torch.bool)
        assert torch.allclose(p.float()[clear], theirs[name].float()[clear], rtol=0, atol=1e-5), name


MASTER = {"precision": "bf16-true", "master_weights": True}
CASES = {  # model, lambda, clip (biting), tolerance (relative to the largest gradient), step arguments
    "full": (tiny_lm, 300.0, 0.3, 1e-5, {}),
    "lora": (lora_lm, 3000.0, 0.03, 1e-5, {}),
    # bf16: the reference's penalty gradient is rounded to bf16 and summed with the task's in bf16
    "master-weights": (bf16_lm, 300.0, 0.3, 5e-3, MASTER),
    "master-weights-compiled": (bf16_lm, 300.0, 0.3, 5e-3, {**MASTER, "implementation": "compiled", "accumulate": 1}),
    # fp16 with clipping: AdamW is not fused (see adamw_kernels), Lightning unscales before the hook
    "fp16-clipped": (tiny_lm, 300.0, 0.3, 1e-5, {"precision": "16-mixed"}),
    # without: fused AdamW unscales in its step, the gradients still carry the loss scale at the hook
    "fp16-fused": (tiny_lm, 300.0, None, 1e-5, {"precision": "16-mixed"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_step_with_the_gradient_term_is_the_step_with_the_penalty_in_the_loss(case):
    """Two micro-batches (compiled master weights: one, whose gradients the step would cast itself) and
    clipping that bites (fp16-fused: none, Lightning cannot clip for a fused AdamW): the same gradients
    reach the optimizer, so the same weights come out. The term lands once per step, not per micro-batch,
    on what the optimizer steps with, unscaled, before clipping scales the sum: a step without it is far
    from both."""
    make_model, weight, clip, tolerance, args = CASES[case]
    model = make_model()
    nudge(model, seed=2)  # LoRA: B leaves zero, so the Fisher of A is not
    mitigation = ewc(**{"lambda": weight})
    mitigation.after_stage(stage(model, make_rows(8)))
    nudge(model, seed=3)
    reference = PenaltyInTheLoss(mitigation.cfg)
    reference.load_state_dict(copy.deepcopy(mitigation.state_dict()))
    penalty = float(reference_penalty(mitigation, model).detach())

    runs = {name: copy.deepcopy(model) for name in ("term", "loss", "none")}
    (ours, trainer), (theirs, _), (plain, _) = (
        one_step(runs[name], m, clip=clip, **args)
        for name, m in (("term", mitigation), ("loss", reference), ("none", None)))
    if case.startswith("fp16"):  # fused: the gradients carry the loss scale when the term comes
        assert bool(trainer.optimizers[0].defaults.get("fused")) == (case == "fp16-fused")
    norm = torch.linalg.vector_norm(torch.stack([g.float().norm() for g in theirs.stepped.values()]))
    assert clip is None or float(norm) == pytest.approx(clip, rel=1e-3)  # it bites: the order of term and clip shows
    assert max_difference(ours.stepped, theirs.stepped) < tolerance
    assert max_difference(plain.stepped, theirs.stepped) > 0.2  # the term is a good part of the gradient
    assert_same_update(runs["term"], runs["loss"], theirs.stepped, tolerance)
    assert not all(torch.equal(a, b) for a, b in zip(runs["term"].parameters(), model.parameters()))  # it stepped
    logged = trainer.callback_metrics
    assert float(logged["mitigation/ewc_penalty"]) == pytest.approx(penalty, rel=1e-5)
    assert float(logged["mitigation/ewc_ratio"]) == pytest.approx(penalty / float(logged["train/loss"]), rel=1e-5)


def test_the_gradient_term_runs_once_per_optimizer_step_between_the_last_backward_and_clipping():
    """Three micro-batches a step, two steps: the hook sees every backward of its step, clipping and the
    step see its term; autograd is off."""
    events = []

    class Recording(Mitigation):
        def training_loss(self, loss, batch, model, outputs=None):
            events.append("loss")
            return loss, {}

        def gradient_term(self, model, gradients_of, logged=True):
            events.append("term" if not torch.is_grad_enabled() else "term with autograd on")
            return {}

    class Order(pl.Callback):
        def on_after_backward(self, trainer, pl_module):
            events.append("backward")

        def on_train_start(self, trainer, pl_module):
            trainer.optimizers[0].register_step_post_hook(lambda *_: events.append("step"))

    class Module(FineTuneModule):
        def configure_gradient_clipping(self, *args, **kwargs):
            events.append("clip")
            super().configure_gradient_clipping(*args, **kwargs)

    pl.seed_everything(0, verbose=False)
    rows = make_rows(12, seed=5)
    dm = FineTuneDataModule(rows, rows[:4], Batching(pad_id=PAD, batch_size=2, seed=0, group_by_length=False))
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         accumulate_grad_batches=3, gradient_clip_val=1.0, callbacks=[Order()])
    trainer.fit(Module(tiny_lm(), compose_config([]).optim, lr=1e-3, mitigation=Recording()), datamodule=dm)
    assert events == (["loss", "backward"] * 3 + ["term", "clip", "step"]) * 2


def test_fisher_chunks_bounded_by_gradient_size_give_the_same_fisher(monkeypatch):
    """Chunks of one sample (the per-sample gradients of a full fine-tune bound them) equal one vmap."""
    import ftexp.mitigation.fisher as fisher

    model, rows = tiny_lm(), make_rows(6)
    params = trainable_parameters(model)
    whole = per_sample_fisher(model, batches(rows, 6), params)
    monkeypatch.setattr(fisher, "GRADIENTS_PER_CHUNK", 1)
    assert_close(per_sample_fisher(model, batches(rows, 6), params), whole, atol=1e-9)


def test_no_fisher_after_the_last_stage():
    """Nothing trains after the last stage: its Fisher (minutes for a full fine-tune) is not taken."""
    model, rows = tiny_lm(), make_rows(4)
    mitigation = ewc()
    last = stage(model, rows, 2)
    last.last = True
    mitigation.after_stage(last)
    assert mitigation.terms == []
    mitigation.after_stage(stage(model, rows, 1))
    assert len(mitigation.terms) == 1
