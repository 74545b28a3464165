"""The end of a run: a few headline metrics, not every metric."""

from __future__ import annotations

from ftexp.tracking.summary import headline, print_summary as _print_summary

FORGETTING = {"test/accuracy": 0.5, "test/macro_f1": 0.4, "test/n": 80, "test/red_team/n": 10,
              "cuad/test/accuracy": 0.3, "general/test/loss": 5.2, "cl/acc": 0.45, "cl/bwt": -0.1,
              "cl/fwt": 0.0, "cl/retention/cuad": 1.0, "train/loss": 4.8, "val/loss": 4.6, "train/tokens_per_s": 1e4}


def test_headline_is_the_primary_task_the_continual_scores_and_the_training_loss():
    assert list(headline(FORGETTING)) == ["test/accuracy", "test/macro_f1", "cl/acc", "cl/bwt", "train/loss"]
    assert list(headline(FORGETTING, objective="val/loss"))[:2] == ["val/loss", "test/accuracy"]
    assert len(headline(FORGETTING, objective="val/loss")) == 6


def test_a_task_without_accuracy_or_loss_shows_its_first_scores():
    metrics = {"test/rougeL": 0.2, "test/exact_match": 0.1, "test/bleu": 0.05, "test/n": 20, "train/loss": 3.0}
    assert list(headline(metrics)) == ["test/rougeL", "test/exact_match", "train/loss"]


def test_the_summary_is_a_few_short_lines(capsys):
    results = {"status": "completed", "wall_time_s": {"total": 12.34}, "metrics": FORGETTING, "run_dir": "/r",
               "logger": {"type": "CSVLogger", "dir": "/r/csv"}}
    _print_summary(results, "val/loss")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "ftexp: completed in 12.3s"
    assert lines[-2:] == ["ftexp: results: /r/results.json", "ftexp: CSVLogger: csv (in the run's folder)"]
    assert len(lines) <= 5 and all(len(line) < 100 for line in lines)
