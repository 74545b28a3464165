"""python -m ftexp.compare on multirun folders written here with known numbers, and on a fake W&B API."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

import pytest

from ftexp.compare import compare_folder, compare_wandb, read_multirun
from ftexp.compare.select import choose
from ftexp.compare.stats import cells, fmt, pareto_front, summarise, t_quantile
from tests.helpers import REPO
from tests.helpers.multirun import (ACC, LABELS, ROW0_ACC, T_975_2, TWO_SEEDS, ci, results, write_multirun,
                                    write_two_seed_sweep)

PNG = b"\x89PNG\r\n\x1a\n"


def read_table(path: Path) -> List[Dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------ statistics


def test_t_quantile_matches_the_table_and_closed_forms():
    assert t_quantile(0.975, 2) == pytest.approx(T_975_2, rel=1e-9)
    for p in (0.9, 0.95, 0.975, 0.995):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-11)  # Cauchy
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p))), rel=1e-11)
    assert t_quantile(0.975, 10**6) == pytest.approx(1.959963984540054, abs=1e-5)  # -> the normal quantile
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (3, 4, 5, 9, 29, 120):
        assert t_quantile(0.975, df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-9)


def test_summarise_mean_std_ci_and_n1():
    s = summarise([0.70, 0.72, 0.77, None])
    assert (s.n, s.mean) == (3, pytest.approx(0.73))
    assert s.std == pytest.approx(math.sqrt(0.0013))
    assert s.half == pytest.approx(ci([0.70, 0.72, 0.77]), rel=1e-9)
    assert (s.low, s.high) == (pytest.approx(0.73 - s.half), pytest.approx(0.73 + s.half))
    one = summarise([0.5])
    assert (one.n, one.mean, one.std, one.half, one.low) == (1, 0.5, None, None, None)
    assert fmt(one) == "0.5000 (n=1)" and "±" not in fmt(one)
    assert fmt(summarise([])) == "—"
    assert fmt(summarise([0.000123])) == "0.000123 (n=1)"  # a CPU's cost per 1k requests keeps its digits
    assert fmt(s) == f"0.7300 ± {s.half:.4f}"


def test_an_interval_stops_at_the_metric_s_range():
    from ftexp.compare.stats import bounds, paired

    s = summarise([0.90, 0.99], rng=bounds("test/accuracy"))  # t_{0.975, 1} = 12.7: the t interval passes 1
    assert s.mean + s.half > 1 and (s.low, s.high) == (pytest.approx(s.mean - s.half), 1.0) and s.clipped
    assert fmt(s) == f"0.9450 [{s.low:.4f}, 1.000]*"
    assert summarise([0.10, 0.30], rng=bounds("cuad/test/accuracy")).low == 0.0
    assert bounds("review/sample/agreement/cohen_kappa") == (-1.0, 1.0) and bounds("test/loss")[0] == 0.0
    assert bounds("cl/forgetting/banking77") == (-math.inf, math.inf)  # may be a loss's
    assert not summarise([0.70, 0.72, 0.77], rng=bounds("test/accuracy")).clipped
    sweep = read_multirun(write_two_seed_sweep(Path(__import__("tempfile").mkdtemp())))
    low, high = cells(sweep)
    d = paired(high, low, "test/accuracy")  # seed by seed: 0.80 and 0.69
    assert d.seeds == ("0", "1") and d.unpaired == 0 and d.diff.mean == pytest.approx(0.745)
    assert d.diff.std == pytest.approx(summarise([0.80, 0.69]).std) and d.diff.range == (-1.0, 1.0)


def test_pareto_front_on_known_points():
    # (cost, accuracy): lower cost and higher accuracy are better.
    points = [(1.0, 0.60), (2.0, 0.80), (3.0, 0.70), (4.0, 0.90), (2.0, 0.75), (5.0, 0.90), (None, 0.99), (0.5, 0.50)]
    assert pareto_front(points) == [7, 0, 1, 3]  # 3 is dominated by 1; 4 by 1; 5 by 3; 6 has no cost
    assert pareto_front([(1.0, 0.5), (1.0, 0.5)]) == [0, 1]  # equal points are both on the front
    assert pareto_front([]) == []


# ------------------------------------------------------------------------------------ a multirun folder


def test_known_means_cis_failed_and_unreadable(size_sweep):
    report = compare_folder(size_sweep)
    out = size_sweep / "compare"
    assert report == out / "report.md"
    sweep = read_multirun(size_sweep)
    assert sweep.keys == ["data.n_train"]  # logger=none is the same everywhere; seed is the replicate
    assert [j.status for j in sweep.jobs] == ["completed"] * 6 + ["failed", "unreadable"]
    rows = {r["data.n_train"]: r for r in read_table(out / "table.csv")}
    assert list(rows) == ["500", "null"]  # the sweep's order
    for n, accs in ACC.items():
        row, mean, half = rows[n], sum(accs) / 3, ci(accs)
        assert row["n"] == "3" and row["seeds"] == "0 1 2"
        assert float(row["test/accuracy:mean"]) == pytest.approx(mean)
        assert float(row["test/accuracy:ci95_low"]) == pytest.approx(mean - half, rel=1e-9)
        assert float(row["test/accuracy:ci95_high"]) == pytest.approx(mean + half, rel=1e-9)
        assert float(row["test/slice/long/accuracy:mean"]) == pytest.approx(mean - 0.1)
    assert rows["500"]["not_completed"] == "1" and rows["null"]["not_completed"] == "1"
    text = report.read_text()
    assert "how many examples are enough?" in text.lower()  # the sweep file's header, else DESIGN.md's question
    assert f"0.7300 ± {ci(ACC['500']):.4f}" in text and f"{sum(ACC['null']) / 3:.4f} ± {ci(ACC['null']):.4f}" in text
    assert "DataError: CUDA out of memory at step 7" in text
    assert "| 7 | unreadable | data.n_train=null |" in text and "not valid JSON" in text
    assert str(size_sweep / "7") in text
    assert "![learning_curve](learning_curve.png)" in text
    assert (out / "learning_curve.png").read_bytes()[:8] == PNG


def test_a_sweep_resumed_part_way_keeps_its_cells_whole(tmp_path):
    """Jobs run after `resume=true` (or with another logger) carry that override; it steers the
    run, not the result, so it neither becomes a swept key nor splits a cell."""
    jobs = []
    for n, accs in ACC.items():
        for seed, acc in enumerate(accs):
            steer = ["resume=true", "trainer.enable_progress_bar=false", "logger.project=p"] if seed == 2 else []
            jobs.append(results([f"data.n_train={n}", *steer], seed, {"test/accuracy": acc}, ["E2"], "dataset_size"))
    root = write_multirun(tmp_path / "m", jobs, {"data.n_train": "500,null"})
    assert read_multirun(root).keys == ["data.n_train"]
    compare_folder(root)
    rows = read_table(root / "compare" / "table.csv")
    assert [(r["data.n_train"], r["n"], r["seeds"]) for r in rows] == [("500", "3", "0 1 2"), ("null", "3", "0 1 2")]
    assert float(rows[0]["test/accuracy:mean"]) == pytest.approx(sum(ACC["500"]) / 3)


def test_incomplete_and_missing_results_are_listed(tmp_path):
    tags = ["custom"]
    jobs = [results(["lr=1"], 0, {"test/accuracy": 0.5}, tags), results(["lr=2"], 0, {"test/accuracy": 0.6}, tags),
            results(["lr=2"], 1, {}, tags, status="running"), None, "[1, 2]",
            json.dumps({"status": "completed", "metrics": {"test/accuracy": 0.9}, "model": "tiny"})]
    root = write_multirun(tmp_path / "sweep", jobs, {"lr": "1,2"})
    text = compare_folder(root).read_text()
    assert "0.5000 (n=1)" in text and "no results.json" in text and "not an ftexp results file" in text
    assert "| 2 | incomplete | lr=2 |" in text and "| 3 | unreadable | (unknown) |" in text
    assert "| 5 | unreadable | (unknown) |" in text and "malformed (AttributeError" in text
    assert [r["lr"] for r in read_table(root / "compare" / "table.csv")] == ["1", "2"]  # no row for unknown cells
    assert "![generic](generic.png)" in text  # unknown tags and keys: one bar per cell


def test_a_sweep_launched_in_parts_into_one_folder_reads_as_one(tmp_path):
    """Jobs named by their overrides (hydra.sweep.subdir=${hydra.job.override_dirname}): finished ones by
    their results.json, an unfinished one by its .hydra record."""
    root = write_multirun(tmp_path / "sweep", [], {"lr": "2,1"})  # the sweep file's values; the last part's command
    for lr, acc in ((1, 0.5), (2, 0.7)):
        (root / f"lr={lr}").mkdir()
        (root / f"lr={lr}" / "results.json").write_text(json.dumps(results([f"lr={lr}"], 0, {"test/accuracy": acc},
                                                                           ["custom"])))
    (root / "lr=3" / ".hydra").mkdir(parents=True)
    (root / "lr=3" / ".hydra" / "overrides.yaml").write_text("- lr=3\n")
    text = compare_folder(root).read_text()
    assert [r["lr"] for r in read_table(root / "compare" / "table.csv")] == ["2", "1", "3"]  # its order, then the rest
    assert "lr=3" in text and "no results.json" in text
    assert read_multirun(root).command is None  # multirun.yaml holds the last part's command only


def test_the_command_of_a_sweep_keeps_its_config_dir(tmp_path):
    """A sweep run with --config-dir: the report's command has it, as Hydra recorded the search path."""
    root = write_multirun(tmp_path / "sweep", [results(["logger=none"], 0, {"test/accuracy": 0.5}, [])], {})
    text = (root / "multirun.yaml").read_text()
    (root / "multirun.yaml").write_text(text + "  runtime:\n    config_sources:\n"
                                        "    - {path: /work/conf, schema: file, provider: main}\n"
                                        "    - {path: /my configs, schema: file, provider: command-line}\n")
    assert read_multirun(root).command == "python -m ftexp -m --config-dir '/my configs' logger=none seed=0,1,2"


