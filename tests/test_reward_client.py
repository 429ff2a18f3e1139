"""The reward client against a real (flaky, on purpose) uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
import random
import time
from pathlib import Path

import pytest

from shared_schemas.wire import ScoreItem
from tests.support.flaky_server import FlakyServer, free_port
from tests.support.limits import HANG_GUARD_S
from trainer.configs import RewardServiceArguments
from trainer.reward_client import (
    DEFAULT_PATIENCE_S,
    AsyncRewardClient,
    ClientSettings,
    RewardClient,
    RewardServiceConnectionError,
    RewardServiceError,
    RewardServiceHTTPError,
    RewardServiceProtocolError,
    RewardServiceTimeout,
    backoff_delay,
    parse_retry_after,
    resolve_api_key,
    resolve_base_url,
    split_batches,
)

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=20.0, seed=0)


def make_items(n: int, per_item: int = 2) -> list[ScoreItem]:
    return [
        ScoreItem(
            id=f"q{i}",
            question=f"What is {i} + 1?",
            gold_answer=f"#### {i + 1}",
            trajectories=[f"{i} + 1 = {i + 1}. The answer is {i + 1}" + "!" * j for j in range(per_item)],
        )
        for i in range(n)
    ]


# ------------------------------------------------------------------------------ success, batching


def test_score_batches_and_keeps_order(srv: FlakyServer) -> None:
    items = make_items(7)
    with RewardClient(srv.url, batch_items=3, **FAST) as client:
        response = client.score(items)
    assert [r.id for r in response.results] == [f"q{i}" for i in range(7)]
    for item, result in zip(items, response.results):
        assert [s.reward for s in result.scores] == [float(len(t)) for t in item.trajectories]
        assert all(s.correctness == 1.0 for s in result.scores)
    stats = srv.stats()
    assert stats["items_per_request"] == [3, 3, 1]
    assert stats["ids_per_request"] == [["q0", "q1", "q2"], ["q3", "q4", "q5"], ["q6"]]
    assert response.scorer.name == "flaky-toy"


def test_return_details_false_is_sent(srv: FlakyServer) -> None:
    with RewardClient(srv.url, **FAST) as client:
        response = client.score(make_items(2), return_details=False)
    assert srv.stats()["return_details"] == [False]
    score = response.results[0].scores[0]
    assert score.s_end is None and score.reward > 0


def test_items_may_be_dicts_and_bad_ones_are_named(srv: FlakyServer) -> None:
    with RewardClient(srv.url, **FAST) as client:
        response = client.score([{"id": "a", "question": "q?", "trajectories": ["12"]}])
        assert response.results[0].label_free is True
        with pytest.raises(ValueError, match=r"items\[0\]"):
            client.score([{"id": "a", "question": "q?", "trajectories": []}])
        with pytest.raises(ValueError, match="at least one item"):
            client.score([])


# ---------------------------------------------------------------------------------------- retries


def test_retry_then_success_on_503_429_and_dropped_connection(srv: FlakyServer) -> None:
    srv.configure(script=[{"status": 503}, {"status": 429}, "drop"])
    with RewardClient(srv.url, max_retries=5, **FAST) as client:
        response = client.score(make_items(1))
    assert response.results[0].id == "q0"
    stats = srv.stats()
    assert stats["actions"] == ["503", "429", "drop", "ok"]
    assert stats["score_requests"] == 4


def test_retry_after_is_honoured(srv: FlakyServer) -> None:
    srv.configure(script=[{"status": 503, "retry_after": 1}])
    with RewardClient(srv.url, max_retries=3, backoff_base_s=0.001, backoff_max_s=0.001) as client:
        start = time.monotonic()
        client.score(make_items(1))
        elapsed = time.monotonic() - start
    arrivals = srv.stats()["arrivals"]
    assert len(arrivals) == 2
    assert elapsed >= 0.9
    assert arrivals[1] - arrivals[0] >= 0.9


def test_gives_up_after_max_retries(srv: FlakyServer) -> None:
    srv.configure(default={"status": 503, "code": "overloaded", "message": "queue full", "retry_after": 0})
    with RewardClient(srv.url, max_retries=2, **FAST) as client:
        with pytest.raises(RewardServiceHTTPError) as info:
            client.score(make_items(1))
    err = info.value
    assert err.status == 503 and err.code == "overloaded" and err.retry_after == 0
    assert "queue full" in str(err) and "after 3 attempts" in str(err) and srv.url in str(err)
    assert srv.stats()["score_requests"] == 3
    clone = pickle.loads(pickle.dumps(err))  # survives multiprocessing
    assert (clone.status, clone.code, str(clone)) == (503, "overloaded", str(err))


@pytest.mark.parametrize("status", [400, 404, 413, 422, 500])
def test_other_error_statuses_are_not_retried(srv: FlakyServer, status: int) -> None:
    srv.configure(default={"status": status, "code": f"c{status}", "message": f"broken {status}"})
    with RewardClient(srv.url, max_retries=5, **FAST) as client:
        with pytest.raises(RewardServiceHTTPError) as info:
            client.score(make_items(1))
    assert info.value.status == status and info.value.code == f"c{status}"
    assert f"broken {status}" in str(info.value)
    assert srv.stats()["score_requests"] == 1


def test_401_not_retried_and_reports_service_message(srv: FlakyServer) -> None:
    srv.configure(api_key="right-key")
    with RewardClient(srv.url, api_key="wrong-key", max_retries=5, **FAST) as client:
        with pytest.raises(RewardServiceHTTPError) as info:
            client.score(make_items(1))
    assert info.value.status == 401 and info.value.code == "unauthorized"
    assert "missing or invalid API key" in str(info.value)
    stats = srv.stats()
    assert stats["score_requests"] == 1
    assert stats["authorization"] == ["Bearer wrong-key"]


def test_api_key_from_env_and_from_file(srv: FlakyServer, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    srv.configure(api_key="k-env")
    monkeypatch.setenv("REGIME_W_API_KEY", "k-env")
    monkeypatch.setenv("REGIME_W_URL", srv.url)
    with RewardClient(**FAST) as client:  # URL and key both from the environment
        assert client.score(make_items(1)).results[0].id == "q0"
        assert client.info().arms == ["arm_a", "arm_b"]
    monkeypatch.delenv("REGIME_W_API_KEY")
    key_file = tmp_path / "key"
    key_file.write_text("# the service's key file: one key a line\n\nk-env   # trainer key\nother-key\n")
    monkeypatch.setenv("REGIME_W_API_KEY_FILE", str(key_file))
    with RewardClient(**FAST) as client:
        client.score(make_items(1))
    assert srv.stats()["authorization"] == ["Bearer k-env", "Bearer k-env"]
    monkeypatch.setenv("REGIME_W_API_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(RewardServiceError, match="cannot be read"):
        resolve_api_key(None)


def test_timeout_raises_timeout_without_retry(srv: FlakyServer) -> None:
    srv.configure(script=[{"sleep": 3}])
    with RewardClient(srv.url, timeout_s=0.5, max_retries=3, backoff_base_s=0.01) as client:
        with pytest.raises(RewardServiceTimeout, match=r"within 0.5s"):
            client.score(make_items(1))
    assert srv.stats()["score_requests"] == 1


def test_unreachable_raises_connection_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with RewardClient(url, max_retries=2, **FAST) as client:
        with pytest.raises(RewardServiceConnectionError) as info:
            client.score(make_items(1))
        assert url in str(info.value) and "3 attempt" in str(info.value)
        assert client.ready() is False


def test_connection_drops_every_time_gives_connection_error(srv: FlakyServer) -> None:
    srv.configure(default="drop")
    with RewardClient(srv.url, max_retries=1, **FAST) as client:
        with pytest.raises(RewardServiceConnectionError, match="RemoteProtocolError"):
            client.score(make_items(1))
    assert srv.stats()["score_requests"] == 2


def test_invalid_response_body_is_a_protocol_error(srv: FlakyServer) -> None:
    srv.configure(script=["bad_body"])
    with RewardClient(srv.url, **FAST) as client:
        with pytest.raises(RewardServiceProtocolError, match="not a valid ScoreResponse"):
            client.score(make_items(1))


def test_info_and_ready(srv: FlakyServer) -> None:
    with RewardClient(srv.url, **FAST) as client:
        assert client.ready() is True
        info = client.info()
        assert info.backend == "toy" and info.scorer.config_fingerprint == "sha256:toy"
        srv.configure(ready=False)
        assert client.ready() is False


def test_from_args(srv: FlakyServer) -> None:
    args = RewardServiceArguments(
        reward_url=srv.url, reward_batch_items=2, reward_max_retries=1, reward_patience_s=42.0, reward_timeout_s=7.0
    )
    settings = ClientSettings.from_args(args, backoff_base_s=0.01)
    assert (settings.batch_items, settings.max_retries, settings.patience_s, settings.timeout_s) == (2, 1, 42.0, 7.0)
    assert settings.backoff_base_s == 0.01 and settings.base_url == srv.url
    with RewardClient.from_args(args, backoff_base_s=0.01) as client:
        assert client.settings == settings
        client.score(make_items(3))
    assert srv.stats()["items_per_request"] == [2, 1]


def test_settings_are_frozen_validated_and_keep_the_key_out_of_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REGIME_W_URL", "REGIME_W_API_KEY", "REGIME_W_API_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MY_KEY", "secret-key-0123")
    settings = ClientSettings.from_env("http://reward.internal:9000/", api_key_env="MY_KEY")
    assert settings.base_url == "http://reward.internal:9000" and settings.api_key == "secret-key-0123"
    assert "secret-key-0123" not in repr(settings)
    assert settings.patience_s == DEFAULT_PATIENCE_S == 600.0 and settings.max_retries is None
    assert {429, 503, 504} <= settings.retry_statuses
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.timeout_s = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="batch_items=0"):
        settings.replace(batch_items=0)
    with pytest.raises(RewardServiceError, match="http"):
        ClientSettings(base_url="reward.internal:9000")
    # the recipe default is the same budget
    assert ClientSettings.from_args(RewardServiceArguments()).patience_s == 600.0
    # a client takes the settings object; keywords next to it override single fields
    with RewardClient(settings, timeout_s=3.0) as client:
        assert client.settings.timeout_s == 3.0 and client.settings.base_url == settings.base_url
    with pytest.raises(TypeError, match="ClientSettings"):
        RewardClient(settings, base_url="http://other:1")


# ------------------------------------------------------------------------------- patience budget


def test_504_is_retried_and_served_on_the_retry(srv: FlakyServer) -> None:
    srv.configure(
        script=[
            {"status": 504, "code": "deadline_exceeded", "message": "retry: served from cache"},
            {"status": 503, "retry_after": 0.3},
            {"status": 504},
        ]
    )
    with RewardClient(srv.url, **FAST) as client:  # no max_retries: the patience budget decides
        start = time.monotonic()
        assert client.score(make_items(1)).results[0].id == "q0"
        assert time.monotonic() - start >= 0.25  # Retry-After honoured
    assert srv.stats()["actions"] == ["504", "503", "504", "ok"]


def test_patience_budget_bounds_the_retries_in_wall_time(srv: FlakyServer) -> None:
    # Retry-After of an hour: only the clamp to what is left of the 1.5 s budget lets this call end (no upper
    # wall-clock bound is asserted; without the clamp the test would hang until pytest-timeout stops it)
    srv.configure(default={"status": 503, "code": "overloaded", "message": "queue full", "retry_after": 3600})
    with RewardClient(srv.url, patience_s=1.5, backoff_base_s=0.05, backoff_max_s=0.2, seed=0) as client:
        start = time.monotonic()
        with pytest.raises(RewardServiceHTTPError) as info:
            client.score(make_items(1))
        elapsed = time.monotonic() - start
    # one retry, at the deadline
    assert elapsed >= 1.4, elapsed
    assert info.value.status == 503 and "patience 1.5s" in str(info.value)
    assert srv.stats()["score_requests"] == 2


def test_an_outage_shorter_than_the_patience_is_survived(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens on the port for ~3 s (a service restart); then a real server comes up there."""
    import subprocess
    import sys
    import threading

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    outcome: dict[str, object] = {}

    def score() -> None:
        with RewardClient(url, patience_s=60.0, backoff_base_s=0.1, backoff_max_s=0.5, seed=0) as client:
            start = time.monotonic()
            try:
                outcome["response"] = client.score(make_items(2))
            except RewardServiceError as exc:  # pragma: no cover - reported by the assert below
                outcome["error"] = exc
            outcome["elapsed"] = time.monotonic() - start

    worker = threading.Thread(target=score)
    worker.start()
    time.sleep(3.0)
    assert worker.is_alive(), f"the client gave up during a 3 s outage: {outcome}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.flaky_server", "--port", str(port)],
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        worker.join(timeout=60)
        assert not worker.is_alive()
        assert "error" not in outcome, outcome.get("error")
        assert [r.id for r in outcome["response"].results] == ["q0", "q1"]  # type: ignore[attr-defined]
        assert outcome["elapsed"] >= 3.0  # type: ignore[operator]
    finally:
        proc.terminate()
        proc.wait(timeout=HANG_GUARD_S)


