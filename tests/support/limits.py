"""Hang guards of the test suite: limits far above any honest run time, never performance bounds.

A wall-clock limit in a test only tells a hung step from a slow one. CI runs on machines of 2 cores
with the suite on two workers, sometimes beside other work (a loaded machine took 47 min for the
whole suite): a limit that such a machine can reach would decide a result by the clock. Speed is
measured in ``bench/``, never asserted here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: One step of a test (a subprocess, a service's start, a stage of a real model): a step that runs
#: this long is hung, not slow.
HANG_GUARD_S = 3600.0


def wait_for(condition: Callable[[], T], what: str, *, every: float = 0.2, timeout: float = HANG_GUARD_S) -> T:
    """Poll ``condition`` every ``every`` seconds until it returns something truthy, and return that. ``timeout`` is
    a hang guard (default ``HANG_GUARD_S``): reaching it says the awaited thing never happened, not that it was slow."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"hang guard ({timeout:.0f} s) passed: {what}")
