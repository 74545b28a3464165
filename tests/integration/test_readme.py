"""The README's commands work, and every link between the README and docs/ points to a file.

The commands are read from the README's shell blocks (and from commands written inline, such as the
experiments table). Every `make X` must be a target of the Makefile. Every `python -m ftexp ...` line passes
the pre-flight that the command line runs first (every swept value composed and checked); `--help` and
`--cfg job` lines run in a subprocess; a `$ command` block's output is what the command prints. In the slow
tier each single run is started for real, shortened by overrides appended to it. Commands of other modules
(`python -m ftexp.compare ...`) must exist and accept the flags the README gives them. The pages of docs/
get the pre-flight check too, for the commands that name no placeholder of the reader's own.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

from tests.helpers import REPO, SHORT, TINY, checkout_env

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
GENERATED = {"findings.md"}  # written by ftexp.compare.findings; its links are checked, its commands are its own

# Appended to a README run in the slow tier (after debug=tiny, or debug=short for a model of another kind):
# two optimiser steps per stage on a few examples.
FEW = ["trainer.max_steps=2", "data.n_train=64", "data.n_test=64", "data.n_val=32"]
# A reader's own paths and names, which a test cannot have.
PLACEHOLDER = re.compile(r"<[^>]*>|/my/|myconf|/models/|ratings\.csv")


# ------------------------------------------------------------------------------------ parsing


def shell_blocks(text: str) -> List[str]:
    return re.findall(r"^```(?:bash|sh|shell|console)?\n(.*?)^```", text, re.S | re.M)


def commands(text: str) -> List[str]:
    """Each command of the shell blocks (continuation lines joined, comments dropped) and each command
    written inline (`python -m ...`, `make ...`) outside them."""
    out: List[str] = []
    for block in re.findall(r"^```(?:bash|sh|shell)\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                out.append(shlex.join(words))
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    for span in re.findall(r"`([^`\n]+)`", prose):
        span = re.sub(r"^([A-Z_]+=\S+ )+", "", span)  # WANDB_MODE=online python -m ftexp ...
        if re.match(r"(python -m ftexp|make [a-z])", span):
            try:
                out.append(shlex.join(shlex.split(span)))
            except ValueError:  # prose around a command, not a command
                continue
    return list(dict.fromkeys(out))


def ftexp_commands(text: str) -> List[List[str]]:
    return [shlex.split(c)[3:] for c in commands(text) if re.match(r"python -m ftexp( |$)", c)]


def transcripts(text: str) -> List[Tuple[List[str], str]]:
    """`$ python -m ftexp ...` blocks: the command and what it prints."""
    out = []
    for block in re.findall(r"^```\n(\$ python -m ftexp.*?)^```", text, re.S | re.M):
        first, _, printed = block.partition("\n")
        out.append((shlex.split(first[2:])[3:], printed.strip()))
    return out


def ids(cmds: List[List[str]]) -> List[str]:
    return [" ".join(c) or "(default)" for c in cmds]


def _split(args: List[str]) -> Tuple[List[str], bool, str]:
    """Overrides, multirun, config dir."""
    multirun = any(a in ("-m", "--multirun") for a in args)
    config_dir = ""
    rest: List[str] = []
    it = iter(args)
    for a in it:
        if a in ("-m", "--multirun"):
            continue
        if a in ("--config-dir", "-cd"):
            config_dir = next(it)
            continue
        rest.append(a)
    return rest, multirun, config_dir


def run_ftexp(args: List[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = checkout_env(WANDB_MODE="disabled")
    return subprocess.run([sys.executable, "-m", "ftexp", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout, env=env)


README_TEXT = README.read_text()
README_RUNS = ftexp_commands(README_TEXT)
FAST = [c for c in README_RUNS if "--help" in c or "--cfg" in c]
PREFLIGHT = [c for c in README_RUNS if c not in FAST]
SINGLE_RUNS = [c for c in PREFLIGHT if "-m" not in c and "--multirun" not in c]
DOCS_RUNS = list(dict.fromkeys(
    tuple(c) for page in DOCS if page.name not in GENERATED for c in ftexp_commands(page.read_text())
    if "--help" not in c and "--cfg" not in c and c not in README_RUNS))
TRANSCRIPTS = list({" ".join(args): (page, args, printed) for page in reversed([README, *DOCS])
                    if page.name not in GENERATED for args, printed in transcripts(page.read_text())}.values())


# ------------------------------------------------------------------------------------- checks


def test_the_readme_starts_with_its_two_commands():
    first = shell_blocks(README_TEXT)[0].splitlines()
    assert [shlex.split(line, comments=True) for line in first] == [["make", "demo"], ["make", "test"]]


def test_the_readme_has_commands_to_check():
    assert FAST and SINGLE_RUNS and len(PREFLIGHT) > len(SINGLE_RUNS)  # single runs and sweeps
    assert [] in README_RUNS  # the default run


CHECKED = [README, *[p for p in DOCS if p.name not in GENERATED]]


def test_every_make_target_named_exists():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([\w.-]+)\s*:(?!=)", makefile, re.M))
    for page in CHECKED:
        for command in commands(page.read_text()):
            words = shlex.split(command)
            if words[0] == "make":
                for target in [w for w in words[1:] if "=" not in w]:
                    assert target in targets, f"{page.name}: `{command}`: the Makefile has no target {target}"


@pytest.mark.parametrize("args", FAST, ids=ids(FAST))
def test_help_and_cfg_commands_run(args, tmp_path):
    result = run_ftexp(args, tmp_path, timeout=300)
    assert result.returncode == 0, f"`python -m ftexp {' '.join(args)}` failed:\n{result.stderr[-3000:]}"
    if "--help" in args:
        for group in ("model", "data", "mitigation", "evaluator", "trainer", "experiment", "sweeps"):
            assert f"\n  {group}\n" in result.stdout
    else:
        assert "model:" in result.stdout and "trainer:" in result.stdout


@pytest.mark.parametrize("args", PREFLIGHT, ids=ids(PREFLIGHT))
def test_readme_runs_pass_the_preflight(args):
    from ftexp.config.preflight import ConfigError, check_overrides

    overrides, multirun, config_dir = _split(args)
    try:
        check_overrides(overrides, multirun=multirun, extra_dir=config_dir or None)
    except ConfigError as exc:
        pytest.fail(f"README: `python -m ftexp {' '.join(args)}` no longer works:\n{exc}")


@pytest.mark.parametrize("args", [list(c) for c in DOCS_RUNS], ids=ids([list(c) for c in DOCS_RUNS]))
def test_docs_runs_pass_the_preflight(args):
    from ftexp.config.preflight import ConfigError, check_overrides

    line = " ".join(args)
    if PLACEHOLDER.search(line):
        pytest.skip("names a path or folder of the reader's own")
    if "hydra/launcher=slurm" in line and importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        pytest.skip("needs the slurm extra: pip install 'ftexp[slurm]'")
    overrides, multirun, config_dir = _split(args)
    try:
        check_overrides(overrides, multirun=multirun, extra_dir=config_dir or None)
    except ConfigError as exc:
        pages = [p.name for p in DOCS if tuple(args) in map(tuple, ftexp_commands(p.read_text()))]
        pytest.fail(f"docs/{', docs/'.join(pages)}: `python -m ftexp {line}` no longer works:\n{exc}")


@pytest.mark.parametrize("page, args, printed", TRANSCRIPTS,
                         ids=[f"{p.relative_to(REPO)}: {' '.join(a)}" for p, a, _ in TRANSCRIPTS])
def test_printed_output_is_what_ftexp_prints(page, args, printed, tmp_path):
    result = run_ftexp(args, tmp_path, timeout=300)
    assert (result.stdout + result.stderr).strip() == printed, (
        f"{page.relative_to(REPO)}: `python -m ftexp {' '.join(args)}` now prints:\n{result.stdout}{result.stderr}")


def test_other_modules_exist_and_take_the_flags_given():
    helps = {}
    for page in CHECKED:
        for command in commands(page.read_text()):
            words = shlex.split(command)
            if words[:2] != ["python", "-m"] or not words[2].startswith("ftexp.") or words[2] == "ftexp":
                continue
            module, args = words[2], words[3:]
            assert importlib.util.find_spec(module) is not None, f"{page.name}: `{command}`: no module {module}"
            sub = tuple(args[:1]) if args and re.fullmatch(r"[a-z_]+", args[0]) else ()
            if (module, sub) not in helps:
                helps[module, sub] = subprocess.run([sys.executable, "-m", module, *sub, "--help"], capture_output=True,
                                                    text=True, timeout=300, env=checkout_env(), cwd=REPO)
            result = helps[module, sub]
            assert result.returncode == 0, f"{page.name}: `{command}`: --help failed:\n{result.stderr[-2000:]}"
            for flag in [a for a in args if a.startswith("--")]:
                assert flag in result.stdout, f"{page.name}: `{command}`: {module} no longer takes {flag}"


def anchors(page: Path) -> set:
    """The anchors GitHub gives a page's headings."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.*)$", text, re.M)}


