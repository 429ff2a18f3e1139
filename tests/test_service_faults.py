"""Service faults (issue, item 4): each fault reproduced against real servers on loopback.

- an OpenAI-compatible arm model answering 200 with a ``content`` that is not a string: 502
  ``generation_failed``, nothing cached, the next request generates again;
- an arm-model outage (connection refused): 503 ``arm_model_unavailable`` with ``Retry-After``, and
  the trainer's reward client rides it out without user action once the arm model is back;
- 504 ``generation_timeout`` carries ``Retry-After``;
- the client's default read timeout stays above the service's default generation deadline;
- a backend that does not load at start is tried again (``/readyz`` 503 + ``Retry-After``
  meanwhile) and, after the last try, the server exits 1 with one line and no traceback;
- a missing or malformed scorer config: one line naming the file, exit 2, no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reward_service.redact import prompt_pieces
from reward_service.regime_w.config import default_config
from reward_service.settings import GENERATION_TIMEOUT_MARGIN_S, Settings
from tests.support.inprocess import InProcessService
from tests.support.limits import HANG_GUARD_S, wait_for
from tests.support.openai_compat_server import control, running_server
from tests.support.servers import ServiceSpec, free_port, start_live_service
from tests.support.service_config import small_service_config
from trainer.configs import RewardServiceArguments
from trainer.reward_client import RewardClient
from trainer.reward_client.settings import DEFAULT_TIMEOUT_S, ClientSettings

KEY = "faults-test-key-0123456789"
UPSTREAM_KEY = "upstream-key"
SERVED = "tiny-llama"
ROOT = Path(__file__).resolve().parents[1]
PIECES = prompt_pieces(default_config())


def item(question: str) -> dict:
    return {"id": "q", "question": question, "trajectories": ["3*4 = 12\n#### 12"], "num_tokens": [6]}


@pytest.fixture(scope="module")
def upstream(tiny_model_dir) -> Iterator[str]:
    with running_server(tiny_model_dir, "--api-key", UPSTREAM_KEY, "--served-model-name", SERVED) as base_url:
        yield base_url


def completions(base_url: str) -> int:
    return len(httpx.get(base_url.removesuffix("/v1") + "/_control/stats", timeout=10).json()["completions"])


def openai_settings(base_url: str, tmp_path: Path, **more: object) -> Settings:
    return Settings(
        insecure_no_auth=True,
        backend="openai",
        openai_base_url=base_url,
        openai_api_key=UPSTREAM_KEY,
        model=SERVED,
        config_path=small_service_config(tmp_path, max_tokens=3),
        cache_path=str(tmp_path / "arms.sqlite3"),
        generation_batch_window_ms=0,
        **more,
    )


# ----------------------------------------------------------------- (a) content that is not a string


def test_non_string_content_is_a_502_and_is_never_cached(upstream: str, tmp_path: Path) -> None:
    control(upstream, fail_first=0, delay=0.0, content_override=[])
    question = "Ava has 3 boxes of 4 pens. How many pens?"
    with InProcessService(openai_settings(upstream, tmp_path)) as svc:
        for bad in (None, 7, ["a", "list"], {"an": "object"}):
            control(upstream, content_override=[bad])
            r = svc.post("/v1/score", json={"items": [item(question)]})
            assert r.status_code == 502, (bad, r.status_code, r.text)
            error = r.json()["error"]
            assert error["code"] == "generation_failed" and "unexpected shape (HTTP 200)" in error["message"]
            assert "Retry-After" not in r.headers  # the same request would fail the same way
        control(upstream, content_override=[])  # a well-behaved server again: generated, not from a cache
        r = svc.post("/v1/score", json={"items": [item(question)]})
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["arms_from_cache"] is False
        assert completions(upstream) > 0
        again = svc.post("/v1/score", json={"items": [item(question)]})
        assert again.status_code == 200 and again.json()["results"][0]["arms_from_cache"] is True


# ----------------------------------------------------------------- (d) 504 carries Retry-After


def test_generation_timeout_carries_retry_after(upstream: str, tmp_path: Path) -> None:
    control(upstream, fail_first=0, content_override=[], delay=5.0)  # 5 s a completion, 0.3 s deadline
    question = "Weng earns $12 an hour. How much for 50 minutes?"
    try:
        with InProcessService(openai_settings(upstream, tmp_path, generation_timeout_s=0.3)) as svc:
            r = svc.post("/v1/score", json={"items": [item(question)]})
            assert r.status_code == 504, r.text
            assert r.json()["error"]["code"] == "generation_timeout"
            assert int(r.headers["Retry-After"]) >= 1

            # the generation went on: a retry is served from the cache once it has finished
            def served_from_cache() -> bool:
                again = svc.post("/v1/score", json={"items": [item(question)]})
                return again.status_code == 200 and again.json()["results"][0]["arms_from_cache"]

            wait_for(served_from_cache, "the retry served from the cache", every=1.0)
    finally:
        control(upstream, delay=0.0)


# ----------------------------------------------------------------- (b) arm-model outage


def status_count(url: str, status: int) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("regime_w_requests_total{") and f'status="{status}"' in line and "/v1/score" in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_arm_model_outage_is_a_503_with_retry_after_and_the_client_rides_it_out(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    spec = ServiceSpec(
        "provided",
        api_key=KEY,
        max_tokens=3,
        env={
            "REGIME_W_BACKEND": "openai",
            "REGIME_W_OPENAI_BASE_URL": base,
            "REGIME_W_OPENAI_API_KEY": UPSTREAM_KEY,
            "REGIME_W_MODEL": SERVED,
            "REGIME_W_GENERATION_BATCH_WINDOW_MS": "0",
            "REGIME_W_BACKEND_LOAD_ATTEMPTS": "1",
        },
    )
    question = "Ava has 3 boxes of 4 pens. How many pens?"
    with running_server(tiny_model_dir, "--api-key", UPSTREAM_KEY, "--served-model-name", SERVED, port=port):
        service_cm = start_live_service(spec, tmp_path)
        service = service_cm.__enter__()
    try:
        # the arm model is down now: 503 arm_model_unavailable + Retry-After, no upstream text
        r = httpx.post(
            service.url + "/v1/score", json={"items": [item(question)]}, headers=service.headers, timeout=120
        )
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "arm_model_unavailable"
        assert int(r.headers["Retry-After"]) >= 1
        assert not [p for p in PIECES if p in r.text]
        seen_503 = status_count(service.url, 503)
        assert seen_503 >= 1

        result: dict[str, object] = {}

        def score() -> None:
            try:
                with RewardClient(service.url, api_key=KEY, patience_s=600, backoff_max_s=2.0) as client:
                    result["response"] = client.score([item(question)])
            except Exception as exc:  # reported below
                result["error"] = exc

        caller = threading.Thread(target=score)
        caller.start()
        # the client was answered 503 at least once more, then the arm model comes back (same port)
        wait_for(lambda: status_count(service.url, 503) > seen_503, "the client's call answered 503")
        with running_server(tiny_model_dir, "--api-key", UPSTREAM_KEY, "--served-model-name", SERVED, port=port):
            caller.join(timeout=300)
            assert not caller.is_alive(), "the client call did not finish"
        assert "error" not in result, result.get("error")
        response = result["response"]
        assert response.results[0].arms_from_cache is False and len(response.results[0].scores) == 1
    finally:
        service_cm.__exit__(None, None, None)
    log = service.log()
    assert "arm model unavailable" in log and not [p for p in PIECES if p in log]


# ----------------------------------------------------------------- (c) client timeout vs service deadline


def test_client_read_timeout_outlasts_the_service_generation_deadline() -> None:
    service_deadline = Settings.model_fields["generation_timeout_s"].default
    for client_timeout in (DEFAULT_TIMEOUT_S, ClientSettings().timeout_s, RewardServiceArguments().reward_timeout_s):
        assert client_timeout >= service_deadline + GENERATION_TIMEOUT_MARGIN_S, (client_timeout, service_deadline)
    print(f"client read timeout {DEFAULT_TIMEOUT_S:g} s >= service deadline {service_deadline:g} s + margin")


# ----------------------------------------------------------------- (e) the backend load is retried


def serve_argv(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "reward_service.cli",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--insecure-no-auth",
    ]


def serve_env(tmp_path: Path, base_url: str, **more: str) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "REGIME_W_BACKEND": "openai",
        "REGIME_W_OPENAI_BASE_URL": base_url,
        "REGIME_W_OPENAI_API_KEY": UPSTREAM_KEY,
        "REGIME_W_CONFIG_PATH": str(small_service_config(tmp_path, max_tokens=3)),
        "REGIME_W_CACHE_PATH": "none",
        **more,
    }


def test_backend_load_is_retried_until_the_arm_model_answers(tiny_model_dir: Path, tmp_path: Path) -> None:
    upstream_port, port = free_port(), free_port()
    env = serve_env(
        tmp_path,
        f"http://127.0.0.1:{upstream_port}/v1",
        REGIME_W_BACKEND_LOAD_ATTEMPTS="1000",
        REGIME_W_BACKEND_LOAD_BACKOFF_S="0.5",
    )
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(serve_argv(port), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"

        def not_ready_retrying() -> httpx.Response | None:
            assert proc.poll() is None, log_path.read_text()
            try:
                r = httpx.get(url + "/readyz", timeout=5)
            except httpx.TransportError:
                return None
            return r if r.status_code == 503 and "trying again" in r.text else None

        r = wait_for(not_ready_retrying, "/readyz 503 while the backend load is retried")
        assert r.json()["error"]["code"] == "not_ready" and int(r.headers["Retry-After"]) >= 1
        with running_server(
            tiny_model_dir, "--api-key", UPSTREAM_KEY, "--served-model-name", SERVED, port=upstream_port
        ):
            wait_for(lambda: httpx.get(url + "/readyz", timeout=5).status_code == 200, "ready once the model answers")
            info = httpx.get(url + "/v1/info", timeout=10).json()
            assert info["scorer"]["model"] == SERVED
    finally:
        proc.terminate()
        proc.wait(timeout=HANG_GUARD_S)
    text = log_path.read_text()
    assert "trying again" in text and "Traceback" not in text


def test_backend_that_never_loads_ends_the_server_with_one_line(tmp_path: Path) -> None:
    env = serve_env(
        tmp_path,
        f"http://127.0.0.1:{free_port()}/v1",  # nothing listens there
        REGIME_W_BACKEND_LOAD_ATTEMPTS="2",
        REGIME_W_BACKEND_LOAD_BACKOFF_S="0.1",
    )
    done = subprocess.run(
        serve_argv(free_port()), env=env, capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=ROOT
    )
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("regime-w-serve: the backend failed to load after 2 attempts: GenerationError:"), last
    assert "ConnectError" in last and "Traceback" not in done.stderr
    assert "attempt 1 of 2" in done.stderr


# ----------------------------------------------------------------- (g) missing or malformed scorer config


def run_cli(module_args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, *module_args], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )


@pytest.mark.parametrize("problem", ["missing", "not_toml"])
def test_bad_scorer_config_is_one_line_and_exit_2(problem: str, tmp_path: Path) -> None:
    config = tmp_path / "nope.toml"
    if problem == "not_toml":
        config.write_text("[arms\nname = 'x'\n")
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps({"items": [item("What is 3 * 4?")]}))
    serve = ["-c", "from reward_service.cli import serve_main; raise SystemExit(serve_main())"]
    score = ["-c", "from reward_service.cli import score_main; raise SystemExit(score_main())"]
    for argv in (
        [*serve, "--insecure-no-auth", "--port", str(free_port()), "--config", str(config)],
        [*score, str(batch), "--config", str(config)],
    ):
        done = run_cli(argv, tmp_path)
        assert done.returncode == 2, (argv, done.stderr[-2000:])
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and str(config) in lines[0] and "Traceback" not in done.stderr, done.stderr
        assert lines[0].startswith(("regime-w-serve: ", "regime-w-score: "))
