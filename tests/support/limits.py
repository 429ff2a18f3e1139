"""Hang guards of the test suite: limits far above any honest run time, never performance bounds.

A wall-clock limit in a test only tells a hung step from a slow one. CI runs on machines of 2 cores
with the suite on two workers, sometimes beside other work (a loaded machine took 47 min for the
whole suite): a limit that such a machine can reach would decide a result by the clock. Speed is
measured in ``bench/``, never asserted here.
"""

from __future__ import annotations

#: One step of a test (a subprocess, a service's start, a stage of a real model): a step that runs
#: this long is hung, not slow.
HANG_GUARD_S = 3600.0