def test_every_docs_link_points_to_a_file():
    broken = []
    for page in [README, *DOCS]:
        text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
                broken.append(f"{page.relative_to(REPO)}: ({target})")
    assert not broken, "links to files or headings that do not exist:\n" + "\n".join(broken)


def test_every_key_named_exists():
    """Config keys written in backticks in prose (`model.train_on_prompt`, `trainer.packing=true`) are keys of
    the settings reference; a key of results.json is written after an arrow (`results.json` → `model.weights`)."""
    from ftexp.config import reference

    keys = set(re.findall(r"^\| `([^`]+)` \|", reference.render(), re.M))

    def known(key: str) -> bool:
        parts = key.split(".")
        if parts[0] == "evaluator" and len(parts) == 3:
            return bool({key, f"evaluator.<option>.{parts[2]}"} & keys)
        if parts[0] == "tasks" and len(parts) > 2:
            return known(".".join(["data", *parts[2:]]))
        return key in keys

    group = re.compile(r"(model|data|trainer|optim|mitigation|peft|logger|evaluator|tasks|report)\.[A-Za-z_][\w.]*")
    unknown = []
    for page in CHECKED:
        text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
        for match in re.finditer(r"`([^`\n]+)`", text):
            if "→" in text[max(0, match.start() - 4):match.start()]:
                continue
            for word in match.group(1).split():
                key = word.split("=")[0].lstrip("+")
                if group.fullmatch(key) and not re.search(r"\.(md|csv|png|json|yaml|py|safetensors)$", key) and not known(key):
                    unknown.append(f"{page.relative_to(REPO)}: `{key}`")
    assert not unknown, "keys that no schema has (docs/settings.md lists them all):\n" + "\n".join(unknown)


