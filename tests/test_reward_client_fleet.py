"""Several service URLs behind one reward client (issue 23 item 4): requests spread round robin over
real ``regime-w-serve`` replicas on loopback; one stopped mid-run, or never up, or answering 503, is
passed over and every request is still scored. And the same through the framework files, which build
their client from ``REGIME_W_URL``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from shared_schemas.wire import ScoreItem
from tests.support.flaky_server import FlakyServer, start_flaky_server
from tests.support.servers import ServerProcess, ServiceSpec, free_port, start_live_service
from trainer.reward_client import AsyncRewardClient, ClientSettings, RewardClient, RewardServiceConnectionError
from trainer.reward_client.endpoints import Endpoints, split_urls

ROOT = Path(__file__).resolve().parents[1]
ITEMS = [ScoreItem.model_validate(i) for i in json.loads((ROOT / "examples" / "batch.json").read_text())["items"]]
FAST = dict(backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=60.0, seed=0)


def scored(url: str) -> int:
    """``POST /v1/score`` requests the service answered 200 (its own ``/metrics``)."""
    text = httpx.get(url + "/metrics").text
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("regime_w_requests_total{") and 'route="/v1/score"' in line and 'status="200"' in line
        )
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    """Three keyed replicas (backend ``provided``: the arm texts come with the batch)."""
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                start_live_service(ServiceSpec(backend="provided"), tmp_path_factory.mktemp(f"replica{i}"))
            )
            for i in range(3)
        ]


def expected_ids(n: int) -> list[list[str]]:
    return [[ITEMS[i % len(ITEMS)].id] for i in range(n)]


# ------------------------------------------------------------------------------ pure: which URL next


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_split_urls_strips_and_drops_duplicates() -> None:
    assert split_urls(" http://a:1/ , http://b:2,,http://a:1") == ("http://a:1", "http://b:2")
    settings = ClientSettings(base_url="http://a:1/,http://b:2")
    assert settings.urls == ("http://a:1", "http://b:2") and settings.base_url == "http://a:1,http://b:2"
    assert ClientSettings(base_url="http://a:1/").urls == ("http://a:1",)


def test_endpoints_round_robin_and_skip_what_is_down() -> None:
    clock = Clock()
    ends = Endpoints(["a", "b", "c"], down_for_s=30.0, clock=clock)
    assert [ends.pick() for _ in range(4)] == ["a", "b", "c", "a"]
    ends.mark_down("b")
    assert [ends.pick() for _ in range(3)] == ["c", "a", "c"] and ends.down() == ["b"]
    ends.mark_down("c", retry_after=120.0)  # a longer Retry-After wins over down_for_s
    clock.now += 31.0  # b is back, c is not
    assert [ends.pick() for _ in range(3)] == ["a", "b", "a"] and ends.down() == ["c"]
    ends.mark_down("a")
    ends.mark_down("b")
    # all down: a and b are back at 131 + 30 = 161, c at 100 + 120 = 220: the first of the earliest
    assert not ends.any_up() and ends.pick() == "a"
    clock.now += 30.0  # 161
    assert ends.any_up() and ends.down() == ["c"]
    ends.mark_up("c")
    assert ends.down() == [] and sorted(ends.pick() for _ in range(3)) == ["a", "b", "c"]


# ------------------------------------------------------------------------- real replicas on loopback


def test_requests_spread_over_the_replicas_and_survive_one_stopped_mid_run(fleet: list[ServerProcess]) -> None:
    key = fleet[0].api_key
    down_url = f"http://127.0.0.1:{free_port()}"  # nothing ever listens there
    urls = [s.url for s in fleet] + [down_url]
    before = [scored(s.url) for s in fleet]
    results = []
    with RewardClient(",".join(urls), api_key=key, batch_items=1, **FAST) as client:
        for i in range(12):
            results.append(client.score([ITEMS[i % len(ITEMS)]]))
        assert down_url in client.endpoints.down()  # refused once, then passed over
        after_first = [scored(s.url) for s in fleet]
        assert all(a - b >= 3 for a, b in zip(after_first, before)), (before, after_first)  # spread over all three
        fleet[1].stop()  # replica 1 goes away mid-run
        for i in range(12, 24):
            results.append(client.score([ITEMS[i % len(ITEMS)]]))
    assert [[r.id for r in res.results] for res in results] == expected_ids(24)  # none lost, in order
    assert all(len(res.results[0].scores) == len(ITEMS[i % len(ITEMS)].trajectories) for i, res in enumerate(results))
    alive = [fleet[0], fleet[2]]
    total = sum(scored(s.url) for s in alive) - sum(after_first[i] for i in (0, 2))
    assert total == 12  # the second half was scored by the two replicas left, each request once


def test_async_client_moves_on_when_a_replica_dies_with_requests_in_flight(
    tmp_path: Path, fleet: list[ServerProcess]
) -> None:
    """A replica stopped while the async client's batches are in flight: every batch is scored."""
    with start_live_service(ServiceSpec(backend="provided"), tmp_path) as doomed:
        urls = ",".join([doomed.url, fleet[0].url, fleet[2].url])

        async def run() -> list[str]:
            async with AsyncRewardClient(urls, api_key=fleet[0].api_key, batch_items=1, **FAST) as client:
                first = await client.score(ITEMS)  # 6 batches, concurrently, over the three
                stopping = asyncio.get_running_loop().run_in_executor(None, doomed.stop)
                second = await asyncio.gather(*(client.score(ITEMS) for _ in range(4)))
                await stopping
                third = await client.score(ITEMS)  # doomed is gone for good now
                return [r.id for res in [first, *second, third] for r in res.results]

        ids = asyncio.run(run())
    assert ids == [i.id for i in ITEMS] * 6


