"""No credential reaches what ftexp writes or sends: results.json, the saved configs, logs, W&B."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from tests.test_reliability import _job

SECRET, WANDB_KEY, URL = "tok-9f8e7d6c", "wandb-0123456789abcdef", "postgres://ftexp:pw-5a4b3c@db/runs"


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
    cfg, _ = _job(overrides)
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


def test_a_command_line_is_redacted_only_while_wandb_records_it(monkeypatch):
    from ftexp.utils.secrets import redacted_argv

    monkeypatch.setattr(sys, "argv", ["ftexp", f"tags=[{SECRET}]"])
    with redacted_argv([SECRET]):
        assert sys.argv == ["ftexp", "tags=[<redacted>]"]
    assert sys.argv == ["ftexp", f"tags=[{SECRET}]"]
