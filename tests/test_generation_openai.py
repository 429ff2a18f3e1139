"""The ``openai`` backend against a real OpenAI-compatible server (subprocess, loopback), plus
the backend factory and the ``provided`` / ``vllm`` backends' failure modes."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx
import pytest

from reward_service.generation import (
    ArmPrompt,
    BackendConfig,
    GenerationError,
    GenerationTimeout,
    create_backend,
)
from reward_service.generation.openai import OpenAIBackend, _choice_text
from tests.support.openai_compat_server import free_port, running_server

API_KEY = "test-key"
SERVED = "tiny-llama"


def arm(
    question: str,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_tokens: int = 5,
    seed: int = 0,
    name: str = "cot",
) -> ArmPrompt:
    return ArmPrompt(
        name, (("system", "Solve step by step."), ("user", question)), temperature, top_p, max_tokens, seed
    )


@pytest.fixture(scope="module")
def server(tiny_model_dir) -> Iterator[str]:
    with running_server(tiny_model_dir, "--api-key", API_KEY, "--served-model-name", SERVED) as base_url:
        yield base_url


class Control:
    def __init__(self, base_url: str) -> None:
        self.root = base_url.removesuffix("/v1")

    def set(self, **values: object) -> None:
        httpx.post(f"{self.root}/_control", json=values, timeout=5).raise_for_status()

    def completions(self) -> list[dict]:
        return httpx.get(f"{self.root}/_control/stats", timeout=5).json()["completions"]

    def max_active(self) -> int:
        return int(httpx.get(f"{self.root}/_control/stats", timeout=5).json()["max_active"])


@pytest.fixture
def control(server: str) -> Control:
    c = Control(server)
    c.set(fail_first=0, delay=0.0, retry_after=0.0, max_n=0, content_override=[], gather=0)
    return c


@pytest.fixture
def backend(server: str, control: Control) -> Iterator[OpenAIBackend]:
    b = OpenAIBackend(server, api_key=API_KEY, timeout_s=30, max_concurrency=8, backoff_s=0.01)
    yield b
    b.close()


def test_model_id_from_v1_models(backend: OpenAIBackend) -> None:
    assert backend.name == "openai"
    assert backend.model_id == SERVED


def test_create_backend_with_explicit_model(server: str, control: Control) -> None:
    b = create_backend(
        BackendConfig("openai", model=SERVED, openai_base_url=server + "/", openai_api_key=API_KEY, timeout_s=30)
    )
    try:
        assert b.model_id == SERVED
        assert b.count_tokens(["a b"]) is None
        assert len(b.generate([arm("Natalia sold 48 clips.")])) == 1
    finally:
        b.close()


def test_identical_prompts_go_in_one_request_with_n_and_order_is_kept(backend: OpenAIBackend, control: Control) -> None:
    a = [arm("Natalia sold 48 clips.", temperature=1.0, max_tokens=6, seed=s, name="a") for s in range(3)]
    b = [arm("Weng earns $12 an hour.", temperature=0.7, top_p=0.9, max_tokens=4, seed=s, name="b") for s in range(2)]
    c = arm("How many clips?", max_tokens=3, name="c")
    mixed = [a[0], b[0], a[1], c, b[1], a[2]]
    texts = backend.generate(mixed)
    assert len(texts) == len(mixed) and all(isinstance(t, str) for t in texts)
    assert sorted(r["n"] for r in control.completions()) == [1, 2, 3]
    # Each group alone gives the same texts, so the interleaving was undone correctly.
    assert backend.generate(a) == [texts[0], texts[2], texts[5]]
    assert backend.generate(b) == [texts[1], texts[4]]
    assert backend.generate([c]) == [texts[3]]


def test_server_that_caps_n_gets_the_missing_samples_one_by_one(backend: OpenAIBackend, control: Control) -> None:
    control.set(max_n=1)
    prompts = [arm("Natalia sold 48 clips.", temperature=1.0, max_tokens=6, seed=s) for s in range(3)]
    texts = backend.generate(prompts)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert [(r["n"], r["seed"]) for r in control.completions()] == [(3, 0), (1, 1), (1, 2)]


def test_sampling_params_are_sent(backend: OpenAIBackend, control: Control) -> None:
    backend.generate([arm("Natalia sold 48 clips.", temperature=0.3, max_tokens=7, seed=5)])
    [sent] = control.completions()
    assert sent == {"n": 1, "seed": 5, "max_tokens": 7, "temperature": 0.3}


def test_distinct_prompts_run_concurrently(backend: OpenAIBackend, control: Control) -> None:
    # the server holds each completion until 4 are in flight together (a barrier, no clock): sent one after
    # the other, they would never be
    control.set(gather=4)
    prompts = [arm(f"Question {k}: how many clips?", max_tokens=2) for k in range(4)]
    try:
        assert len(backend.generate(prompts)) == 4
        assert len(control.completions()) == 4
        assert control.max_active() == 4, "the 4 requests were not in flight together"
    finally:
        control.set(gather=0)


def test_retries_after_503(backend: OpenAIBackend, control: Control) -> None:
    control.set(fail_first=2)
    assert len(backend.generate([arm("Natalia sold 48 clips.")])) == 1
    assert len(control.completions()) == 3  # two 503s, then the answer


def test_gives_up_after_three_retries(backend: OpenAIBackend, control: Control) -> None:
    control.set(fail_first=10)
    with pytest.raises(GenerationError, match=r"failed after 4 attempts: HTTP 503") as info:
        backend.generate([arm("Natalia sold 48 clips.")])
    assert len(control.completions()) == 4
    assert info.value.transient  # the service answers 503 arm_model_unavailable + Retry-After


def test_retry_after_past_the_deadline_is_a_timeout(server: str, control: Control) -> None:
    control.set(fail_first=1, retry_after=5)
    b = OpenAIBackend(server, model=SERVED, api_key=API_KEY, timeout_s=1.0)
    try:
        with pytest.raises(GenerationTimeout, match="Retry|retry"):
            b.generate([arm("Natalia sold 48 clips.")])
    finally:
        b.close()


def test_slow_server_is_a_generation_timeout(server: str, control: Control) -> None:
    control.set(delay=60.0)  # the server would answer after 60 s: only the 0.5 s deadline can end the call
    b = OpenAIBackend(server, model=SERVED, api_key=API_KEY, timeout_s=0.5)
    try:
        with pytest.raises(GenerationTimeout):
            b.generate([arm("Natalia sold 48 clips.")])
    finally:
        b.close()


def test_unreachable_server_is_a_generation_error() -> None:
    b = OpenAIBackend(f"http://127.0.0.1:{free_port()}/v1", model=SERVED, timeout_s=10, backoff_s=0.01)
    try:
        with pytest.raises(GenerationError, match="after 4 attempts: ConnectError") as info:
            b.generate([arm("Natalia sold 48 clips.")])
        assert not isinstance(info.value, GenerationTimeout)
    finally:
        b.close()


def test_unreachable_server_without_model_fails_at_construction() -> None:
    with pytest.raises(GenerationError, match="ConnectError"):
        OpenAIBackend(f"http://127.0.0.1:{free_port()}/v1", timeout_s=5, backoff_s=0.01)


def test_http_errors_are_not_retried_and_say_what_failed(server: str, control: Control) -> None:
    wrong_key = OpenAIBackend(server, model=SERVED, api_key="wrong", timeout_s=10)
    unknown = OpenAIBackend(server, model="no-such-model", api_key=API_KEY, timeout_s=10)
    try:
        with pytest.raises(GenerationError, match=r"HTTP 401$") as denied:
            wrong_key.generate([arm("q")])
        # the body is kept apart from the message (it may echo the prompts): status and detail
        assert denied.value.upstream_status == 401 and "API key" in (denied.value.detail or "")
        with pytest.raises(GenerationError, match=r"HTTP 404$") as missing:
            unknown.generate([arm("q")])
        assert missing.value.upstream_status == 404 and "does not exist" in (missing.value.detail or "")
        assert control.completions() == []
    finally:
        wrong_key.close()
        unknown.close()


def test_local_tokenizer_counts_tokens(server: str, tiny_model_dir) -> None:
    b = OpenAIBackend(server, model=SERVED, api_key=API_KEY, tokenizer=str(tiny_model_dir))
    try:
        counts = b.count_tokens(["Natalia sold 48 clips.", ""])
        assert counts is not None and counts[0] > 0 and counts[1] == 0
    finally:
        b.close()


def test_closed_backend_and_empty_batch(server: str) -> None:
    b = OpenAIBackend(server, model=SERVED, api_key=API_KEY)
    assert b.generate([]) == []
    b.close()
    with pytest.raises(GenerationError, match="closed"):
        b.generate([arm("q")])


def test_reasoning_field_is_kept_inside_think_tags() -> None:
    choice = {"message": {"content": "The answer is 72.", "reasoning_content": "48 + 24 = 72"}}
    assert _choice_text(choice) == "<think>\n48 + 24 = 72\n</think>\n\nThe answer is 72."
    # content null is a text only beside a reasoning text (a reasoning model cut off while reasoning)
    assert (
        _choice_text({"message": {"content": None, "reasoning_content": "48 + 24"}}) == "<think>\n48 + 24\n</think>\n\n"
    )
    for bad in (None, 7, ["a"], {"a": 1}):
        with pytest.raises(TypeError, match="'content' is"):
            _choice_text({"message": {"content": bad}})


@pytest.mark.parametrize(
    "content", [None, 7, ["a", "list"], {"an": "object"}], ids=["null", "number", "list", "object"]
)
def test_content_that_is_not_a_string_is_a_generation_error(
    backend: OpenAIBackend, control: Control, content: object
) -> None:
    control.set(content_override=[content])
    with pytest.raises(GenerationError, match=r"malformed completion \(TypeError\)") as info:
        backend.generate([arm("Natalia sold 48 clips.")])
    assert info.value.upstream_status == 200 and not info.value.transient
    assert "Natalia" not in str(info.value)


def test_outages_are_transient_and_bad_replies_are_not(server: str, control: Control) -> None:
    down = OpenAIBackend(f"http://127.0.0.1:{free_port()}/v1", model=SERVED, timeout_s=10, backoff_s=0.01)
    wrong_key = OpenAIBackend(server, model=SERVED, api_key="wrong", timeout_s=10)
    try:
        with pytest.raises(GenerationError) as unreachable:
            down.generate([arm("q")])
        assert unreachable.value.transient
        with pytest.raises(GenerationError) as denied:
            wrong_key.generate([arm("q")])
        assert not denied.value.transient
        with pytest.raises(GenerationError):
            down.probe()
        with pytest.raises(GenerationError, match="HTTP 401"):
            wrong_key.probe()
    finally:
        down.close()
        wrong_key.close()


# -- factory, provided, vllm ---------------------------------------------------------------------


def test_provided_backend_has_no_model() -> None:
    assert create_backend(BackendConfig("provided")) is None
    assert "openai_api_key" not in repr(BackendConfig("openai", openai_api_key="sk-secret"))


def test_factory_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="unknown generation backend 'tgi'"):
        create_backend(BackendConfig("tgi"))
    with pytest.raises(ValueError, match="needs model"):
        create_backend(BackendConfig("hf"))
    with pytest.raises(ValueError, match="needs openai_base_url"):
        create_backend(BackendConfig("openai"))
    with pytest.raises(ValueError, match="http"):
        create_backend(BackendConfig("openai", openai_base_url="localhost:8000/v1", model="m"))


def test_vllm_backend_without_vllm_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(GenerationError, match=r"regime-w\[vllm\]"):
        create_backend(BackendConfig("vllm", model="some/model"))