def test_connection_errors_stop_when_the_patience_is_spent() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with RewardClient(url, patience_s=1.0, backoff_base_s=0.05, backoff_max_s=0.1, seed=0) as client:
        start = time.monotonic()
        with pytest.raises(RewardServiceConnectionError, match=r"patience 1s"):
            client.score(make_items(1))
        assert time.monotonic() - start >= 1.0  # the budget was used; that it ends at all is the point


# ------------------------------------------------------------------------------------------ async


def test_async_client_sends_batches_concurrently_in_order(srv: FlakyServer) -> None:
    srv.configure(default={"delay_s": 0.3})
    items = make_items(6)

    async def go():
        async with AsyncRewardClient(srv.url, batch_items=2, max_concurrency=3, **FAST) as client:
            return await client.score(items)

    response = asyncio.run(go())
    assert [r.id for r in response.results] == [f"q{i}" for i in range(6)]
    for item, result in zip(items, response.results):
        assert [s.reward for s in result.scores] == [float(len(t)) for t in item.trajectories]
    stats = srv.stats()
    assert sorted(stats["items_per_request"]) == [2, 2, 2]
    assert stats["max_in_flight"] >= 2


def test_async_client_retries_and_raises_typed_errors(srv: FlakyServer) -> None:
    srv.configure(script=[{"status": 503, "retry_after": 0.5}, "drop"])

    async def retried():
        async with AsyncRewardClient(srv.url, **FAST) as client:
            start = time.monotonic()
            response = await client.score(make_items(1))
            return response, time.monotonic() - start, await client.ready(), await client.info()

    response, elapsed, ready, info = asyncio.run(retried())
    assert response.results[0].id == "q0" and ready and info.backend == "toy"
    assert elapsed >= 0.4
    assert srv.stats()["actions"] == ["503", "drop", "ok"]

    srv.configure(script=[{"status": 401, "code": "unauthorized", "message": "no key"}])

    async def denied():
        async with AsyncRewardClient(srv.url, **FAST) as client:
            await client.score(make_items(1))

    with pytest.raises(RewardServiceHTTPError, match="no key"):
        asyncio.run(denied())

    srv.configure(script=[{"sleep": 3}])

    async def slow():
        async with AsyncRewardClient(srv.url, timeout_s=0.5, max_retries=2) as client:
            await client.score(make_items(1))

    with pytest.raises(RewardServiceTimeout):
        asyncio.run(slow())

    async def unreachable():
        async with AsyncRewardClient(f"http://127.0.0.1:{free_port()}", max_retries=1, **FAST) as client:
            assert await client.ready() is False
            await client.score(make_items(1))

    with pytest.raises(RewardServiceConnectionError):
        asyncio.run(unreachable())