def test_a_replica_answering_503_is_passed_over_at_once(fleet: list[ServerProcess]) -> None:
    """503 + ``Retry-After: 3600`` from one URL: the request moves on to the next URL without waiting
    the hour, and the URL stays passed over for that hour (one 503 seen in all)."""
    with start_flaky_server() as flaky:
        busy: FlakyServer = flaky
        busy.configure(default={"status": 503, "code": "overloaded", "retry_after": 3600})
        before = scored(fleet[0].url)
        with RewardClient(f"{busy.url},{fleet[0].url}", api_key=fleet[0].api_key, batch_items=1, **FAST) as client:
            results = [client.score([item]) for item in ITEMS]
        assert busy.stats()["score_requests"] == 1
    assert [r.results[0].id for r in results] == [i.id for i in ITEMS]
    assert scored(fleet[0].url) - before == len(ITEMS)


def test_all_replicas_down_is_one_clear_error_within_the_patience(fleet: list[ServerProcess]) -> None:
    urls = ",".join(f"http://127.0.0.1:{free_port()}" for _ in range(3))
    with RewardClient(urls, api_key=fleet[0].api_key, patience_s=0.3, **FAST) as client:
        with pytest.raises(RewardServiceConnectionError, match="could not reach the reward service"):
            client.score(ITEMS[:1])


def test_ready_is_true_when_any_replica_is_ready(fleet: list[ServerProcess]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with RewardClient(f"{dead},{fleet[0].url}", api_key=fleet[0].api_key) as client:
        assert client.ready()
    with RewardClient(dead, api_key=fleet[0].api_key) as client:
        assert not client.ready()


def test_the_framework_files_take_several_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """verl's function (and OpenRLHF's, through the same core) builds its client from ``REGIME_W_URL``:
    a list whose first URL is down scores every call on the next (the loopback test server)."""
    from trainer.integrations import verl_reward

    dead = f"http://127.0.0.1:{free_port()}"
    with start_flaky_server() as srv:
        monkeypatch.setenv("REGIME_W_URL", f"{dead},{srv.url}")
        monkeypatch.delenv("REGIME_W_API_KEY", raising=False)
        monkeypatch.delenv("REGIME_W_API_KEY_FILE", raising=False)
        verl_reward.reset()
        try:
            out = [verl_reward.compute_score("gsm8k", "#### 7", "7", {"question": "3 + 4?"}) for _ in range(4)]
        finally:
            verl_reward.reset()
        assert srv.stats()["score_requests"] == 4
    assert [o["correctness"] for o in out] == [1.0] * 4
