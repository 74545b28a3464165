"""How a job is named in W&B (ftexp.tracking.identity), what it logs at the end (ftexp.tracking.media), and how
compare finds a sweep grouped per arm: no subprocess, no W&B run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from ftexp.tracking.identity import (GROUP_MAX, TAG_MAX, arm_of, group_of, single_identity, sweep_identity, tags,
                                     typed_swept, typed_value)
from ftexp.tracking.media import matrix_columns, matrix_rows

SWEEP = "mitigation/2026-12-07/10-00-00"
KEYS = ["data.n_train", "mitigation", "optim.lr", "seed"]


def own(n: str, mitigation: str, lr: str, seed: str):
    return {"data.n_train": n, "mitigation": mitigation, "optim.lr": lr, "seed": seed, "logger": "wandb"}


def test_swept_values_are_typed_as_hydra_parses_them():
    assert typed_swept(own("100", "ewc", "1e-4", "2"), KEYS) == {
        "data.n_train": 100, "mitigation": "ewc", "optim.lr": 0.0001, "seed": 2}
    assert typed_value("flag", "true") is True and typed_value("n", "null") is None
    assert typed_value("name", "'3'") == "3"  # quoted: a string
    assert typed_value("x", "<redacted>") == "<redacted>"  # what the grammar refuses stays as written
    assert typed_value("tags", "[a,b]") == "[a,b]"  # not a plain value: as written


def test_an_arm_is_a_group_and_its_seeds_are_its_members():
    a0, a1 = (sweep_identity(SWEEP, Path(f"/m/{i}"), None, own("100", "ewc", "1e-4", str(i)), KEYS) for i in (0, 1))
    b0 = sweep_identity(SWEEP, Path("/m/2"), None, own("100", "none", "1e-4", "0"), KEYS)
    assert a0.group == a1.group == f"{SWEEP}/data.n_train=100,mitigation=ewc,optim.lr=1e-4" != b0.group
    assert a0.arm == "data.n_train=100,mitigation=ewc,optim.lr=1e-4" and a0.sweep == SWEEP
    assert a0.job_type == "sweep" and a0.name == f"{SWEEP}/0"
    assert a0.tags == ["mitigation", f"sweep:{SWEEP}", f"arm:{a0.arm}", "swept:data.n_train", "swept:mitigation",
                       "swept:optim.lr", "swept:seed"]
    assert a0.config() == {"swept": {"data.n_train": 100, "mitigation": "ewc", "optim.lr": 0.0001, "seed": 0},
                           "sweep": SWEEP, "arm": a0.arm}


def test_seeds_only_make_one_group_and_an_experiment_is_the_job_type():
    ident = sweep_identity(SWEEP, Path("/m/3"), "forgetting", {"seed": "3"}, ["seed"], ["E3", "forgetting"])
    assert ident.group == SWEEP and ident.arm == "" and ident.job_type == "forgetting"
    assert ident.tags[:3] == ["E3", "forgetting", "mitigation"]  # the run's own tags first
    assert arm_of({"+seed": "1", "b": "x", "a": "1"}, ["b", "+seed", "a"]) == "a=1,b=x"


def test_a_single_run_is_a_group_of_its_own():
    ident = single_identity(Path("/out/2026-12-07/10-00-00"), None, ["x"])
    assert (ident.name, ident.group, ident.job_type, ident.tags) == ("2026-12-07/10-00-00",) * 2 + ("run", ["x"])
    assert ident.config() == {"swept": {}}


def test_tags_and_groups_are_short_enough_for_w_and_b():
    assert tags(["a", "b"], ["a", "x" * 100, ""]) == ["a", "b", "x" * TAG_MAX]
    long_a, long_b = group_of(SWEEP, "k=" + "x" * 200), group_of(SWEEP, "k=" + "x" * 199 + "y")
    assert len(long_a) == len(long_b) == GROUP_MAX and long_a != long_b and long_a.startswith(f"{SWEEP}/k=xx")
    assert group_of(SWEEP, "") == SWEEP and group_of(SWEEP, "a=1") == f"{SWEEP}/a=1"


def test_the_forgetting_matrix_becomes_table_rows():
    continual = {"tasks": ["banking77", "general"], "score": {"banking77": "test/accuracy", "general": "test/loss"},
                 "rows": ["base", "banking77"], "R": [[0.0, 6.0], [0.5, 5.5]]}
    assert matrix_columns(continual) == ["after stage", "banking77: test/accuracy", "general: test/loss"]
    assert matrix_rows(continual) == [["base", 0.0, 6.0], ["banking77", 0.5, 5.5]]
    assert matrix_rows({"tasks": [], "R": []}) is None


def test_run_media_logs_every_plot_and_the_matrix(tmp_path):
    pytest.importorskip("wandb")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ftexp.tracking.media import run_media

    for name in ("continual", "learning_curve"):
        plt.plot([0, 1])
        plt.savefig(tmp_path / f"{name}.png")
        plt.close()
    media = run_media(tmp_path, {"continual": {"tasks": ["a"], "rows": ["base"], "R": [[0.1]]}})
    assert sorted(media) == ["cl/matrix", "plots/continual", "plots/learning_curve"]
    assert media["cl/matrix"].columns == ["after stage", "a"] and media["cl/matrix"].data == [["base", 0.1]]
    assert run_media(tmp_path / "nothing", {}) == {}


def test_the_no_logger_takes_the_files_and_has_no_id(tmp_path):
    from ftexp.tracking.loggers import NoLogger

    tracker = NoLogger(None)
    tracker.log_files(tmp_path, {"continual": {"R": [[1.0]]}})  # nothing to do, nothing raised
    assert tracker.run_id is None


class FakeApi:
    def __init__(self, runs):
        self._runs, self.calls = runs, []

    def runs(self, path, filters=None):
        self.calls.append(filters)
        (key, value), = filters.items()
        field = "group" if key == "group" else "sweep"
        return [r for r in self._runs if (r.group if field == "group" else r.config.get("sweep")) == value]


def fake_run(i: int, arm: str, seed: int, acc: float) -> SimpleNamespace:
    config = {"seed": seed, "swept": {"optim.lr": float(arm), "seed": seed}, "sweep": SWEEP, "arm": f"optim.lr={arm}",
              "output_dir": f"/runs/{i}"}
    return SimpleNamespace(id=f"r{i}", name=f"{SWEEP}/{i}", group=f"{SWEEP}/optim.lr={arm}", state="finished",
                           job_type="sweep", url=f"u{i}", config=config, tags=[],
                           summary={"status": "completed", "final/test/accuracy": acc})


def test_compare_finds_a_sweep_grouped_per_arm_by_its_config(tmp_path):
    from ftexp.compare.wandb_runs import read_wandb

    runs = [fake_run(i, arm, seed, 0.5 + i / 10) for i, (arm, seed) in
            enumerate((a, s) for a in ("1e-4", "0.001") for s in (0, 1))]
    compare = SimpleNamespace(id="c", name="c", group=SWEEP, state="finished", job_type="compare", url="c",
                              config={"sweep": SWEEP}, tags=[], summary={})
    api = FakeApi([*runs, compare])
    sweep = read_wandb("me/ftexp", SWEEP, api=api)
    assert api.calls == [{"group": SWEEP}, {"config.sweep": SWEEP}]  # the group holds the report only
    assert len(sweep.jobs) == 4 and {j.overrides["optim.lr"] for j in sweep.jobs} == {"0.0001", "0.001"}
    assert {j.seed for j in sweep.jobs} == {0, 1} and sweep.jobs[0].experiment is None