def _draw(tmp_path: Path, name: str, jobs: List[Any], params: Dict[str, str]) -> Path:
    root = write_multirun(tmp_path / name, jobs, params)
    compare_folder(root)
    return root / "compare"


def share_jobs(tags: List[str]) -> List[Dict[str, Any]]:
    return [results([f"data.synthetic.share={s}"], seed, {"test/accuracy": 0.8 - 0.2 * float(s) + 0.01 * seed}, tags)
            for s in ("0.0", "0.5", "0.83") for seed in (0, 1)]


def forgetting_jobs() -> List[Dict[str, Any]]:
    out = []
    for m, f in {"none": 0.78, "ewc": 0.18, "replay": 0.17}.items():
        for seed in (0, 1, 2):
            metrics = {"test/accuracy": 0.85 - f, "cuad/test/accuracy": 0.4, "cl/acc": (0.85 - f + 0.4) / 2,
                       "cl/bwt": -f, "cl/mean_forgetting": f, "cl/forgetting/banking77": f + 0.01 * seed,
                       "cl/retention/banking77": 1 - f, "cl/retention/cuad": 1.0}
            out.append(results([f"mitigation={m}"], seed, metrics, ["E3", "forgetting"], "forgetting"))
    return out


def param_jobs() -> List[Dict[str, Any]]:
    specs = {"tiny": (1.5e6, 0.02, 0.80), "tiny_8m": (8e6, 0.05, 0.85), "smollm2_135m": (1.35e8, 0.04, 0.90)}
    return [results([f"model={m}"], 0, {"test/accuracy": acc, "efficiency/params_total": p,
                                         "efficiency/cost_per_1k_score_batched": cost,
                                         "efficiency/score_b1_p50_ms": p / 1e6}, ["E5", "param_count"])
            for m, (p, cost, acc) in specs.items()]