def test_async_client_shares_the_patience_policy(srv: FlakyServer) -> None:
    srv.configure(script=[{"status": 504}, {"status": 503, "retry_after": 0.2}])

    async def retried():
        async with AsyncRewardClient(srv.url, **FAST) as client:
            return await client.score(make_items(1))

    assert asyncio.run(retried()).results[0].id == "q0"
    assert srv.stats()["actions"] == ["504", "503", "ok"]

    async def spent():
        url = f"http://127.0.0.1:{free_port()}"
        async with AsyncRewardClient(url, patience_s=0.5, backoff_base_s=0.05, backoff_max_s=0.1, seed=0) as client:
            await client.score(make_items(1))

    start = time.monotonic()
    with pytest.raises(RewardServiceConnectionError, match=r"patience 0.5s"):
        asyncio.run(spent())
    assert time.monotonic() - start >= 0.5


# ------------------------------------------------------------------------------------ pure helpers


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)


def test_backoff_delay_full_jitter_and_retry_after() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(3, base_s=0.5, max_s=30.0, rng=rng) for _ in range(500)]
    assert all(0.0 <= d <= 4.0 for d in delays) and max(delays) > 3.0 and min(delays) < 1.0
    assert all(backoff_delay(20, base_s=0.5, max_s=2.0, rng=rng) <= 2.0 for _ in range(100))
    assert all(backoff_delay(0, base_s=0.5, max_s=30.0, retry_after=5.0, rng=rng) >= 5.0 for _ in range(50))


