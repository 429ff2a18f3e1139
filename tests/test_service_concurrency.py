"""The service under many callers (issue 22 item 2): no request stalls the others.

- a question whose upstream arm-model call hangs holds one generation slot only: another question is
  generated and answered while the first is still hanging (a live ``regime-w-serve`` on the
  ``openai`` backend, the OpenAI-compatible test server holding the first question's completions);
- a dense ``/v1/score`` (client arms dense with equations) and a cache lookup leave the event loop
  free while they are worked on: the loop turns while the work is in flight (ordering, no clock);
- ``/get_reward`` looks its questions up in a worker thread, not on the event loop.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reward_service.arm_cache import cache_key
from reward_service.arms import ArmProvider
from reward_service.limits import OFFLINE_LIMITS
from reward_service.regime_w.config import default_config, load_config
from reward_service.regime_w.scorer import ArmText
from reward_service.runtime import Runtime
from reward_service.settings import Settings
from shared_schemas.wire import ScoreRequest
from tests.support.inprocess import InProcessService
from tests.support.limits import wait_for
from tests.support.openai_compat_server import control, running_server, stats
from tests.support.servers import ServiceSpec, start_live_service
from tests.support.service_config import small_service_config

KEY = "concurrency-test-key-0123456789"
UPSTREAM_KEY = "upstream-key"
SERVED = "tiny-llama"
HUNG_MARKER = "Hangs-upstream-7391"
ARMS = default_config().arm_names
#: hang guards: far above any honest run time of what they wait for (a 3-token arm of the tiny model)
GUARD_S = 240.0


def item(question: str) -> dict:
    return {"id": "q", "question": question, "trajectories": ["3*4 = 12\n#### 12"], "num_tokens": [6]}


@pytest.fixture(scope="module")
def upstream(tiny_model_dir: Path) -> Iterator[str]:
    with running_server(tiny_model_dir, "--api-key", UPSTREAM_KEY, "--served-model-name", SERVED) as base_url:
        yield base_url


def test_a_hung_upstream_call_holds_one_slot_and_other_questions_are_served(upstream: str, tmp_path: Path) -> None:
    spec = ServiceSpec(
        "provided",
        api_key=KEY,
        max_tokens=3,
        env={
            "REGIME_W_BACKEND": "openai",
            "REGIME_W_OPENAI_BASE_URL": upstream,
            "REGIME_W_OPENAI_API_KEY": UPSTREAM_KEY,
            "REGIME_W_MODEL": SERVED,
            "REGIME_W_GENERATION_BATCH_WINDOW_MS": "0",
            # the deadlines are hang guards here: the hung call is released by the test, never timed out
            "REGIME_W_GENERATION_TIMEOUT_S": "300",
            "REGIME_W_BACKEND_TIMEOUT_S": "290",
        },  # GENERATION_CONCURRENCY left at the openai default
    )
    control(upstream, hang_on=HUNG_MARKER, fail_first=0, delay=0.0, content_override=[])
    results: dict[str, httpx.Response] = {}

    def score(name: str, question: str) -> None:
        results[name] = httpx.post(
            service.url + "/v1/score", json={"items": [item(question)]}, headers=service.headers, timeout=600
        )

    hung_question = f"{HUNG_MARKER}: Ava has 2 bags of 5 pens. How many?"
    with start_live_service(spec, tmp_path) as service:
        hung = threading.Thread(target=score, args=("hung", hung_question))
        other = threading.Thread(target=score, args=("other", "Ava has 3 boxes of 4 pens. How many pens?"))
        again = threading.Thread(target=score, args=("again", hung_question))  # the hung question once more
        try:
            hung.start()
            wait_for(lambda: stats(upstream)["hanging"] >= 1, "the first question's upstream call hangs")
            other.start()
            other.join(GUARD_S)
            other_done_first = not other.is_alive()
            still_hanging = stats(upstream)["hanging"] >= 1 and hung.is_alive()
            again.start()  # joins the generation in flight (one generation per question, slots or not)
            wait_for(lambda: metric(service.url, "regime_w_arm_inflight_joins_total") >= 1, "the repeat joined")
        finally:
            control(upstream, hang_on="")  # release the hung call
            for thread in (hung, other, again):
                thread.join(GUARD_S)
        generated = metric(service.url, "regime_w_arm_generations_total")
    assert other_done_first and still_hanging, "the second question waited for the hung call"
    assert results["other"].status_code == 200, results["other"].text
    assert results["other"].json()["results"][0]["arms_from_cache"] is False
    assert results["hung"].status_code == 200, results["hung"].text  # released: generated after all
    assert results["again"].status_code == 200 and results["again"].json()["results"][0]["arms_from_cache"] is False
    per_question = sum(spec.n for spec in load_config(small_service_config(tmp_path, max_tokens=3)).arms)
    assert generated == 2 * per_question, (generated, per_question)  # two questions, each generated once


def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# ----------------------------------------------------------------- the event loop stays free


def dense_text(rnd: random.Random, chars: int) -> str:
    parts, n = [], 0
    while n < chars:
        x, y = rnd.randint(1, 99_999), rnd.randint(1, 99_999)
        parts.append(f"{x} + {y} = {x + y}. ")
        n += len(parts[-1])
    return "".join(parts)[:chars] + "\n#### 72"


def dense_request(items: int, chars: int) -> ScoreRequest:
    rnd = random.Random(0)
    return ScoreRequest.model_validate(
        {
            "items": [
                {
                    "id": f"dense-{i}",
                    "question": f"Question {i}: Ann has 70 apples and buys 2 more. How many?",
                    "gold_answer": "72",
                    "trajectories": [dense_text(rnd, chars)],
                    "num_tokens": [chars // 4],
                    "arm_outputs": [{"arm": a, "text": dense_text(rnd, chars)} for a in ARMS],
                }
                for i in range(items)
            ]
        }
    )


async def loop_turns_while(work: asyncio.Future | asyncio.Task) -> tuple[bool, int]:  # type: ignore[type-arg]
    """(was the work still in flight after the loop's first turn, loop turns until it was done)."""
    await asyncio.sleep(0)  # the work's task starts: if it runs on the loop, it runs to its end here
    in_flight = not work.done()
    turns = 0
    while not work.done():
        turns += 1
        await asyncio.sleep(0)
    return in_flight, turns


def test_dense_scoring_and_cached_lookups_leave_the_event_loop_free() -> None:
    settings = Settings(insecure_no_auth=True, backend="provided", cache_path="none")
    request = dense_request(items=4, chars=20_000)

    async def run() -> tuple[tuple[bool, int], tuple[bool, int], int]:
        async with Runtime.running(settings, limits=OFFLINE_LIMITS) as runtime:
            scored = asyncio.ensure_future(runtime.scoring.score(request))
            dense = await loop_turns_while(scored)
            assert len((await scored).results) == 4
            # cached arms of questions the index knows: ArmProvider.get's lookups
            config, provider = runtime.config, runtime.provider
            questions = [f"Question {i}: what is {i} + 2?" for i in range(64)]
            arms = tuple(ArmText(arm=a, text=f"#### {i + 2}") for i, a in enumerate(ARMS))
            runtime.cache.put_many(
                (cache_key(provider.model_id, config.fingerprint, q), provider.model_id, config.fingerprint, arms)
                for q in questions
            )
            provider.questions.add_many(questions)
            got = asyncio.ensure_future(provider.get(questions))
            lookup = await loop_turns_while(got)
            hits = sum(arms.from_cache for arms in await got)
            return dense, lookup, hits

    dense, lookup, hits = asyncio.run(run())
    assert hits == 64
    assert dense[0] and dense[1] >= 2, f"the dense request was scored on the event loop (turns: {dense[1]})"
    assert lookup[0], "the cache lookups ran on the event loop"


def test_get_reward_finds_its_questions_off_the_event_loop(
    upstream: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/get_reward`` plans its groups (question found in each prompt: cache reads and index searches)
    in a worker thread: a spy around ``ArmProvider.resolve`` (it calls the real one) records where."""
    control(upstream, hang_on="", fail_first=0, delay=0.0, content_override=[])
    on_loop: list[bool] = []
    resolve = ArmProvider.resolve

    def spy(self: ArmProvider, question: str) -> str:
        on_loop.append(threading.current_thread() is threading.main_thread())
        return resolve(self, question)

    monkeypatch.setattr(ArmProvider, "resolve", spy)
    settings = Settings(
        insecure_no_auth=True,
        backend="openai",
        openai_base_url=upstream,
        openai_api_key=UPSTREAM_KEY,
        model=SERVED,
        config_path=small_service_config(tmp_path, max_tokens=3),
        cache_path="none",
        generation_batch_window_ms=0,
    )
    prompt = "Question: Ava has 3 boxes of 4 pens. How many pens?\nAnswer:"
    body = {
        "query": [prompt + " 3*4 = 12. #### 12", prompt + " #### 11"],
        "prompts": [prompt] * 2,
        "labels": ["12"] * 2,
    }
    with InProcessService(settings) as svc:  # its event loop runs in this (the main) thread
        r = svc.post("/get_reward", json=body)
    assert r.status_code == 200, r.text
    assert on_loop and not any(on_loop), f"{sum(on_loop)} of {len(on_loop)} lookups ran on the event loop"


def test_an_openai_call_keeps_to_its_share_of_the_connections(upstream: str) -> None:
    """``OPENAI_MAX_CONCURRENCY`` 4 over 2 concurrent calls: a call of 4 requests that all hang keeps
    2 in flight, so the other call's request still gets a thread and a connection."""
    from reward_service.generation import ArmPrompt
    from reward_service.generation.openai import OpenAIBackend

    def prompt(text: str) -> ArmPrompt:
        return ArmPrompt(arm="cot_greedy", messages=(("user", text),), temperature=0.0, top_p=1.0, max_tokens=3, seed=0)

    control(upstream, hang_on=HUNG_MARKER, fail_first=0, delay=0.0, content_override=[])
    backend = OpenAIBackend(
        upstream, model=SERVED, api_key=UPSTREAM_KEY, timeout_s=280, max_concurrency=4, concurrent_calls=2
    )
    out: dict[str, list[str]] = {}
    hung = threading.Thread(
        target=lambda: out.setdefault(
            "hung", backend.generate([prompt(f"{HUNG_MARKER} {i}: 1 + {i}?") for i in range(4)])
        )
    )
    other = threading.Thread(target=lambda: out.setdefault("other", backend.generate([prompt("What is 2 + 2?")])))
    try:
        hung.start()
        wait_for(lambda: stats(upstream)["hanging"] >= 2, "the first call's requests hang")
        other.start()
        other.join(GUARD_S)
        other_done_first = not other.is_alive()
        in_flight = stats(upstream)["hanging"]
    finally:
        control(upstream, hang_on="")
        hung.join(GUARD_S)
        other.join(GUARD_S)
        backend.close()
    assert other_done_first, "the other call waited for a thread the hung call held"
    assert in_flight == 2, in_flight  # the hung call's share: 4 // 2
    assert len(out["other"]) == 1 and len(out["hung"]) == 4