def review_jobs() -> List[Dict[str, Any]]:
    out = []
    for model, kappa in (("tiny", 0.2), ("tiny_8m", 0.5)):
        for seed in (0, 1):
            review = {"sample": {"n_exported": 20, "correctness": 0.5 + kappa / 2, "agreement": {
                "n": 20, "cohen_kappa": kappa + 0.05 * seed, "agreement_rate": 0.6 + kappa / 2, "n_auto_pass": 12,
                "auto_pass_human_fail_rate": 0.3 - kappa / 2}, "spearman": {"rougeL": {"correctness": 0.4}}},
                "red_team": {"n_exported": 5, "n_rated": 5, "correctness": 0.8}, "ratings_file": "/x/ratings.csv"}
            out.append(results([f"model={model}"], seed, {"test/rougeL": 0.3}, ["E4", "human_review"], review=review))
    return out


def declare(jobs: List[Dict[str, Any]], **report: Any) -> List[Dict[str, Any]]:
    """The jobs as today's runs write them: the experiment's ``report`` node in their config, no E-tags needed."""
    return [{**j, "config": {**j["config"], "tags": [], "report": {"plot": None, "x": None, "metric": None,
                                                                     "metrics": [], **report}}} for j in jobs]


@pytest.mark.parametrize("name,jobs,params,kinds", [
    ("share", share_jobs(["E1", "synthetic_share"]), {"data.synthetic.share": "0.0,0.5,0.83"}, ["share_curve"]),
    ("share_declared", declare(share_jobs([]), plot="share_curve", x="data.synthetic.share"),
     {"data.synthetic.share": "0.0,0.5,0.83"}, ["share_curve"]),
    ("forgetting_declared", declare(forgetting_jobs(), plot="mitigation"), {"mitigation": "none,ewc,replay"},
     ["mitigation"]),
    ("param_count_declared", declare(param_jobs(), plot="pareto"), {"model": "tiny,tiny_8m,smollm2_135m"},
     ["pareto"]),
    ("human_review_declared", declare(review_jobs(), plot="review"), {"model": "tiny,tiny_8m"}, ["review"]),
    ("share_untagged", share_jobs([]), {"data.synthetic.share": "0.0,0.5,0.83"}, ["share_curve"]),
    ("forgetting", forgetting_jobs(), {"mitigation": "none,ewc,replay"}, ["mitigation"]),
    ("param_count", param_jobs(), {"model": "tiny,tiny_8m,smollm2_135m"}, ["pareto"]),
    ("human_review", review_jobs(), {"model": "tiny,tiny_8m"}, ["review"]),
    ("e5_search", [{**j, "overrides": [f"optim.lr={i}", "seed=0"]} for i, j in enumerate(param_jobs())],
     {"optim.lr": "interval(1e-4, 1e-2)"}, ["generic"]),  # a search, not a model ladder: no Pareto plot
    ("e5_search_declared", declare([{**j, "overrides": [f"optim.lr={i}", "seed=0"]}
                                    for i, j in enumerate(param_jobs())], plot="pareto"),
     {"optim.lr": "interval(1e-4, 1e-2)"}, ["generic"]),
])
def test_each_sweep_gets_its_plot(tmp_path, name, jobs, params, kinds):
    out = _draw(tmp_path, name, jobs, params)
    sweep = read_multirun(tmp_path / name)
    assert choose(sweep, cells(sweep)) == kinds
    for kind in kinds:
        assert (out / f"{kind}.png").read_bytes()[:8] == PNG
        assert f"![{kind}]({kind}.png)" in (out / "report.md").read_text()