def test_split_batches_and_url_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    items = make_items(5)
    assert [[i.id for i in b] for b in split_batches(items, 2)] == [["q0", "q1"], ["q2", "q3"], ["q4"]]
    with pytest.raises(ValueError):
        split_batches(items, 0)
    monkeypatch.delenv("REGIME_W_URL", raising=False)
    assert resolve_base_url(None) == "http://127.0.0.1:8000"
    monkeypatch.setenv("REGIME_W_URL", "http://reward.internal:9000/")
    assert resolve_base_url(None) == "http://reward.internal:9000"
    assert resolve_base_url("https://x.example") == "https://x.example"
    with pytest.raises(RewardServiceError, match="http"):
        resolve_base_url("reward.internal:9000")


# ------------------------------------------------------------------- arm precompute (real service)


@pytest.fixture(scope="module")
def service_spec():
    """``live_service`` here: hf backend on the tiny model, short arms, this module's key."""
    from tests.support.servers import ServiceSpec

    return ServiceSpec("hf", api_key="precompute-key-0123456789", max_tokens=4)


@pytest.fixture(scope="module")
def arm_service(live_service):
    return live_service


def test_precompute_fills_the_real_service_cache(arm_service) -> None:
    q1, q2, q3 = (
        "A bag has 3 apples. How many in 4 bags?",
        "Tom has 9 pens and gives 2 away. How many left?",
        "What is 12 divided by 4?",
    )
    with RewardClient(arm_service.url, api_key="precompute-key-0123456789", **FAST) as client:
        first = client.precompute([q1, q2, q1], chunk_size=1)  # deduplicated: two requests of one question
        assert first.model_dump() == {"questions": 2, "generated": 2, "already_cached": 0}
        again = client.precompute([q2, q1])
        assert again.model_dump() == {"questions": 2, "generated": 0, "already_cached": 2}
        response = client.score([ScoreItem(id="a", question=q1, gold_answer="12", trajectories=["3*4=12 #### 12"])])
        assert response.results[0].arms_from_cache is True  # scoring a precomputed question generates nothing
        assert client.precompute([]).model_dump() == {"questions": 0, "generated": 0, "already_cached": 0}
        with pytest.raises(ValueError, match=r"questions\[1\]"):
            client.precompute([q1, "  "])
        with pytest.raises(TypeError):
            client.precompute(q1)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="chunk_size"):
            client.precompute([q1], chunk_size=0)

    async def go():
        async with AsyncRewardClient(arm_service.url, api_key="precompute-key-0123456789", **FAST) as client:
            return await client.precompute([q3, q1], chunk_size=1)

    assert asyncio.run(go()).model_dump() == {"questions": 2, "generated": 1, "already_cached": 1}

    with RewardClient(arm_service.url, api_key="wrong-key-0123456789", **FAST) as client:
        with pytest.raises(RewardServiceHTTPError) as info:
            client.precompute([q1])
    assert info.value.status == 401


