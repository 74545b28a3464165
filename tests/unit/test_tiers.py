"""The rule that keeps the folders saying the tier (tests/helpers/tiers.py), checked on stand-in items; the
conftest applies it to every collection."""

from __future__ import annotations

from types import SimpleNamespace

from tests.helpers.tiers import TESTS, misplaced


def item(path: str, *marks: str):
    return SimpleNamespace(path=TESTS / path, nodeid=f"tests/{path}::test_x",
                           iter_markers=lambda: [SimpleNamespace(name=m) for m in marks])


def test_slow_or_gpu_under_unit_and_unmarked_under_gpu_are_named_with_where_to_go():
    wrong = misplaced([item("unit/test_a.py", "slow", "parametrize"), item("unit/test_b.py", "gpu"),
                       item("gpu/test_c.py"), item("gpu/test_d.py", "gpu", "slow")])
    assert wrong == ["tests/unit/test_a.py::test_x: marked slow under tests/unit/ (move it to tests/integration/)",
                     "tests/unit/test_b.py::test_x: marked gpu under tests/unit/ (move it to tests/gpu/)",
                     "tests/gpu/test_c.py::test_x: under tests/gpu/ without the gpu mark (mark it, or move it)"]


def test_fast_tests_anywhere_but_gpu_and_slow_ones_in_integration_pass():
    assert misplaced([item("unit/test_a.py", "parametrize"), item("integration/test_b.py"),
                      item("integration/test_c.py", "slow"), item("integration/test_d.py", "gpu")]) == []
    outside = SimpleNamespace(path=TESTS.parent / "bench" / "test_e.py", nodeid="bench/test_e.py::t",
                              iter_markers=lambda: [SimpleNamespace(name="slow")])
    assert misplaced([outside]) == []