def test_forgetting_table_has_acc_and_forgetting(tmp_path):
    out = _draw(tmp_path, "forgetting", forgetting_jobs(), {"mitigation": "none,ewc,replay"})
    rows = {r["mitigation"]: r for r in read_table(out / "table.csv")}
    assert list(rows) == ["none", "ewc", "replay"]
    assert float(rows["ewc"]["cl/acc:mean"]) == pytest.approx((0.85 - 0.18 + 0.4) / 2)
    f = [0.18, 0.19, 0.20]
    assert float(rows["ewc"]["cl/forgetting/banking77:ci95_high"]) == pytest.approx(0.19 + ci(f), rel=1e-9)
    header = (out / "report.md").read_text().split("## Results")[1]
    assert "cl/acc" in header and "cl/forgetting/banking77" in header and "cuad/test/accuracy" in header


def test_review_metrics_reach_the_table(tmp_path):
    out = _draw(tmp_path, "review", review_jobs(), {"model": "tiny,tiny_8m"})
    rows = {r["model"]: r for r in read_table(out / "table.csv")}
    assert float(rows["tiny_8m"]["review/sample/agreement/cohen_kappa:mean"]) == pytest.approx(0.525)
    assert float(rows["tiny"]["review/sample/agreement/auto_pass_rate:mean"]) == pytest.approx(0.6)
    assert float(rows["tiny"]["review/red_team/correctness:mean"]) == pytest.approx(0.8)


def test_a_two_seed_report_warns_pairs_the_arms_and_keeps_accuracy_in_0_1(tmp_path):
    root = write_two_seed_sweep(tmp_path)
    done = _cli(str(root))
    assert done.returncode == 0, done.stderr
    assert "warning: 2 of 2 cells have fewer than 3 seeds (n = 2)" in done.stderr
    text = (root / "compare" / "report.md").read_text()
    assert "**Warning: 2 of 2 cells have fewer than 3 seeds (n = 2).**" in text
    for row in read_table(root / "compare" / "table.csv"):
        assert 0.0 <= float(row["test/accuracy:ci95_low"]) <= float(row["test/accuracy:ci95_high"]) <= 1.0
    assert "| 100 | 2 | 0 1 | 0.2000 [0, 1.000]* | — |" in text  # the t interval, -1.07 to 1.47, cut at [0, 1]
    assert "test/accuracy ↑" in text and "↑: higher is better" in text
    diffs = text.split("## Paired differences")[1].split("\n## ")[0]
    assert "reference cell **data.n_train=100**" in diffs and "same seed in both = one pair" in diffs
    d = summarise([b - a for a, b in zip(*TWO_SEEDS.values())])
    assert f"| 400 | 2 | +0.7450 [{d.mean - d.half:.4f}, 1.000]* |" in diffs
    assert f"row 0 (the untrained model, each job's rows[0]) {ROW0_ACC:.4f}" in text
    assert f"chance 1/{LABELS} = {1 / LABELS:.4f}" in text


