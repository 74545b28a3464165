"""ftexp merge and ftexp generate on runs made in this process: the merged folder loads with plain transformers
and gives base + adapter's logits, generation matches the unmerged model, the card holds the run's facts, and
folders that hold nothing to use are refused in one paragraph."""

from __future__ import annotations

import hashlib
import io
import json
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from ftexp.cli import main as cli_main
from ftexp.models.decoding import Decoding, generate_ids
from ftexp.use.generate import Answerer, converse
from ftexp.use.load import load_any
from ftexp.use.merge import merge
from ftexp.use.prompting import Prompting
from tests.helpers import TINY
from tests.helpers.use import fake_run

PROMPT = "I still have not received my new card"


@pytest.fixture
def overrides(data_dir, cache_dir):
    return [*TINY, f"data_dir={data_dir}", f"cache_dir={cache_dir}"]


@pytest.fixture
def lora_run(tmp_path, overrides):
    run_dir = tmp_path / "run"
    return run_dir, fake_run(run_dir, [*overrides, "peft=lora"])


def _ids(tokenizer):
    return torch.tensor([Prompting("Query: {text}\nIntent:", "text").encode(tokenizer, [PROMPT], [], 8)])


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        cli_main(argv)
    out = capsys.readouterr()
    return exited.value.code, out.out, out.err


