"""No credential reaches what ftexp writes or sends: results.json, the saved configs, logs, the console, W&B."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest

from tests.helpers.cli import compose_and_run
from tests.helpers.fake_secrets import SECRET, URL, WANDB_KEY


def test_secrets_never_reach_results_or_the_tracker(tiny_overrides, monkeypatch):
    monkeypatch.setenv("FTEXP_TEST_TOKEN", SECRET)  # a secret-looking name, read by the config
    monkeypatch.setenv("FTEXP_TEST_URL", URL)  # any name: a value read with ${oc.env:...} is a secret
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)
    seen = {}

    class Spy:  # what a tracker is given to store
        location, lightning = None, None

        def __init__(self, cfg):
            seen["logger"] = repr(cfg)

        def start(self, run_dir, config, identity):
            seen["config"], seen["identity"], seen["argv"] = json.dumps(config), repr(identity), list(sys.argv)

        def __getattr__(self, name):
            return lambda *a, **k: None

    monkeypatch.setattr("ftexp.job.build", Spy)
    monkeypatch.setattr(sys, "argv", ["ftexp", "tags=[x-" + WANDB_KEY + "]"])  # as W&B would record it
    overrides = [*tiny_overrides, "tags=[${oc.env:FTEXP_TEST_TOKEN},x-" + WANDB_KEY + ",${oc.env:FTEXP_TEST_URL}]",
                 "logger=wandb", "logger.group=${oc.env:FTEXP_TEST_URL}"]
    cfg, _ = compose_and_run(overrides)
    assert sys.argv[1] == "tags=[x-" + WANDB_KEY + "]"  # put back: DDP starts the other ranks from it
    text = (Path(cfg.output_dir) / "results.json").read_text()
    for secret in (SECRET, WANDB_KEY, URL):
        assert secret not in text and not any(secret in seen[k] for k in ("config", "identity", "argv", "logger"))
    assert json.loads(text)["config"]["tags"] == ["<redacted>", "x-<redacted>", "<redacted>"]
    assert "group='<redacted>'" in seen["logger"]


def test_log_records_and_saved_config_files_are_scrubbed(tmp_path):
    from ftexp.utils.secrets import RedactingFilter, referenced_secrets, scrub_files, secret_values

    env = {"HF_TOKEN": "hf_abcdefgh", "DB_PASSWORD_FILE_X": "pw-123456", "PATH": "/usr/bin", "MY_KEY": "k",
           "FTEXP_DATA_DIR": "/data/ftexp"}
    secrets = secret_values(env)
    assert secrets == ["hf_abcdefgh", "pw-123456"]  # "k" is too short to be worth hiding; PATH is no secret
    # read by the config, any variable's value is one; ftexp's own path settings are not
    found = referenced_secrets({"a": "${oc.env:HF_TOKEN}", "b": ["${oc.env:PATH}", "${oc.env:FTEXP_DATA_DIR}"]}, env)
    assert sorted(found) == ["/usr/bin", "hf_abcdefgh"]
    record = logging.LogRecord("x", logging.INFO, "f", 1, "token %s in use", ("hf_abcdefgh",), None)
    RedactingFilter(secrets).filter(record)
    assert record.getMessage() == "token <redacted> in use"
    (tmp_path / "overrides.yaml").write_text("- logger.api_key=pw-123456\n")
    scrub_files(tmp_path, secrets)
    assert (tmp_path / "overrides.yaml").read_text() == "- logger.api_key=<redacted>\n"


def test_every_log_record_is_redacted_whatever_handlers_come_later(monkeypatch, request):
    """Hydra replaces the root handlers when it starts; its launcher logs the job line on a child logger."""
    import io

    from ftexp.utils import secrets

    monkeypatch.setattr(secrets, "_all_records", secrets.RedactingFilter([]))
    request.addfinalizer(lambda factory=logging.getLogRecordFactory(): logging.setLogRecordFactory(factory))
    secrets.redact_all_log_records([SECRET])
    stream = io.StringIO()
    handler, hydra_log = logging.StreamHandler(stream), logging.getLogger("hydra")
    hydra_log.addHandler(handler)  # a handler that came after, with no filter of its own
    request.addfinalizer(lambda: hydra_log.removeHandler(handler))
    logging.getLogger("hydra._internal.core_plugins.basic_launcher").warning("\t#0 : tags=[%s]", SECRET)
    assert stream.getvalue() == "\t#0 : tags=[<redacted>]\n"


def test_a_preflight_error_does_not_echo_a_secret():
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "ftexp", f"logger.gruop=x-{SECRET}"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "MY_API_TOKEN": SECRET})
    assert proc.returncode == 2
    assert "ftexp: error: override 'logger.gruop=x-<redacted>'" in proc.stderr and SECRET not in proc.stderr


@pytest.mark.parametrize("override,words", [
    ("seed=${oc.env:FTEXP_TEST_DB}", "the value it reads from the environment cannot be used here"),
    ("tags=[${oc.env:FTEXP_TEST_UNSET}]", "tags.0=${oc.env:FTEXP_TEST_UNSET}: the environment variable is not set"),
])
def test_an_environment_value_a_key_cannot_take_is_refused_without_showing_it(override, words, monkeypatch, capsys):
    """OmegaConf's own error (after Hydra starts) would print the value, whatever the variable's name."""
    from ftexp.cli import main

    monkeypatch.setenv("FTEXP_TEST_DB", f"postgres://user:{SECRET}@db/x")
    monkeypatch.delenv("FTEXP_TEST_UNSET", raising=False)
    with pytest.raises(SystemExit) as info:
        main([override])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"override '{override}'" in err and words in err, err
    assert SECRET not in err and "Traceback" not in err


def test_a_command_line_is_redacted_only_while_wandb_records_it(monkeypatch):
    from ftexp.utils.secrets import redacted_argv

    monkeypatch.setattr(sys, "argv", ["ftexp", f"tags=[{SECRET}]"])
    with redacted_argv([SECRET]):
        assert sys.argv == ["ftexp", "tags=[<redacted>]"]
    assert sys.argv == ["ftexp", f"tags=[{SECRET}]"]