def test_size_sweep_differences_are_paired_by_seed(size_sweep):
    text = compare_folder(size_sweep).read_text()
    d = summarise([b - a for a, b in zip(ACC["500"], ACC["null"])])  # seeds 0, 1, 2 in both cells
    assert f"| null | 3 | +{d.mean:.4f} ± {d.half:.4f} |" in text and "Warning" not in text


def _drawn_lines(monkeypatch) -> List[List[str]]:
    """The labels of each saved figure's lines and point sets."""
    from ftexp.compare import plots

    seen: List[List[str]] = []
    finish = plots._finish

    def spy(fig, *args):
        seen.append([a.get_label() for ax in fig.axes for a in (*ax.lines, *ax.collections)])
        return finish(fig, *args)

    monkeypatch.setattr(plots, "_finish", spy)
    return seen


@pytest.mark.parametrize("plot", ["learning_curve", "generic"])
def test_plots_carry_chance_row0_and_each_seed(tmp_path, monkeypatch, plot):
    seen = _drawn_lines(monkeypatch)
    root = write_two_seed_sweep(tmp_path)
    for f in root.glob("*/results.json"):
        res = json.loads(f.read_text())
        f.write_text(json.dumps(declare([res], plot=plot, x="data.n_train" if plot != "generic" else None)[0]))
    compare_folder(root)
    assert (root / "compare" / f"{plot}.png").read_bytes()[:8] == PNG
    [labels] = seen
    assert f"chance (1/{LABELS})" in labels and "row 0: untrained model" in labels
    assert plot != "generic" or "one seed" in labels


def test_bars_mark_row0_per_cell_when_the_model_differs(tmp_path, monkeypatch):
    seen = _drawn_lines(monkeypatch)
    jobs = [results([f"model={m}"], seed, {"test/accuracy": 0.5 + seed / 10}, ["custom"],
                    rows=[{"index": 0, "metrics": {"b": {"test/accuracy": r0}}}], data={"name": "b", "labels": 4})
            for m, r0 in (("a", 0.1), ("b", 0.3)) for seed in (0, 1, 2)]
    compare_folder(write_multirun(tmp_path / "m", jobs, {"model": "a,b"}))
    [labels] = seen
    assert labels.count("row 0: untrained model") == 1 and "chance (1/4)" in labels


# ------------------------------------------------------------------------------------ the declared report


def size_jobs(key: str) -> List[Dict[str, Any]]:
    return [results([f"{key}={n}"], seed, {"test/accuracy": acc, "test/macro_f1": acc - 0.05}, [])
            for n, accs in (("100", ACC["500"]), ("400", ACC["null"])) for seed, acc in enumerate(accs)]


def test_a_declared_report_chooses_the_plot_its_axis_and_its_columns(tmp_path):
    """Swept keys alone would give data.n_train a learning curve and data.n_rows one bar per cell:
    the jobs' report says otherwise, and wins."""
    bars_out = _draw(tmp_path, "bars", declare(size_jobs("data.n_train"), plot="generic"),
                     {"data.n_train": "100,400"})
    assert (bars_out / "generic.png").is_file() and not (bars_out / "learning_curve.png").exists()
    curve_jobs = declare(size_jobs("data.n_rows"), plot="learning_curve", x="data.n_rows", metric="test/macro_f1",
                         metrics=["time/wall_s"])
    out = _draw(tmp_path, "curve", curve_jobs, {"data.n_rows": "100,400"})
    assert (out / "learning_curve.png").read_bytes()[:8] == PNG and not (out / "generic.png").exists()
    text = (out / "report.md").read_text()
    header = text.split("## Results")[1].split("\n|")[1]
    assert header.split(" | ")[3:5] == ["test/macro_f1 ↑", "time/wall_s ↓"]  # after the swept key, n and seeds
    assert float(read_table(out / "table.csv")[0]["test/macro_f1:mean"]) == pytest.approx(0.73 - 0.05)
    undeclared = _draw(tmp_path, "guessed", size_jobs("data.n_rows"), {"data.n_rows": "100,400"})
    assert (undeclared / "generic.png").is_file() and not (undeclared / "learning_curve.png").exists()


