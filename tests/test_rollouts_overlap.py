"""Stage ``rollouts`` scores while it generates, and asks for arms ahead (issue 26 item 1).

A live ``regime-w-serve`` on the ``openai`` backend generates its arms through the OpenAI-compatible
test server (the tiny model), whose ``hang_on`` switch holds the arm calls of one question until the
test releases them. The stage runs in process on the tiny policy; ``trainer.generation.generate_texts``
is wrapped by an observer that calls the real function (and, in one test, waits for a condition
before a chunk generates). Every wait is on an event, never on a clock; the guards only end a hang.

- while chunk 0's scoring hangs, chunks 1 and 2 generate, and no more (2 chunks in flight), nothing is
  written until chunk 0 is scored; the file then holds every question once, in order, equal to a run
  that scores each chunk before generating the next;
- the arms of chunk 1 are asked for (precompute) before chunk 1 generates;
- a scoring failure stops the run and no later chunk is written, though it was generated.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import trainer.generation as generation
from tests.support.openai_compat_server import control, running_server
from tests.support.servers import ServerProcess, ServiceSpec, start_live_service
from trainer.configs import DataArguments, ModelArguments, RewardServiceArguments
from trainer.data import load_train_dev
from trainer.stages.rollouts import RolloutArguments, RolloutsStopped, run

UPSTREAM_KEY = "upstream-key"
SERVED = "tiny-llama"
GUARD_S = 240.0  # hang guard: far above any honest wait here (tiny-model generations of a few tokens)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = GUARD_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"hang guard ({timeout:.0f} s) passed: {what}")


@pytest.fixture(scope="module")
def upstream(tiny_model_dir: Path) -> Iterator[str]:
    with running_server(tiny_model_dir, "--api-key", UPSTREAM_KEY, "--served-model-name", SERVED) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def service(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    spec = ServiceSpec(
        "provided",
        api_key=None,
        max_tokens=3,
        env={
            "REGIME_W_BACKEND": "openai",
            "REGIME_W_OPENAI_BASE_URL": upstream,
            "REGIME_W_OPENAI_API_KEY": UPSTREAM_KEY,
            "REGIME_W_MODEL": SERVED,
            "REGIME_W_GENERATION_BATCH_WINDOW_MS": "0",
            # hang guards: a held call is released by the test, never timed out
            "REGIME_W_GENERATION_TIMEOUT_S": "300",
            "REGIME_W_BACKEND_TIMEOUT_S": "290",
        },
    )
    with start_live_service(spec, tmp_path_factory.mktemp("overlap-service")) as server:
        yield server


def hanging(base_url: str) -> int:
    return int(httpx.get(base_url.removesuffix("/v1") + "/_control/stats", timeout=30).json()["hanging"])


def marker(tag: str, i: int) -> str:
    return f"[{tag}-{i}]"


def setup_data(workdir: Path, tag: str, questions: int) -> tuple[DataArguments, list[Any]]:
    """A train file whose questions carry unique markers; the train order the stage will use."""
    rows = [
        {
            "question": f"{marker(tag, i)} Tom has {10 + i} apples and buys {i + 1} more. How many apples now?",
            "answer": f"{10 + i}+{i + 1}={11 + 2 * i}\n#### {11 + 2 * i}",
        }
        for i in range(questions + 4)
    ]
    (workdir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data_args = DataArguments(
        dataset=str(workdir / "train.jsonl"),
        split_file=str(workdir / "split.json"),
        dev_fraction=0.2,
        max_train_samples=questions,
    )
    train, _ = load_train_dev(data_args)  # writes the split file the stage then reuses
    return data_args, train


def marker_of(problem: Any) -> str:
    return problem.question.split(" ", 1)[0]


def rollout_args(path: Path, **values: Any) -> RolloutArguments:
    # one question per chunk (2 samples a question, 2 sequences a generate call): many chunks
    return RolloutArguments(
        rollouts_file=str(path),
        num_samples=2,
        max_new_tokens=8,
        generation_batch_size=2,
        progress=False,
        **values,
    )


class Observer:
    """Wraps ``generate_texts``: counts the chunks generated; ``before(i)`` runs before chunk ``i``."""

    def __init__(self, before: Callable[[int], None] | None = None) -> None:
        self.real = generation.generate_texts
        self.calls = 0
        self.before = before

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.before is not None:
            self.before(self.calls)
        out = self.real(*args, **kwargs)
        self.calls += 1
        return out


def in_thread(fn: Callable[[], dict[str, Any]]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["summary"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    data = path.read_bytes()
    return [json.loads(x) for x in data[: data.rfind(b"\n") + 1].splitlines()]


def test_chunks_generate_while_an_earlier_chunk_is_scored(service, upstream, tiny_model_dir, tmp_path, monkeypatch):
    data_args, train = setup_data(tmp_path, "overlap", questions=4)
    observer = Observer()
    monkeypatch.setattr(generation, "generate_texts", observer)
    model_args = ModelArguments(model_name_or_path=str(tiny_model_dir), quantization="none")
    reward_args = RewardServiceArguments(reward_url=service.url, reward_timeout_s=290)
    out = tmp_path / "overlap.jsonl"
    args = rollout_args(out, scoring_in_flight=2, precompute_arms_ahead=0)

    control(upstream, hang_on=marker_of(train[0]), fail_first=0, delay=0.0, content_override=[])
    try:
        thread, box = in_thread(lambda: run(model_args, data_args, reward_args, args))
        wait_for(lambda: observer.calls >= 3 and hanging(upstream) >= 1, "chunks 1 and 2 generated while 0 hangs")
        calls_while_hung, written_while_hung = observer.calls, lines(out)
    finally:
        control(upstream, hang_on="")
    thread.join(GUARD_S)
    assert not thread.is_alive()
    assert "error" not in box, box.get("error")
    summary = box["summary"]

    assert calls_while_hung == 3, "generation ran more than 2 chunks ahead of the chunk being scored"
    assert written_while_hung == [], "a chunk was written before the chunk ahead of it was scored"
    assert summary["written"] == 4 and observer.calls == 4
    assert summary["timing"]["max_scoring_in_flight"] == 2
    assert summary["arms_precompute"] is None
    records = lines(out)
    assert [r["id"] for r in records] == [p.id for p in train], "chunks written in order, each once"

    # The same run scoring each chunk before generating the next gives the same records.
    sequential = tmp_path / "sequential.jsonl"
    again = run(
        model_args, data_args, reward_args, rollout_args(sequential, scoring_in_flight=0, precompute_arms_ahead=0)
    )
    assert again["timing"]["max_scoring_in_flight"] == 1
    assert lines(sequential) == records


def test_arms_of_the_next_chunk_are_asked_for_before_it_generates(
    service, upstream, tiny_model_dir, tmp_path, monkeypatch
):
    data_args, train = setup_data(tmp_path, "ahead", questions=4)

    def before(chunk: int) -> None:
        if chunk == 1:  # chunk 1's arms must already be on their way: the held call shows it
            wait_for(lambda: hanging(upstream) >= 1, "chunk 1's arms were asked for before chunk 1 generated")
            control(upstream, hang_on="")

    monkeypatch.setattr(generation, "generate_texts", Observer(before))
    control(upstream, hang_on=marker_of(train[1]), fail_first=0, delay=0.0, content_override=[])
    try:
        summary = run(
            ModelArguments(model_name_or_path=str(tiny_model_dir), quantization="none"),
            data_args,
            RewardServiceArguments(reward_url=service.url, reward_timeout_s=290),
            rollout_args(tmp_path / "ahead.jsonl", scoring_in_flight=2, precompute_arms_ahead=2),
        )
    finally:
        control(upstream, hang_on="")
    stats = summary["arms_precompute"]
    assert stats["failed"] is None
    assert stats["questions"] == 4 and stats["requests"] == 4
    assert stats["generated"] + stats["already_cached"] == 4
    assert [r["id"] for r in lines(tmp_path / "ahead.jsonl")] == [p.id for p in train]


def test_a_scoring_failure_stops_and_no_later_chunk_is_written(
    service, upstream, tiny_model_dir, tmp_path, monkeypatch
):
    data_args, train = setup_data(tmp_path, "fail", questions=3)
    control(upstream, hang_on=marker_of(train[1]), fail_first=0, delay=0.0, content_override=[])
    try:
        # chunk 1's scoring hangs past the client's read timeout (never retried for scoring): the run stops
        with pytest.raises(RolloutsStopped, match=r"1 of 3 questions are saved"):
            run(
                ModelArguments(model_name_or_path=str(tiny_model_dir), quantization="none"),
                data_args,
                RewardServiceArguments(reward_url=service.url, reward_timeout_s=3, reward_max_retries=0),
                rollout_args(tmp_path / "fail.jsonl", scoring_in_flight=2, precompute_arms_ahead=0),
            )
    finally:
        control(upstream, hang_on="")
    assert [r["id"] for r in lines(tmp_path / "fail.jsonl")] == [train[0].id]