class _SlowPrecomputeServer:
    """A small uvicorn server on loopback with ``POST /v1/arms/precompute``: the first request of each
    question answers late (like a long generation that goes on after the client gave up); its
    answers can be made inconsistent to check the client's protocol check."""

    def __init__(self) -> None:
        import threading

        import uvicorn
        from fastapi import FastAPI

        self.seen: list[list[str]] = []
        self.lie = False
        app = FastAPI()

        @app.post("/v1/arms/precompute")
        async def precompute(body: dict) -> dict:  # a plain JSON body (annotations are strings here)
            questions = body["questions"]
            fresh = [q for q in questions if all(q not in s for s in self.seen)]
            self.seen.append(questions)
            if fresh:
                await asyncio.sleep(3.0)
            n = len(questions) + (1 if self.lie else 0)
            return {"questions": n, "generated": len(fresh), "already_cached": n - len(fresh)}

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "precompute test server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def test_precompute_retries_a_timed_out_chunk_and_checks_counts() -> None:
    server = _SlowPrecomputeServer()
    try:
        with RewardClient(server.url, timeout_s=1.0, max_retries=3, backoff_base_s=0.01, backoff_max_s=0.02) as client:
            result = client.precompute(["q one", "q two"])
            # the first try timed out; the retry found the chunk done (here: "cached")
            assert len(server.seen) >= 2 and all(s == ["q one", "q two"] for s in server.seen)
            assert result.model_dump() == {"questions": 2, "generated": 0, "already_cached": 2}
        with RewardClient(server.url, timeout_s=1.0, max_retries=0, backoff_base_s=0.01) as client:
            with pytest.raises(RewardServiceTimeout):
                client.precompute(["q three"])  # no retries left
            server.lie = True
            with pytest.raises(RewardServiceProtocolError, match="distinct questions"):
                client.precompute(["q one"])
    finally:
        server.stop()