def test_every_file_named_exists():
    """Paths of the checkout written in backticks (`bench/packing.py`, `conf/hydra/launcher/slurm_gpu.yaml`)."""
    missing = []
    path = re.compile(r"(src|ftexp|tests|bench|conf|sweeps|docs|constraints)/[\w./-]*[\w/]")
    for page in CHECKED:
        for span in re.findall(r"`([^`\s]+)`", page.read_text()):
            if path.fullmatch(span):
                if not (REPO / span).exists() and not (REPO / "src" / span).exists():
                    missing.append(f"{page.relative_to(REPO)}: `{span}`")
    assert not missing, "files named that do not exist:\n" + "\n".join(missing)


def test_the_readme_links_every_docs_page():
    index = (REPO / "docs" / "README.md").read_text()
    for page in DOCS:
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/README.md does not list {page.name}"
    assert "](docs/findings.md)" in README_TEXT and "](docs/README.md)" in README_TEXT


def test_the_readme_stays_a_quick_start():
    assert len(README_TEXT.splitlines()) <= 160, "the README is a quick start: move reference text to docs/"


@pytest.mark.slow
@pytest.mark.parametrize("args", SINGLE_RUNS, ids=ids(SINGLE_RUNS))
def test_readme_runs_train(args, data_dir, cache_dir, tmp_path):
    """Each single run of the README, shortened: it trains, evaluates and writes a completed results.json."""
    import json

    from ftexp.config.preflight import compose_config

    line = " ".join(args)
    if re.search(r"trainer=(gpu|ddp|fsdp)\b", line):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA device")
    cfg = compose_config(args)
    if cfg.model._target_.endswith("TinyModel"):
        extra = [*TINY, *FEW]
    elif cfg.model.get("gguf") and importlib.util.find_spec(cfg.model.gguf.files[0].package.replace("-", "_")) is None:
        pytest.skip(f"needs the weights' package: {cfg.model.gguf.files[0].package} (make installs it)")
    else:
        extra = [*SHORT, *FEW, "data.n_test=16", "data.n_val=16"]  # a pretrained model scores every label
    extra += [f"tasks.{name}.{key}=64" for name in cfg.get("tasks") or {} for key in ("n_train", "n_test")]
    run_dir = tmp_path / "run"
    result = run_ftexp([*args, *extra, f"data_dir={data_dir}", f"cache_dir={cache_dir}",
                        f"hydra.run.dir={run_dir}"], tmp_path, timeout=1200)
    assert result.returncode == 0, f"`python -m ftexp {line}` failed:\n{result.stderr[-4000:]}"
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "completed" and record["metrics"]