def test_a_declared_plot_the_jobs_do_not_allow_says_why(tmp_path):
    out = _draw(tmp_path, "s", declare(size_jobs("data.n_train"), plot="mitigation"), {"data.n_train": "100,400"})
    text = (out / "report.md").read_text()
    assert "![learning_curve](learning_curve.png)" in text  # the guess from the swept key, as without a report
    assert "- mitigation: declared by report.plot, but not drawn: no job has cl/acc" in text


def test_a_bad_report_plot_is_refused_naming_the_key_and_the_choices(tmp_path):
    from ftexp.compare import CompareError
    from ftexp.config.preflight import ConfigError, check_overrides
    from ftexp.config.report_schema import PLOTS

    with pytest.raises(ConfigError) as refused:
        check_overrides(["report.plot=histogram"])
    assert "report.plot='histogram'" in str(refused.value) and all(p in str(refused.value) for p in PLOTS)
    with pytest.raises(ConfigError, match="report.x='data.n_train': sets the x axis of"):
        check_overrides(["report.plot=pareto", "report.x=data.n_train"])
    root = write_multirun(tmp_path / "s", declare(size_jobs("data.n_train"), plot="histogram"), {})
    with pytest.raises(CompareError, match="report.plot='histogram': must be one of learning_curve"):
        compare_folder(root)
    root = write_multirun(tmp_path / "t", declare(size_jobs("data.n_train"), metrics="test/accuracy"), {})
    with pytest.raises(CompareError, match="report.metrics='test/accuracy': must be a list"):  # a file written by hand
        compare_folder(root)