def test_the_merged_folder_loads_with_plain_transformers_and_gives_base_plus_adapter_logits(lora_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, made = lora_run
    peft_model = made["model"]
    out = merge(run_dir, tmp_path / "merged")
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "README.md"} \
        <= {p.name for p in out.iterdir()}
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    ids = _ids(tokenizer)
    assert ids.tolist() == _ids(made["tokenizer"]).tolist()
    with torch.no_grad():
        want = peft_model(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        with peft_model.disable_adapter():
            base = peft_model(input_ids=ids).logits
    assert (got - want).abs().max().item() < 1e-5
    assert (base - want).abs().max().item() > 1e-2  # the adapter changes the model: the check above means something
    assert merged.generation_config.eos_token_id == tokenizer.eos_token_id


def test_generate_on_the_run_and_on_the_merged_folder_matches_the_unmerged_model(lora_run, tmp_path, capsys):
    run_dir, made = lora_run
    out = merge(run_dir, tmp_path / "merged")
    prompt = Prompting("Query: {text}\nIntent:", "text", chat=True, max_length=64).encode(made["tokenizer"],
                                                                                         [PROMPT], [], 12)
    new = generate_ids(made["model"], made["tokenizer"], [prompt], Decoding(max_new_tokens=12, batch_size=1))[0]
    want = made["tokenizer"].decode(new, skip_special_tokens=True).strip()
    answers = []
    for folder in (run_dir, out):
        code, stdout, err = _run(["generate", str(folder), "--prompt", PROMPT, "--max-new-tokens", "12"], capsys)
        assert code == 0, err
        answers.append(stdout.strip())
    assert answers == [want, want] and want


def test_sampling_depends_on_the_seed_and_the_prompt_only(lora_run, capsys):
    run_dir, _ = lora_run
    said = []
    for seed in (1, 1, 2):
        code, stdout, err = _run(["generate", str(run_dir), "--prompt", PROMPT, "--temperature", "1.5", "--seed",
                                  str(seed), "--max-new-tokens", "16"], capsys)
        assert code == 0, err
        said.append(stdout)
    assert said[0] == said[1] != said[2]


def test_the_model_card_names_the_data_files_with_their_sha256_and_the_metrics_beside_row_0(lora_run, tmp_path):
    run_dir, made = lora_run
    card = (merge(run_dir, tmp_path / "merged") / "README.md").read_text()
    train = Path(made["results"]["data"]["files"][0]["path"])
    assert str(train) in card and hashlib.sha256(train.read_bytes()).hexdigest() in card
    assert "| metric | row 0 (untrained) | after training |" in card
    assert "| test/accuracy | 0.0125 | 0.6375 |" in card
    assert "peft=lora" in card and "- seed: 0" in card and "| tokens trained on | 11104 |" in card
    assert card.startswith("---\n") and "library_name: transformers" in card


def test_a_full_finetune_is_copied_into_the_same_kind_of_folder(tmp_path, overrides):
    from transformers import AutoModelForCausalLM

    made = fake_run(tmp_path / "run", [*overrides, "peft=full"])
    out = merge(tmp_path / "run", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    ids = _ids(made["tokenizer"])
    with torch.no_grad():
        assert torch.equal(merged(input_ids=ids).logits, made["model"](input_ids=ids).logits)
    assert "full-finetune" in (out / "README.md").read_text()
    assert json.loads((out / "ftexp.json").read_text())["merged_adapter"] is False


def test_a_conversation_answers_each_line_as_a_single_prompt_would(lora_run, tmp_path):
    run_dir, _ = lora_run
    loaded = load_any(run_dir)
    answer = Answerer(loaded, Namespace(raw=False, max_new_tokens=6, temperature=0.0, top_p=1.0, seed=0))
    stdout = io.StringIO()
    converse(answer, io.StringIO("hello there\n\n/reset\nmy card\n/exit\nnever read\n"), stdout)
    assert stdout.getvalue().splitlines() == [answer(["hello there"], []), answer(["my card"], [])]


def test_with_a_chat_template_the_next_turn_holds_the_conversation(lora_run):
    loaded = load_any(lora_run[0])
    tokenizer = loaded.tokenizer
    tokenizer.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
                               "{% if add_generation_prompt %}<assistant>{% endif %}")
    prompting = Prompting("Query: {text}\nIntent:", "text", chat=True, max_length=512)
    text = tokenizer.decode(prompting.encode(tokenizer, ["first", "second"], ["one answer"], 8))
    assert text == "<user>Query: first\nIntent:<assistant>one answer<user>Query: second\nIntent:<assistant>"


def test_prompting_fills_the_templates_text_field_and_refuses_a_template_of_several(overrides):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"model": {"max_length": 64}, "data": {"prompt_template": "Q: {question}\nA:",
                                                                   "question_field": "question"}})
    assert Prompting.of_config(cfg).render("why?") == "Q: why?\nA:"
    cfg.data = {"prompt_template": "", "_target_": "ftexp.data.corpus.CorpusTask", "chat_template": False}
    assert Prompting.of_config(cfg).render("plain text") == "plain text"
    cfg.data = {"prompt_template": "{title}: {body}"}
    with pytest.raises(Exception, match="--raw"):
        Prompting.of_config(cfg)


def test_folders_with_nothing_to_use_are_refused_in_one_paragraph(tmp_path, capsys):
    code, _, err = _run(["merge", str(tmp_path / "absent")], capsys)
    assert code == 1 and "is not a folder" in err and "Traceback" not in err
    code, _, err = _run(["generate", str(tmp_path), "--prompt", "x"], capsys)
    assert code == 1 and "holds no results.json" in err
    run = tmp_path / "nosave"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"status": "completed", "config": {"save_model": False}}))
    code, _, err = _run(["merge", str(run)], capsys)
    assert code == 1 and "saved no weights (save_model=False" in err and len(err.strip().splitlines()) == 1
    (run / "results.json").write_text(json.dumps({"status": "failed", "config": {}, "error": {"message": "boom"}}))
    code, _, err = _run(["generate", str(run), "--prompt", "x"], capsys)
    assert code == 1 and "status is 'failed'" in err and "boom" in err


def test_merge_refuses_to_write_over_a_folder(lora_run, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    code, _, err = _run(["merge", str(lora_run[0]), "--out", str(tmp_path / "taken")], capsys)
    assert code == 1 and "exists" in err and "--overwrite" in err
