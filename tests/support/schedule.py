"""The order in which the suite's test files start on two workers (``-n 2 --dist loadfile``): the longest first.

pytest-xdist's ``loadfile`` hands each worker whole files from one queue. By default it sorts that queue by the
number of tests in a file, so the two files that take most of the suite's time (the toy learning loop and the
real-model stages: a few tests each, many minutes) started last and ran alone at the end, one core idle. With
the longest files first, each worker starts one of them and the other files fill in around them: the suite then
takes about its CPU time over two cores, no more (README, "Tests").

``tests/conftest.py`` puts the files of ``LONGEST_FIRST`` first, in that order (a stable sort: the tests of a
file keep their order, the other files theirs) and turns xdist's reordering by test count off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

#: Test modules by measured wall time on 2 workers, longest first: the toy learning loop (about a quarter hour),
#: the real-model stages (about 3 minutes), then those of a minute or more (``--durations=0`` summed per module,
#: 2026-12-07); every other module takes less.
LONGEST_FIRST: tuple[str, ...] = (
    "test_toy_learning",
    "test_real_model",
    "test_trainer_rollouts",
    "test_trainer_e2e",
    "test_openapi_fuzz",
    "test_service_hf",
    "test_service_faults",
    "test_fleet",
    "test_service_memory",
    "test_trainer_resume",
    "test_trainer_cli",
)


def longest_first(items: Sequence[T], module_of: Callable[[T], str]) -> list[T]:
    """``items`` with those of ``LONGEST_FIRST``'s modules first, in its order; the others after them, in the
    order they came (a stable sort: ``module_of(item)`` is the module's name, e.g. ``test_real_model``)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    return sorted(items, key=lambda item: rank.get(module_of(item), len(rank)))
