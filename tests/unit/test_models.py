"""Models: the tiny default, its cached tokenizer, LoRA/full adapters, hub-loading errors."""

from __future__ import annotations

import os

import pytest
import torch

from ftexp.config.preflight import compose_config
from ftexp.models.base import ModelLoadError, count_parameters
from ftexp.models.tokenizer import bpe_tokenizer
from ftexp.utils.build import BuildError, build, import_target, typed

TEXTS = [f"Query: where is my card number {i}?\nIntent: card_arrival" for i in range(50)]


def test_tokenizer_is_cached_by_content(tmp_path):
    a = bpe_tokenizer(TEXTS, 300, tmp_path)
    assert a.cache_info["reused"] is False
    folders = [p for p in (tmp_path / "tokenizers").iterdir() if p.is_dir()]  # (and its lock file)
    assert len(folders) == 1
    stamp = os.stat(folders[0] / "tokenizer.json").st_mtime_ns
    b = bpe_tokenizer(TEXTS, 300, tmp_path)
    assert b.cache_info == {"path": str(folders[0]), "reused": True}
    assert os.stat(folders[0] / "tokenizer.json").st_mtime_ns == stamp  # reused, not retrained
    assert a("card_arrival")["input_ids"] == b("card_arrival")["input_ids"]
    bpe_tokenizer(TEXTS + ["something else"], 300, tmp_path)
    assert len([p for p in (tmp_path / "tokenizers").iterdir() if p.is_dir()]) == 2  # other texts, other tokenizer


def test_tokenizer_keeps_snake_case_labels_whole_and_adds_bos(tmp_path):
    tok = bpe_tokenizer(TEXTS, 300, tmp_path)
    ids = tok(" card_arrival", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["Ġcard_arrival"]
    assert tok("hello")["input_ids"][0] == tok.bos_token_id
    assert tok.decode(tok("where is my card?", add_special_tokens=False)["input_ids"]) == "where is my card?"


def test_default_tiny_model_has_one_to_two_million_parameters(tmp_path):
    cfg = compose_config([])
    source = build(cfg.model)
    tok = bpe_tokenizer(TEXTS * 40, cfg.model.vocab_size, tmp_path)
    # The real vocabulary is trained on Banking77 and fills vocab_size; emulate its size.
    tok.add_tokens([f"<extra{i}>" for i in range(cfg.model.vocab_size - len(tok))])
    model = source.load_model(tok)
    n = count_parameters(model)["total"]
    assert 1_000_000 <= n <= 2_000_000, n
    assert type(model).__name__ == "MistralForCausalLM"


def test_tiny_init_is_seeded_by_init_seed(tmp_path):
    tok = bpe_tokenizer(TEXTS, 300, tmp_path)
    cfg = compose_config(["model.hidden_size=32", "model.intermediate_size=64", "model.init_seed=7"])
    a = build(cfg.model).load_model(tok)
    torch.manual_seed(123)  # the global stream does not matter once init_seed is set
    b = build(cfg.model).load_model(tok)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def small_model(tmp_path, peft="full"):
    tok = bpe_tokenizer(TEXTS, 300, tmp_path)
    cfg = compose_config([f"peft={peft}", "model.hidden_size=32", "model.intermediate_size=64",
                          "model.num_hidden_layers=1", "model.num_attention_heads=2", "model.num_key_value_heads=1"])
    model = build(cfg.model).load_model(tok)
    return cfg, tok, build(cfg.peft).apply(model, typed(cfg.model))


def test_lora_trains_adapters_only_and_saves_in_peft_format(tmp_path):
    from peft import PeftModel

    cfg, tok, model = small_model(tmp_path, "lora")
    counts = count_parameters(model)
    assert 0 < counts["trainable"] < counts["total"] / 2
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():  # make the adapter non-trivial (B starts at zero)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    folder = build(cfg.peft).save(model, tok, tmp_path / "run")
    assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()

    base = build(cfg.model).load_model(tok)
    base.load_state_dict(model.get_base_model().state_dict(), strict=False)  # same frozen base weights
    loaded = PeftModel.from_pretrained(base, str(folder))
    ids = torch.tensor([tok("where is my card?")["input_ids"]])
    model.eval(), loaded.eval()
    assert torch.allclose(model(input_ids=ids).logits, loaded(input_ids=ids).logits, atol=1e-5)


def test_full_finetune_saves_a_loadable_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg, tok, model = small_model(tmp_path, "full")
    assert count_parameters(model)["trainable"] == count_parameters(model)["total"]
    folder = build(cfg.peft).save(model, tok, tmp_path / "run")
    again = AutoModelForCausalLM.from_pretrained(folder)
    tok2 = AutoTokenizer.from_pretrained(folder)
    ids = torch.tensor([tok2("where is my card?")["input_ids"]])
    model.eval()
    assert torch.allclose(model(input_ids=ids).logits, again(input_ids=ids).logits, atol=1e-6)


def test_missing_local_weights_say_how_to_fix(tmp_path):
    cfg = compose_config(["model=mistral7b", f"model.path={tmp_path / 'nowhere'}"])
    with pytest.raises(ModelLoadError, match=r"model.path=.*nowhere.*is not a folder"):
        build(cfg.model).load_tokenizer(lambda: [], tmp_path)


def test_unreachable_hub_model_points_at_model_path(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never touch the network
    cfg = compose_config(["model=smollm2_135m", "model.hub_id=ftexp-test/does-not-exist"])
    with pytest.raises(ModelLoadError) as info:
        build(cfg.model).load_tokenizer(lambda: [], tmp_path)
    assert "model.path=<folder>" in str(info.value) and "ftexp-test/does-not-exist" in str(info.value)


def test_build_refuses_targets_outside_ftexp():
    with pytest.raises(BuildError, match="not allowed"):
        import_target("os.system")
    with pytest.raises(BuildError, match="cannot be imported"):
        import_target("ftexp.models.nope.Nothing")


def test_a_local_model_folder_trains_and_trust_remote_code_is_said_aloud(tmp_path, data_dir, cache_dir, caplog):
    """A hub-model config pointed at a local folder (what users without network do) runs a whole job;
    trust_remote_code is off unless the run sets it, and a run that sets it warns and records it."""
    import json

    from ftexp.job import run_job

    cfg, tok, model = small_model(tmp_path, "full")
    folder = build(cfg.peft).save(model, tok, tmp_path / "saved")
    base = ["model=smollm2_135m", f"model.path={folder}", "peft=full", "model.dtype=float32", "model.max_length=64",
            "data.n_train=40", "data.n_test=20", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
            "logger=none", f"data_dir={data_dir}", f"cache_dir={cache_dir}"]
    assert compose_config(base).model.trust_remote_code is False
    with caplog.at_level("WARNING", logger="ftexp.models.hub"):
        run_job(compose_config([*base, "model.trust_remote_code=true", f"output_dir={tmp_path / 'run'}"]))
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["status"] == "completed" and res["model"]["trust_remote_code"] is True
    assert any("trust_remote_code=true" in r.getMessage() and str(folder) in r.getMessage() for r in caplog.records)
