"""No private text out (issue 11, item 2): an upstream that echoes the arm prompts back, in an error
body, a reply of the wrong shape or a plain-text 500, never gets them into a response or a log line
of the service, even at DEBUG; the 502 names the upstream status and a request id instead."""

from __future__ import annotations

import re
import sys

import httpx
import pytest

from reward_service.redact import Redactor, prompt_pieces
from reward_service.regime_w.config import default_config
from tests.support.servers import ServiceSpec, free_port, running_process, start_live_service

KEY = "privacy-test-key-0123456789"
CONFIG = default_config()
PIECES = prompt_pieces(CONFIG)


@pytest.fixture(scope="module")
def upstream():
    port = free_port()
    argv = [sys.executable, "-m", "tests.support.echo_upstream", "--port", str(port)]
    with running_process(argv, port, ready_path="/error/v1/models", timeout=60) as server:
        yield server.url


def test_the_prompt_lines_are_what_the_test_greps_for() -> None:
    assert len(PIECES) >= 20 and any(p.startswith("You are") for p in PIECES)
    redactor = Redactor(CONFIG)
    for piece in PIECES:
        echoed = f'{{"messages": [{{"content": "{piece}"}}]}} and a cut one: {piece[: len(piece) // 2]}'
        assert piece not in redactor.redact(echoed)
        assert piece[: len(piece) // 2] not in redactor.redact(echoed) or len(piece) // 2 < 8


@pytest.mark.parametrize("mode", ["error", "shape", "text"])
def test_echoing_upstream_leaks_nothing(upstream: str, mode: str, tmp_path) -> None:
    spec = ServiceSpec(
        "provided",
        api_key=KEY,
        env={
            "REGIME_W_BACKEND": "openai",
            "REGIME_W_OPENAI_BASE_URL": f"{upstream}/{mode}/v1",
            "REGIME_W_MODEL": "echo",
            "REGIME_W_LOG_LEVEL": "debug",
            "REGIME_W_GENERATION_TIMEOUT_S": "30",
            "REGIME_W_BACKEND_TIMEOUT_S": "20",
        },
    )
    question = "Ava has 3 boxes of 4 pens. How many pens?"
    body = {"items": [{"id": "q", "question": question, "trajectories": ["3*4 = 12\n#### 12"]}]}
    with start_live_service(spec, tmp_path) as server:
        responses = [
            httpx.post(server.url + "/v1/score", json=body, headers=server.headers, timeout=60),
            httpx.post(
                server.url + "/v1/arms/precompute",
                json={"questions": [question + " Again."]},
                headers=server.headers,
                timeout=60,
            ),
        ]
        log = server.log()
    for r in responses:
        assert r.status_code == 502, r.text
        error = r.json()["error"]
        assert error["code"] == "generation_failed"
        status = {"error": "400", "shape": "200", "text": "500"}[mode]
        assert f"HTTP {status}" in error["message"], error
        request_id = re.search(r"request id ([0-9a-f]{16})", error["message"]).group(1)
        assert f"[request {request_id}]" in log, "the request id leads to the log line"
    assert "DEBUG" in log and "(redacted)" in log, "the detail was logged at DEBUG, redacted"
    seen = "\n".join(r.text for r in responses) + "\n" + log
    leaked = [piece for piece in PIECES if piece in seen]
    assert not leaked, f"arm prompt lines leaked: {leaked}"