def test_every_question_s_experiment_declares_the_plot_its_tags_chose():
    """The E1-E5 experiment files declare the plot that their tags chose before report existed, so their
    sweeps' plots and tables come out as they did; each plot kind has a drawing."""
    import yaml

    from ftexp.compare.plots import TITLES
    from ftexp.compare.select import CURVE_KEYS, LEGACY_TAG_PLOTS
    from ftexp.config.report_schema import PLOTS, report_problems

    assert set(TITLES) == set(PLOTS)
    checked = 0
    for path in sorted((REPO / "conf" / "experiment").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        if not any(t in ("E1", "E2", "E3", "E4", "E5") for t in cfg.get("tags", [])):
            continue
        report = cfg.get("report") or {}
        assert report.get("plot") == LEGACY_TAG_PLOTS[cfg["tags"][0]] and not report_problems(report), path.name
        x = report.get("x")
        assert x is None or x.endswith(CURVE_KEYS[report["plot"]]), path.name
        checked += 1
    assert checked == 10


# ------------------------------------------------------------------------------------ the command


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ftexp.compare", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_cli_exit_codes(size_sweep, tmp_path):
    done = _cli(str(size_sweep), "--out", str(tmp_path / "out"), "--metric", "test/macro_f1")
    assert done.returncode == 0, done.stderr
    assert f"report: {tmp_path / 'out' / 'report.md'}" in done.stdout
    assert "test/macro_f1" in (tmp_path / "out" / "report.md").read_text()
    (tmp_path / "empty").mkdir()
    empty = _cli(str(tmp_path / "empty"))
    assert empty.returncode == 1
    assert "holds no jobs" in empty.stderr and "Traceback" not in empty.stderr
    missing = _cli(str(tmp_path / "nope"))
    assert missing.returncode == 1 and "is not a folder" in missing.stderr
    wrong = _cli(str(size_sweep), "--metric", "test/acuracy")
    assert wrong.returncode == 1 and "test/accuracy" in wrong.stderr


def test_compare_imports_no_training_code(size_sweep, tmp_path):
    code = ("import sys; from ftexp.compare.__main__ import main; from ftexp.compare import read_multirun;"
            f"read_multirun({str(size_sweep)!r}); assert 'matplotlib' not in sys.modules;"
            f"main([{str(size_sweep)!r}, '--out', {str(tmp_path / 'o')!r}]);"
            "heavy = {'torch', 'transformers', 'pytorch_lightning', 'lightning', 'peft', 'ftexp.run', 'ftexp.job'};"
            "print(sorted(heavy & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


# ------------------------------------------------------------------------------------ W&B


class FakeApi:
    def __init__(self, runs: List[Any]) -> None:
        self._runs, self.calls = runs, []

    def runs(self, path: str, filters: Optional[Dict[str, Any]] = None) -> List[Any]:
        self.calls.append((path, filters))
        return [r for r in self._runs if r.group == (filters or {}).get("group")]


def fake_run(i: int, group: str, swept: Dict[str, str], seed: int, acc: Optional[float], state: str = "finished",
             job_type: str = "dataset_size") -> SimpleNamespace:
    summary = {"_step": 10, "status": "completed" if acc is not None else "failed"}
    if acc is not None:
        summary.update({"final/test/accuracy": acc, "eval/banking77/test/accuracy": acc})
    config = {"seed": seed, "tags": ["E2", "dataset_size"], "swept": {**swept, "seed": str(seed)},
              "output_dir": f"/runs/{group}/{i}", "report": {"plot": "learning_curve", "x": "data.n_train"}}
    return SimpleNamespace(id=f"r{i}", name=f"{group}/{i}", group=group, state=state, job_type=job_type,
                           url=f"https://wandb.ai/me/ftexp/runs/r{i}", config=config, summary=summary, tags=["E2"])


def test_wandb_group_through_a_fake_api(tmp_path):
    group = "dataset_size/2026-11-26/10-00-00"
    runs = [fake_run(i, group, {"data.n_train": n}, seed, acc)
            for i, (n, seed, acc) in enumerate((n, s, a) for n, accs in ACC.items() for s, a in enumerate(accs))]
    runs.append(fake_run(6, group, {"data.n_train": "500"}, 3, None, state="crashed"))
    review = SimpleNamespace(id="rv", name="x/review", group=group, state="finished", job_type="review",
                             url="u", config={"run_dir": f"/runs/{group}/0"}, tags=[],
                             summary={"review/sample/agreement/cohen_kappa": 0.4, "review/sample/agreement/n": 10,
                                      "review/sample/agreement/n_auto_pass": 5})
    runs.insert(0, review)
    runs.append(fake_run(9, "another/group", {"data.n_train": "500"}, 0, 0.1))
    api = FakeApi(runs)
    report = compare_wandb("me/ftexp", group, out=tmp_path / "w", api=api)
    assert api.calls == [("me/ftexp", {"group": group})]
    rows = {r["data.n_train"]: r for r in read_table(tmp_path / "w" / "table.csv")}
    assert float(rows["500"]["test/accuracy:mean"]) == pytest.approx(0.73)
    assert float(rows["500"]["test/accuracy:ci95_low"]) == pytest.approx(0.73 - ci(ACC["500"]), rel=1e-9)
    assert rows["500"]["n"] == "3" and rows["500"]["not_completed"] == "1"
    assert float(rows["500"]["review/sample/agreement/cohen_kappa:mean"]) == pytest.approx(0.4)
    assert rows["500"]["review/sample/agreement/cohen_kappa:n"] == "1"
    text = report.read_text()
    assert "wandb:me/ftexp" in text and "crashed" in text and "how many examples are enough?" in text.lower()
    assert (tmp_path / "w" / "learning_curve.png").read_bytes()[:8] == PNG


def test_wandb_errors_are_clear(tmp_path):
    from ftexp.compare import CompareError

    with pytest.raises(CompareError, match="holds no runs"):
        compare_wandb("me/ftexp", "nothing", out=tmp_path, api=FakeApi([]))

    class Broken:
        def runs(self, path, filters=None):
            raise RuntimeError("403 permission denied")

    with pytest.raises(CompareError, match="403 permission denied"):
        compare_wandb("me/ftexp", "g", out=tmp_path, api=Broken())


def test_no_completed_job_nested_folder_and_unreviewed_e4(tmp_path):
    jobs = [results([f"model={m}"], 0, {}, ["E4", "human_review"], status="failed",
                    error={"type": "FtexpError", "message": f"no weights for {m}"}) for m in ("a", "b")]
    root = write_multirun(tmp_path / "day" / "10-00-00", jobs, {"model": "a,b"})
    text = compare_folder(root).read_text()
    assert "No job completed" in text and "FtexpError: no weights for a" in text and "no weights for b" in text
    assert "python -m ftexp.review import" in text
    cli = _cli(str(root))  # the report is written, but nothing completed is not a success
    assert cli.returncode == 1 and "no job of" in cli.stderr and "no weights for a" in cli.stderr
    assert f"listed with its error in {root / 'compare' / 'report.md'}" in cli.stderr
    nested = _cli(str(tmp_path / "day"))  # a day folder, not a sweep: say which sweeps it holds
    assert nested.returncode == 1 and str(root) in nested.stderr


def test_a_single_run_folder(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(results([], 0, {"test/accuracy": 0.5}, ["x"])))
    out = tmp_path / "compare"
    compare_folder(tmp_path)
    assert "| 1 | 0 | 0.5000 (n=1) | — |" in (out / "report.md").read_text()
    assert (out / "generic.png").read_bytes()[:8] == PNG


def test_question_is_the_prose_of_the_sweep_header(tmp_path):
    from ftexp.compare.collect import _header

    f = tmp_path / "s.yaml"
    f.write_text("# @package _global_\n# E9 — does it work? Two lines\n# of prose.\n#   python -m ftexp -m sweeps=s\n"
                 "#   GPU: python -m ftexp -m sweeps=s trainer=gpu\ndefaults: []\n# not this\n")
    assert _header(f) == ["E9 — does it work? Two lines of prose."]
    from ftexp.compare.collect import config_file

    assert config_file("sweeps", "dataset_size") == REPO / "sweeps" / "dataset_size.yaml"
    assert config_file("experiment", "dataset_size") == REPO / "conf" / "experiment" / "dataset_size.yaml"
    assert config_file("sweeps", "no_such_sweep") is None


# ------------------------------------------------------------------------------------ the report in W&B


GROUP = "dataset_size/2026-11-26/10-00-00"


def test_the_report_is_logged_as_an_artifact_in_the_sweeps_group(size_sweep, tmp_path):
    from tests.helpers.wandb_records import wandb_artifacts, wandb_run_record

    for job in sorted(size_sweep.glob("[0-9]*/results.json"))[:6]:  # the completed jobs logged to W&B
        res = json.loads(job.read_text())
        res["logger"] = {"type": "WandbLogger", "dir": str(job.parent / "wandb"), "group": GROUP}
        res["config"]["logger"] = {"project": "e2-project", "mode": "offline"}
        job.write_text(json.dumps(res))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "ftexp.compare", str(size_sweep), "--out", str(out), "--log-wandb"],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**__import__("os").environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert done.returncode == 0, done.stderr
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and f"W&B: {runs[0]}" in done.stdout
    run = wandb_run_record(runs[0])
    assert (run.run_group, run.job_type, run.project) == (GROUP, "compare", "e2-project")
    [artifact] = [a for a in wandb_artifacts(runs[0]) if a.type == "compare-report"]  # (the table is one too)
    assert artifact.name == "compare-dataset_size_2026-11-26_10-00-00"
    files = {entry.path for entry in artifact.manifest.contents}
    assert {"report.md", "table.csv", "learning_curve.png"} <= files


def test_log_wandb_without_a_wandb_sweep_says_why(size_sweep, tmp_path):
    done = _cli(str(size_sweep), "--out", str(tmp_path / "out"), "--log-wandb")
    assert done.returncode == 1 and "logger=wandb" in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / "out" / "report.md").is_file()  # the report is written all the same


