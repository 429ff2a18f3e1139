"""The inner loop's selection (tests/support/unit_modules.py): every test module classified once, and the
``unit`` marker on exactly the unit modules' tests; and the order the files start in (tests/support/schedule.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.schedule import LONGEST_FIRST, longest_first
from tests.support.unit_modules import OTHER_MODULES, UNIT_MODULES

TESTS = Path(__file__).resolve().parent


def test_every_test_module_is_classified_once() -> None:
    modules = {p.stem for p in TESTS.glob("test_*.py")}
    assert not UNIT_MODULES & OTHER_MODULES.keys()
    assert modules - UNIT_MODULES - OTHER_MODULES.keys() == set(), "classify it in tests/support/unit_modules.py"
    assert (UNIT_MODULES | OTHER_MODULES.keys()) - modules == set(), "a listed module does not exist"


def test_this_module_carries_the_unit_marker(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("unit") is not None


def test_the_marker_is_registered(pytestconfig: pytest.Config) -> None:
    assert any(line.startswith("unit:") for line in pytestconfig.getini("markers"))


def test_the_longest_files_start_first_and_the_rest_keep_their_order() -> None:
    items = [("test_a", 1), ("test_real_model", 1), ("test_b", 1), ("test_toy_learning", 1), ("test_real_model", 2)]
    assert longest_first(items, lambda item: item[0]) == [
        ("test_toy_learning", 1),
        ("test_real_model", 1),
        ("test_real_model", 2),
        ("test_a", 1),
        ("test_b", 1),
    ]
    assert LONGEST_FIRST[:2] == ("test_toy_learning", "test_real_model")


def test_every_longest_file_exists() -> None:
    assert set(LONGEST_FIRST) <= {p.stem for p in TESTS.glob("test_*.py")}, (
        "a renamed module: tests/support/schedule.py"
    )


def test_the_session_runs_the_longest_files_first(request: pytest.FixtureRequest) -> None:
    order = list(dict.fromkeys(item.path.stem for item in request.session.items))
    listed = [m for m in order if m in LONGEST_FIRST]
    assert order[: len(listed)] == listed == [m for m in LONGEST_FIRST if m in listed]
