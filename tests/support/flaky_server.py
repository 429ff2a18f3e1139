"""A small, real reward server that fails on purpose: the test double of the Regime W service.

It speaks the wire contract of ``shared_schemas.wire`` (``POST /v1/score``, ``GET /v1/info``,
``GET /readyz``) with a toy scorer (``reward = len(trajectory)``, components derived from the
length, ``correctness`` and ``final_answer`` from ``shared_schemas.answer``), and it misbehaves as
told through control endpoints:

- ``POST /_configure`` ``{"script": [ACTION, ...], "default": ACTION, "api_key": str | null,
  "ready": bool}`` — each scored request consumes the next ACTION of ``script``; when the script is
  empty, ``default`` applies. An ACTION is ``"ok"``, ``"drop"`` (start a response, then cut the
  connection), ``"bad_body"`` (200 with a body that breaks the contract), or
  ``{"status": 503, "retry_after": 0.5, "code": "...", "message": "..."}`` (an error in the
  service's ``{"error": {...}}`` shape), or ``{"sleep": 2.0}`` (answer correctly, late).
  ``{"delay_s": x}`` may be added to any action (wait before acting).
- ``GET /_stats`` — request counts, items per scored request, ids, the Authorization headers seen,
  arrival times and the highest number of scored requests in flight at once.
- ``POST /_reset`` — back to "always ok", no key, counters zeroed.

Run as a module (``python -m tests.support.flaky_server``): it binds a free loopback port itself and prints
``PORT <n>`` on stdout. Tests take the ``srv`` fixture (one server per module, reset for each test; shared
by tests/conftest.py), or ``start_flaky_server()`` for servers of their own; both start it in a subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.responses import Response

from shared_schemas.answer import answers_equal, gold_answer, parse_answer
from shared_schemas.wire import (
    API_VERSION,
    InfoResponse,
    ItemResult,
    ScoreRequest,
    ScoreResponse,
    ScorerInfo,
    TrajectoryScore,
)
from tests.support.limits import HANG_GUARD_S
from tests.support.servers import free_port  # noqa: F401 - re-exported: tests take it from here

Action = str | dict[str, Any]
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class _State:
    script: list[Action] = field(default_factory=list)
    default: Action = "ok"
    api_key: str | None = None
    ready: bool = True
    requests: int = 0
    score_requests: int = 0
    items_per_request: list[int] = field(default_factory=list)
    ids_per_request: list[list[str]] = field(default_factory=list)
    return_details: list[bool] = field(default_factory=list)
    authorization: list[str | None] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    epoch: int = 0  # bumped by /_reset: a request still running from before records nothing

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "score_requests": self.score_requests,
            "items_per_request": self.items_per_request,
            "ids_per_request": self.ids_per_request,
            "return_details": self.return_details,
            "authorization": self.authorization,
            "arrivals": self.arrivals,
            "actions": self.actions,
            "max_in_flight": self.max_in_flight,
        }


def toy_scores(item: Any, return_details: bool) -> list[dict[str, Any]]:
    """The toy scorer: deterministic functions of each trajectory's length and answer."""

    gold = gold_answer(item.gold_answer) if item.gold_answer is not None else None
    out = []
    for i, text in enumerate(item.trajectories):
        parsed = parse_answer(text)
        n_tokens = item.num_tokens[i] if item.num_tokens is not None else len(text.split())
        score: dict[str, Any] = {
            "reward": float(len(text)),
            "final_answer": parsed.value,
            "format_ok": parsed.format_ok,
        }
        if return_details:
            score.update(
                correctness=None if gold is None else float(answers_equal(parsed.value, gold)),
                s_end=(len(text) % 10) / 10,
                s_path=(len(text) % 4) / 4,
                s_cf=(len(text) % 2) / 2,
                s_wm=(len(text) % 5) / 5,
                length_penalty=n_tokens / 100,
                num_tokens=n_tokens,
            )
        out.append(score)
    return out