def test_a_runs_forgetting_matrix_names_its_axes_and_colour_scale(tmp_path, monkeypatch):
    """continual.png: the curves' axes say what they show, and the per-column colours have a scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ftexp.tracking.plots import plot_matrix

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    R = [[0.1, 3.0], [0.8, 2.5]]
    plot_matrix(R, ["a", "g"], ["base", "a"], {"a": "test/accuracy", "g": "test/loss"}, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG
    labels = {ax.get_ylabel() for ax in figures[0].axes}
    assert "score: test/accuracy (higher is better)" in labels and "loss or perplexity (lower is better)" in labels
    assert "within each task's column" in labels  # the colour bar
    assert any("untrained" in ax.get_xlabel() for ax in figures[0].axes)


def test_a_missing_kappa_says_why(tmp_path):
    jobs = review_jobs()
    agreement = jobs[0]["review"]["sample"]["agreement"]
    del agreement["cohen_kappa"]
    agreement["n_auto_pass"] = agreement["n"]  # every output passed: kappa is undefined
    text = (_draw(tmp_path, "review", jobs, {"model": "tiny,tiny_8m"}) / "report.md").read_text()
    assert "- model=tiny, seed 0: Cohen's κ undefined: the automated verdicts never vary (all pass)." in text


def test_a_curve_per_model_draws_each_model_s_row0(tmp_path, monkeypatch):
    seen = _drawn_lines(monkeypatch)
    jobs = [results([f"data.n_train={n}", f"model={m}"], seed, {"test/accuracy": 0.3 + int(n) / 1000}, ["E2"],
                    rows=[{"index": 0, "metrics": {"b": {"test/accuracy": r0}}}], data={"name": "b", "labels": 4})
            for m, r0 in (("a", 0.1), ("b", 0.3)) for n in ("100", "400") for seed in (0, 1, 2)]
    compare_folder(write_multirun(tmp_path / "m", jobs, {"data.n_train": "100,400", "model": "a,b"}))
    [labels] = seen
    assert [x for x in labels if x.startswith("row 0")] == ["row 0: untrained model · model=a",
                                                             "row 0: untrained model · model=b"]
