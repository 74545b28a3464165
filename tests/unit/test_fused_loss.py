"""trainer.fused_loss: the output layer and cross-entropy a chunk of tokens at a time, with the loss and
gradients of each model's own causal-LM loss."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import transformers as tf

from ftexp.config.preflight import ConfigError, check_overrides, compose_config
from ftexp.data.datamodule import pad_batch
from ftexp.data.packing import flatten_batch
from ftexp.errors import FtexpError
from ftexp.training import fused_loss
from ftexp.training.fused_loss import FUSABLE, fused_forward, linear_cross_entropy
from ftexp.training.module import FineTuneModule, StepOptions, forward
from tests.helpers.models import tiny_lm, train_tiny, varied_rows

SHAPE = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2)
ARCHS = {
    "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**SHAPE, tie_word_embeddings=True)),
    "mistral": lambda: tf.MistralForCausalLM(tf.MistralConfig(**SHAPE)),
    "qwen2": lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(**SHAPE)),
    "qwen3": lambda: tf.Qwen3ForCausalLM(tf.Qwen3Config(**SHAPE, head_dim=8)),
    "gpt2": lambda: tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=64)),
    "gemma3_text": lambda: tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**SHAPE, head_dim=8, final_logit_softcapping=None)),
}


def masked_batch(vocab: int = 97):
    """Prompts masked out of the labels, as in ftexp's data, and one example padded on the right."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (3, 20), generator=gen)
    labels = ids.clone()
    labels[:, :12] = -100
    mask = torch.ones_like(ids)
    mask[2, 16:], labels[2, 16:] = 0, -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def grads(model, loss):
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(fused_loss, "CHUNK_ELEMENTS", 97 * 3)  # 3 rows a chunk: many chunks, one short


def test_every_fusable_type_is_covered_here():
    assert set(ARCHS) == set(FUSABLE)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_fused_loss_and_gradients_equal_the_models_own(arch, small_chunks):
    torch.manual_seed(0)
    model = ARCHS[arch]().eval()  # no dropout (GPT-2 has some): the two forwards see the same network
    twin, batch = copy.deepcopy(model), masked_batch()
    own, fused = forward(model, batch).loss, fused_forward(twin, batch).loss
    assert fused_forward(twin, batch).logits is None  # no logits made
    assert math.isclose(float(own), float(fused), rel_tol=1e-6)
    expected, got = grads(model, own), grads(twin, fused)
    assert expected.keys() == got.keys()
    for name, g in expected.items():
        assert torch.allclose(g, got[name], atol=1e-6), name