def build_app() -> Any:
    state = _State()
    scorer = ScorerInfo(name="flaky-toy", version="0.0.1", config_fingerprint="sha256:toy", model="none")

    def error(status: int, code: str, message: str, retry_after: float | None = None) -> JSONResponse:
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)

    app = FastAPI()

    @app.post("/_configure")
    async def configure(request: Request) -> dict[str, Any]:
        body = await request.json()
        for key in ("script", "default", "api_key", "ready"):
            if key in body:
                setattr(state, key, list(body[key]) if key == "script" else body[key])
        return {"ok": True}

    @app.post("/_reset")
    async def reset() -> dict[str, Any]:
        fresh = _State(epoch=state.epoch + 1)
        for name in fresh.__dataclass_fields__:
            setattr(state, name, getattr(fresh, name))
        return {"ok": True}

    @app.get("/_stats")
    async def stats() -> dict[str, Any]:
        return state.stats()

    @app.get("/readyz")
    async def readyz() -> Any:
        if state.ready:
            return {"status": "ready"}
        return error(503, "not_ready", "model not loaded yet", retry_after=1)

    def unauthorized(request: Request) -> JSONResponse | None:
        if state.api_key is None:
            return None
        if request.headers.get("authorization") != f"Bearer {state.api_key}":
            return error(401, "unauthorized", "missing or invalid API key (flaky test server)")
        return None

    @app.get("/v1/info")
    async def info(request: Request) -> Any:
        denied = unauthorized(request)
        if denied is not None:
            return denied
        return InfoResponse(
            api_version=API_VERSION,
            scorer=scorer,
            backend="toy",
            arms=["arm_a", "arm_b"],
            limits={"max_items": 4096},
        ).model_dump()

    @app.post("/v1/score")
    async def score(request: Request) -> Any:
        epoch = state.epoch
        state.score_requests += 1
        state.arrivals.append(time.time())
        state.authorization.append(request.headers.get("authorization"))
        action: Action = state.script.pop(0) if state.script else state.default
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)

        def record(what: str) -> None:
            if state.epoch == epoch:  # not a straggler from before the last reset
                state.actions.append(what)

        try:
            raw = await request.body()
            try:
                parsed = ScoreRequest.model_validate_json(raw)
                state.items_per_request.append(len(parsed.items))
                state.ids_per_request.append([item.id for item in parsed.items])
                state.return_details.append(parsed.return_details)
            except ValidationError as exc:
                state.items_per_request.append(0)
                state.ids_per_request.append([])
                state.return_details.append(False)
                record("invalid")
                return error(422, "validation_error", str(exc))
            if isinstance(action, dict) and action.get("delay_s"):
                await asyncio.sleep(float(action["delay_s"]))
            denied = unauthorized(request)
            if denied is not None:
                record("401")
                return denied
            if action == "bad_body":
                record("bad_body")
                return {"api_version": "1", "results": "not a list"}
            if action == "drop":
                record("drop")
                return _drop_response()
            if isinstance(action, dict) and "status" in action:
                status = int(action["status"])
                record(str(status))
                return error(
                    status,
                    action.get("code", f"failure_{status}"),
                    action.get("message", f"failing on purpose with HTTP {status}"),
                    retry_after=action.get("retry_after"),
                )
            if isinstance(action, dict) and action.get("sleep"):
                await asyncio.sleep(float(action["sleep"]))
            record("ok")
            results = [
                ItemResult(
                    id=item.id,
                    consensus_answer=None,
                    arms_from_cache=False,
                    label_free=item.gold_answer is None,
                    token_count_source="client" if item.num_tokens is not None else "whitespace",
                    scores=[TrajectoryScore(**s) for s in toy_scores(item, parsed.return_details)],
                )
                for item in parsed.items
            ]
            return ScoreResponse(scorer=scorer, results=results).model_dump()
        finally:
            if state.epoch == epoch:
                state.in_flight -= 1

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/_"):
            state.requests += 1
        await app(scope, receive, send)

    return counted


def _drop_response() -> Any:
    """An ASGI response that promises a body, sends a fragment, then fails: the server cuts the line."""

    class DropConnection(Response):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
                }
            )
            await send({"type": "http.response.body", "body": b'{"api_version": "1", ', "more_body": True})
            raise ConnectionAbortedError("flaky server: dropping the connection on purpose")

    return DropConnection()


# ------------------------------------------------------------------------------------ test helper


class FlakyServer:
    """Handle on a running flaky server subprocess."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def configure(self, **settings: Any) -> None:
        httpx.post(f"{self.url}/_configure", json=settings, timeout=10).raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.url}/_reset", timeout=10).raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/_stats", timeout=10)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextmanager
def start_flaky_server(startup_timeout_s: float = HANG_GUARD_S) -> Iterator[FlakyServer]:
    """Start the flaky server in a subprocess on a free loopback port; stop it on exit."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.flaky_server"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    server: FlakyServer | None = None
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + startup_timeout_s
        line = process.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"flaky server did not start (rc={process.poll()}, said {line!r})")
        server = FlakyServer(process, int(line.split()[1]))
        while True:
            try:
                httpx.get(f"{server.url}/_stats", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("flaky server never answered /_stats") from None
                time.sleep(0.05)
        yield server
    finally:
        if server is not None:
            server.stop()
        elif process.poll() is None:
            process.kill()
            process.wait(timeout=10)


#: the client's environment settings, unset by the ``srv`` fixture so a test sees only what it passes
CLIENT_ENV = ("REGIME_W_URL", "REGIME_W_API_KEY", "REGIME_W_API_KEY_FILE")


@pytest.fixture(scope="module")
def flaky_server() -> Iterator[FlakyServer]:
    """One flaky server per test module (tests/conftest.py shares it); tests take ``srv``."""
    with start_flaky_server() as server:
        yield server


@pytest.fixture
def srv(flaky_server: FlakyServer, monkeypatch: pytest.MonkeyPatch) -> FlakyServer:
    """The module's flaky server, reset (always ok, no key, counters zeroed), with the client's environment
    (``CLIENT_ENV``) unset. A module that needs more overrides it on top::

        @pytest.fixture
        def srv(srv, monkeypatch):
            monkeypatch.setenv("REGIME_W_URL", srv.url)
            return srv
    """
    flaky_server.reset()
    for name in CLIENT_ENV:
        monkeypatch.delenv(name, raising=False)
    return flaky_server


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    args = parser.parse_args(argv)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    config = uvicorn.Config(build_app(), log_level="critical", access_log=False, lifespan="off")
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
