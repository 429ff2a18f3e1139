"""The integrations' shared core (no framework needed): settings from the environment, and the
coalescers that turn per-sample calls into few HTTP requests, against the loopback test server."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.support.flaky_server import FlakyServer
from trainer.configs import RewardServiceArguments
from trainer.integrations.core import AsyncCoalescer, IntegrationError, IntegrationSettings, Sample, SyncCoalescer
from trainer.reward_client import ClientSettings, RewardServiceHTTPError
from trainer.rewards import ServiceScorer

Q = "Tom has 3 apples and buys 4 more. How many apples?"


@pytest.fixture
def srv(srv: FlakyServer, monkeypatch: pytest.MonkeyPatch) -> FlakyServer:
    """The shared flaky server (tests/support/flaky_server.py), named by ``REGIME_W_URL``."""
    monkeypatch.setenv("REGIME_W_URL", srv.url)
    return srv


def sample(text: str, gold: str | None = "7") -> Sample:
    return Sample(question=Q, response=text, gold=gold)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIME_W_LABEL_FREE", "true")
    monkeypatch.setenv("REGIME_W_COALESCE_MS", "5")
    monkeypatch.setenv("REGIME_W_PATIENCE_S", "30")
    settings = IntegrationSettings.from_env()
    assert settings.label_free and settings.coalesce_ms == 5.0
    assert settings.client_kwargs()["patience_s"] == 30.0
    monkeypatch.setenv("REGIME_W_LABEL_FREE", "maybe")
    with pytest.raises(IntegrationError, match="REGIME_W_LABEL_FREE"):
        IntegrationSettings.from_env()


def test_the_client_defaults_come_from_the_client_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """One source (trainer/reward_client/settings.py) for the recipes, the TRL rewards and the integrations;
    the REGIME_W_* variables still override them."""
    client = ClientSettings()
    for name in ("REGIME_W_BATCH_ITEMS", "REGIME_W_TIMEOUT_S", "REGIME_W_PATIENCE_S"):
        monkeypatch.delenv(name, raising=False)
    settings = IntegrationSettings.from_env()
    assert (settings.batch_items, settings.timeout_s) == (client.batch_items, client.timeout_s) == (32, 120.0)
    recipe = RewardServiceArguments()
    assert (recipe.reward_batch_items, recipe.reward_timeout_s) == (client.batch_items, client.timeout_s)
    assert recipe.reward_patience_s == client.patience_s
    scorer = SyncCoalescer(settings).scorer
    assert isinstance(scorer, ServiceScorer) and scorer.client.settings.patience_s == client.patience_s
    scorer.close()

    monkeypatch.setenv("REGIME_W_BATCH_ITEMS", "256")
    monkeypatch.setenv("REGIME_W_TIMEOUT_S", "300")
    monkeypatch.setenv("REGIME_W_PATIENCE_S", "30")
    with SyncCoalescer(IntegrationSettings.from_env()).scorer as scorer:
        assert isinstance(scorer, ServiceScorer)
        assert (scorer.client.batch_items, scorer.client.timeout_s, scorer.client.patience_s) == (256, 300.0, 30.0)


def test_sequential_calls_are_sent_at_once_one_request_each(srv: FlakyServer) -> None:
    coalescer = SyncCoalescer(IntegrationSettings(coalesce_ms=5000))  # a wait would show as 5 s per call
    for text in ("#### 7", "#### 8", "#### 9"):
        [score] = coalescer.score([sample(text)])
        assert score.reward == len(text)
    assert coalescer.requests == 3 and srv.stats()["score_requests"] == 3
    coalescer.close()


def test_a_burst_of_threads_shares_requests(srv: FlakyServer) -> None:
    coalescer = SyncCoalescer(IntegrationSettings(coalesce_ms=30_000, coalesce_max=16))
    results: dict[int, float] = {}

    def burst() -> None:
        def one(i: int) -> None:
            [score] = coalescer.score([sample("x" * (i + 1))])
            results[i] = score.reward

        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == {i: float(i + 1) for i in range(16)}

    # burst 1: the first caller goes at once (its request answered after 2 s); the 15 that queue
    # behind it go out together as the next request
    srv.configure(script=[{"sleep": 2.0}])
    burst()
    assert srv.stats()["score_requests"] == 2 and coalescer.last_callers == 15 and coalescer.concurrency_seen
    # burst 2: concurrency seen, the sender waits for the burst (sent when all 16 wait, not after 30 s)
    results.clear()
    burst()
    assert srv.stats()["score_requests"] == 3 and coalescer.last_callers == 16
    coalescer.close()


def test_an_error_reaches_every_waiting_caller(srv: FlakyServer) -> None:
    srv.configure(default={"status": 400, "code": "bad", "message": "no"})
    coalescer = SyncCoalescer(IntegrationSettings())
    errors: list[BaseException] = []

    def one() -> None:
        try:
            coalescer.score([sample("#### 7")])
        except RewardServiceHTTPError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(errors) == 6
    coalescer.close()


def test_async_calls_of_one_loop_share_a_request(srv: FlakyServer) -> None:
    coalescer = AsyncCoalescer(IntegrationSettings(label_free=True))

    async def burst() -> list[float]:
        scores = await asyncio.gather(*[coalescer.score([sample("y" * (i + 1))]) for i in range(12)])
        await coalescer.aclose()
        return [s.reward for [s] in scores]

    assert asyncio.run(burst()) == [float(i + 1) for i in range(12)]
    assert srv.stats()["score_requests"] == 2  # the first coroutine alone, then the eleven queued behind it
    assert srv.stats()["items_per_request"] == [1, 1]  # one question: one item per request
