"""``trainer.pipeline.OrderedJobs``: order, bounded backlog, failures, stop (real threads, events, no clock).

``ArmPrefetcher`` is exercised against a live service in tests/test_rollouts_overlap.py.
"""

from __future__ import annotations

import functools
import threading

import pytest

from trainer.pipeline import OrderedJobs

GUARD_S = 120.0  # hang guard for event waits


def test_jobs_run_in_order_on_one_background_thread() -> None:
    jobs = OrderedJobs(3)
    done: list[int] = []
    threads: set[int] = set()

    def job(i: int) -> None:
        threads.add(threading.get_ident())
        jobs.commit(lambda: done.append(i))

    for i in range(20):
        jobs.submit(functools.partial(job, i))
    jobs.drain()
    jobs.stop()
    assert done == list(range(20))
    assert threads and threading.get_ident() not in threads and len(threads) == 1
    assert 1 <= jobs.max_pending <= 3


def test_submit_blocks_while_the_backlog_is_full() -> None:
    jobs = OrderedJobs(2)
    gate = threading.Event()
    started = threading.Event()

    def held() -> None:
        started.set()
        assert gate.wait(GUARD_S)

    jobs.submit(held)
    jobs.submit(lambda: None)
    assert started.wait(GUARD_S)
    returned = threading.Event()

    def third() -> None:
        jobs.submit(lambda: None)
        returned.set()

    t = threading.Thread(target=third, daemon=True)
    t.start()
    # the third submit cannot return while the held job and the one behind it are pending
    assert not returned.is_set()
    gate.set()
    assert returned.wait(GUARD_S)
    jobs.drain()
    assert jobs.max_pending == 2


def test_depth_zero_runs_each_job_in_the_caller() -> None:
    jobs = OrderedJobs(0)
    seen: list[int] = []
    jobs.submit(lambda: seen.append(threading.get_ident()))
    jobs.drain()
    assert seen == [threading.get_ident()]


def test_a_failure_skips_the_later_jobs_and_is_raised_to_the_caller() -> None:
    jobs = OrderedJobs(3)
    gate = threading.Event()
    done: list[str] = []

    def first() -> None:
        assert gate.wait(GUARD_S)
        raise ValueError("scoring failed")

    jobs.submit(first)
    jobs.submit(lambda: done.append("second"))  # queued behind the failure: skipped
    gate.set()
    with pytest.raises(ValueError, match="scoring failed"):
        jobs.drain()
    with pytest.raises(ValueError, match="scoring failed"):
        jobs.submit(lambda: done.append("third"))
    assert done == []


def test_no_write_starts_after_stop() -> None:
    jobs = OrderedJobs(1)
    gate = threading.Event()
    running = threading.Event()
    wrote: list[bool] = []

    def job() -> None:
        running.set()
        assert gate.wait(GUARD_S)
        wrote.append(jobs.commit(lambda: None))

    jobs.submit(job)
    assert running.wait(GUARD_S)
    jobs.stop()  # the job is mid-flight (its "network call"); its write must not happen
    gate.set()
    jobs._thread.join(GUARD_S)  # type: ignore[union-attr]
    assert wrote == [False]
    with pytest.raises(RuntimeError, match="after stop"):
        jobs.submit(lambda: None)


def test_bad_depth() -> None:
    with pytest.raises(ValueError):
        OrderedJobs(-1)
