"""The inner loop's selection (tests/support/unit_modules.py): every test module classified once, and the
``unit`` marker on exactly the unit modules' tests."""

from __future__ import annotations

from pathlib import Path

import pytest

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