def test_the_compiled_branch_that_keeps_every_row_masks_the_rows_without_a_target(small_chunks, monkeypatch):
    """Under torch.compile no rows are dropped (static shapes): the masking alone must leave out the
    prompt and padding rows. Eager here, with the compiled branch forced."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    torch.manual_seed(0)
    model = ARCHS["mistral"]().eval()
    twin, batch = copy.deepcopy(model), masked_batch()
    own, fused = forward(model, batch).loss, fused_forward(twin, batch).loss
    assert math.isclose(float(own), float(fused), rel_tol=1e-6)
    expected, got = grads(model, own), grads(twin, fused)
    for name, g in expected.items():
        assert torch.allclose(g, got[name], atol=1e-6), name


def test_in_eager_mode_only_rows_with_a_target_reach_the_output_layer(monkeypatch):
    seen = []
    apply = fused_loss.LinearCrossEntropy.apply
    monkeypatch.setattr(fused_loss.LinearCrossEntropy, "apply",
                        lambda rows, *a: seen.append(len(rows)) or apply(rows, *a))
    batch = masked_batch()
    fused_forward(ARCHS["mistral"](), batch)
    assert seen == [int((batch["labels"][:, 1:] != -100).sum())]  # 20 of the 60 rows


def test_lora_trains_the_adapters_alike_with_the_output_layer_frozen(small_chunks):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(ARCHS["mistral"](), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    for p in model.parameters():  # LoRA's B starts at zero: move it, so that A's gradient is not zero
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.1)
    twin, batch = copy.deepcopy(model), masked_batch()
    expected, got = grads(model, forward(model, batch).loss), grads(twin, fused_forward(twin, batch).loss)
    assert expected and expected.keys() == got.keys() and all("lora" in n for n in got)
    for name, g in expected.items():
        assert torch.allclose(g, got[name], atol=1e-6), name


def test_a_flattened_packed_batch_gives_the_padded_batchs_loss():
    rows = varied_rows(10)
    model = tiny_lm()
    padded = float(fused_forward(model, pad_batch(rows, pad_id=0)).loss)
    flat = float(fused_forward(model, flatten_batch(rows)).loss)
    assert math.isclose(padded, flat, rel_tol=1e-5)


def test_chunked_linear_cross_entropy_under_bf16_autocast_matches_the_upcast_logits():
    torch.manual_seed(0)
    hidden, weight = torch.randn(2, 9, 16, requires_grad=True), torch.randn(50, 16, requires_grad=True)
    labels = torch.randint(0, 50, (2, 9))
    labels[0, :4] = -100
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = linear_cross_entropy(hidden, weight, labels, chunk=4)
        logits = (hidden @ weight.T).float()  # bf16 matmul, upcast: what transformers' loss sees
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 50), labels[:, 1:].reshape(-1))
    assert fused.dtype == torch.float32 and math.isclose(float(fused), float(ref), rel_tol=1e-6)
    for got, expected in zip(torch.autograd.grad(fused, (hidden, weight)), torch.autograd.grad(ref, (hidden, weight))):
        assert got.dtype == expected.dtype == torch.float32
        assert (got - expected).abs().max() <= 1e-2 * expected.abs().max()  # bf16 operands of the gradient matmuls


def test_a_batch_without_targets_gives_zero_loss_and_zero_gradients():
    hidden, weight = torch.randn(2, 5, 8, requires_grad=True), torch.randn(11, 8, requires_grad=True)
    loss = linear_cross_entropy(hidden, weight, torch.full((2, 5), -100))
    loss.backward()
    assert float(loss) == 0.0 and not hidden.grad.any() and not weight.grad.any()


def test_fused_steps_equal_the_plain_ones_through_lightning():
    (plain, plain_module), (fused, fused_module) = train_tiny(fused_loss=False), train_tiny(fused_loss=True)
    assert len(plain) == len(fused) == 6
    assert all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(plain, fused)), (plain, fused)
    for (name, a), b in zip(plain_module.model.named_parameters(), fused_module.model.parameters()):
        assert (a - b).abs().max() < 1e-5, name


def test_a_model_whose_logits_are_not_its_output_layer_alone_is_refused():
    from peft import LoraConfig, get_peft_model

    model = tf.Gemma2ForCausalLM(tf.Gemma2Config(**SHAPE, head_dim=8))  # soft-caps its logits
    with pytest.raises(FtexpError, match="trainer.fused_loss=true.*Gemma2ForCausalLM"):
        FineTuneModule(model, compose_config([]).optim, lr=1e-3, step=StepOptions(fused_loss=True))
    capped = tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**SHAPE, head_dim=8, final_logit_softcapping=30.0))
    with pytest.raises(FtexpError, match="trainer.fused_loss=true.*Gemma3ForCausalLM"):  # a fusable type, capped
        FineTuneModule(capped, compose_config([]).optim, lr=1e-3, step=StepOptions(fused_loss=True))
    adapted_head = get_peft_model(ARCHS["llama"](), LoraConfig(r=2, target_modules=["q_proj", "lm_head"]))
    with pytest.raises(FtexpError, match="no adapter on the output layer"):
        FineTuneModule(adapted_head, compose_config([]).optim, lr=1e-3, step=StepOptions(fused_loss=True))
    # adapters inside the decoder only: fine
    FineTuneModule(get_peft_model(ARCHS["llama"](), LoraConfig(r=2, target_modules=["q_proj"])),
                   compose_config([]).optim, lr=1e-3, step=StepOptions(fused_loss=True))


@pytest.mark.parametrize("override,why", [("mitigation=lwf", "full logits"), ("trainer=fsdp", "FSDP shards"),
                                          ("trainer.precision=16-mixed", "underflow")])
def test_fused_loss_is_refused_beside_what_needs_the_logits_or_shards_the_head(override, why):
    check_overrides([override])
    with pytest.raises(ConfigError, match=f"trainer.fused_loss=True: .*{why}"):
        check_overrides([override, "trainer.fused_loss=true"])


def test_trainer_fused_loss_reaches_the_training_step(tiny_overrides, tmp_path, monkeypatch):
    from ftexp.job import run_job
    from ftexp.training import module

    calls = []
    monkeypatch.setattr(module, "fused_forward", lambda model, batch: calls.append(1) or fused_forward(model, batch))
    run_job(compose_config([*tiny_overrides, "trainer.fused_loss=true", "trainer.max_steps=2", "save_model=false",
                            f"output_dir={tmp_path / 'run'}"]))
    assert len(calls) == 2
