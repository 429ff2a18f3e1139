"""A real OpenAI-compatible chat server over a local transformers model, for tests.

    python3 -m tests.support.openai_compat_server --model DIR --port P [--fail-first N]
        [--retry-after S] [--delay S] [--api-key KEY] [--served-model-name NAME]

Serves ``GET /v1/models`` and ``POST /v1/chat/completions`` (``n``, ``temperature``, ``top_p``,
``max_tokens``, ``seed``; the OpenAI response shape with ``choices[i].message.content``,
``finish_reason`` and ``usage``), generating with plain ``model.generate``. Failure injection for
client tests: the first N completions answer 503 with ``Retry-After``; ``--delay`` holds every
completion S seconds. ``GET /_control/stats`` lists the completions received and
``POST /_control`` changes ``fail_first`` / ``delay`` / ``retry_after`` / ``max_n`` / ``gather`` at run time (and resets the
stats), so one server process serves a whole test module. ``"content_override": [X]`` makes every
completion answer 200 with ``message.content`` = X, any JSON value (null, a number, a list, an
object: a server of the wrong shape), without generating; ``[]`` turns it off; ``"override_delay": S`` makes each such completion take S seconds. ``"hang_on": "TEXT"`` holds every
completion whose messages contain TEXT (a hung upstream call) until ``hang_on`` is set to ``""`` again (or a
300 s hang guard passes); ``/_control/stats`` counts them in ``hanging`` (now) and ``hung`` (since the last
reset). :func:`running_server` starts it as a subprocess on a free loopback port and waits until it answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tests.support.limits import HANG_GUARD_S
from tests.support.servers import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


class _State:
    def __init__(self, fail_first: int, delay: float, retry_after: float) -> None:
        self.fail_first = fail_first
        self.delay = delay
        self.retry_after = retry_after
        self.max_n = 0  # 0: honour n; k: answer at most k choices (like servers without n support)
        self.content_override: list[Any] = []  # [X]: every choice's content is X (any JSON value)
        self.gather = 0  # k > 0: each completion waits (up to 60 s) until k completions are in flight together
        self.hang_on = ""  # non-empty: completions whose messages contain it wait until it is cleared
        self.hanging = 0  # completions held by hang_on now
        self.hung = 0  # completions held by hang_on since the last reset
        self.override_delay = 0.0  # seconds a content_override completion takes (a fixed generation time)
        self.active = 0  # completions in flight now
        self.max_active = 0  # most completions in flight together since the last reset
        self.completions: list[dict[str, Any]] = []
        self.lock = threading.Lock()


class _Generator:
    """Plain transformers generation: ``n`` rows of one prompt, seeded with ``torch.manual_seed``."""

    def __init__(self, model_dir: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).eval()
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id
        self.lock = threading.Lock()

    def __call__(
        self,
        messages: list[dict[str, str]],
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: int | None,
    ) -> tuple[list[tuple[str, str]], int, int]:
        torch = self.torch
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        else:
            text = "".join(f"{m['content']}\n\n" for m in messages)
            ids = self.tokenizer(text, return_tensors="pt")["input_ids"]
        batch = ids.repeat(n, 1)
        sample = temperature > 0
        kwargs: dict[str, Any] = {
            "do_sample": sample,
            "max_new_tokens": max_tokens,
            "pad_token_id": self.pad_id,
            "eos_token_id": self.eos_id,
        }
        if sample:
            kwargs.update(temperature=temperature, top_p=top_p)
        with self.lock, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(input_ids=batch, attention_mask=torch.ones_like(batch), **kwargs)
        choices: list[tuple[str, str]] = []
        completion_tokens = 0
        for row in out[:, ids.shape[1] :].tolist():
            finish = "length"
            if self.eos_id in row:
                row = row[: row.index(self.eos_id)]
                finish = "stop"
            completion_tokens += len(row)
            choices.append((self.tokenizer.decode(row, skip_special_tokens=True), finish))
        return choices, int(ids.shape[1]), completion_tokens


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Any:
    body = {
        "error": {
            "message": message,
            "type": "invalid_request_error" if status < 500 else "server_error",
            "code": status,
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def build_app(
    model_dir: str,
    *,
    served_model_name: str,
    fail_first: int = 0,
    delay: float = 0.0,
    retry_after: float = 0.0,
    api_key: str | None = None,
) -> Any:
    generator = _Generator(model_dir)
    state = _State(fail_first, delay, retry_after)
    app = FastAPI(title="openai-compatible test server")

    def unauthorized(request: Request) -> Any:
        if api_key and request.headers.get("authorization") != f"Bearer {api_key}":
            return _error(401, "invalid or missing API key")
        return None

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        if (denied := unauthorized(request)) is not None:
            return denied
        return {"object": "list", "data": [{"id": served_model_name, "object": "model", "owned_by": "tests"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        if (denied := unauthorized(request)) is not None:
            return denied
        try:
            body = await request.json()
            messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in body["messages"]]
            model = body["model"]
            n = int(body.get("n", 1))
            temperature = float(body.get("temperature", 1.0))
            top_p = float(body.get("top_p", 1.0))
            max_tokens = int(body.get("max_tokens", 16))
            seed = body.get("seed")
            seed = None if seed is None else int(seed)
        except (ValueError, KeyError, TypeError) as exc:
            return _error(400, f"malformed request: {type(exc).__name__}: {exc}")
        if model != served_model_name:
            return _error(404, f"The model `{model}` does not exist.")
        if not messages or n < 1 or max_tokens < 1 or temperature < 0 or not 0 < top_p <= 1:
            return _error(400, "messages must be non-empty; n, max_tokens >= 1; temperature >= 0; 0 < top_p <= 1")
        with state.lock:
            state.completions.append({"n": n, "seed": seed, "max_tokens": max_tokens, "temperature": temperature})
            failing = state.fail_first > 0
            if failing:
                state.fail_first -= 1
            delay, retry_after = state.delay, state.retry_after
            override = list(state.content_override)
            hang_on = state.hang_on
            hang = bool(hang_on) and any(hang_on in m["content"] for m in messages)
            if hang:
                state.hanging += 1
                state.hung += 1
            if state.max_n:
                n = min(n, state.max_n)
        if hang:
            try:
                waited = 0.0
                while state.hang_on == hang_on and waited < 300.0:  # released by the test; 300 s: a hang guard
                    await asyncio.sleep(0.01)
                    waited += 0.01
            finally:
                with state.lock:
                    state.hanging -= 1
        if failing:
            return _error(503, "server overloaded (injected failure)", headers={"Retry-After": f"{retry_after:g}"})
        if override:
            if state.override_delay > 0:
                await asyncio.sleep(state.override_delay)
            return {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "model": served_model_name,
                "choices": [
                    {"index": i, "message": {"role": "assistant", "content": override[0]}, "finish_reason": "stop"}
                    for i in range(n)
                ],
            }
        with state.lock:
            state.active += 1
            state.max_active = max(state.max_active, state.active)
            gather = state.gather
        try:
            waited = 0.0
            while gather and state.max_active < gather and waited < 60.0:  # a barrier, not a clock: see `gather`
                await asyncio.sleep(0.01)
                waited += 0.01
            if delay > 0:
                await asyncio.sleep(delay)
            choices, prompt_tokens, completion_tokens = await run_in_threadpool(
                generator, messages, n, temperature, top_p, max_tokens, seed
            )
        finally:
            with state.lock:
                state.active -= 1
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": served_model_name,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                    "logprobs": None,
                }
                for i, (text, finish) in enumerate(choices)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens * n + completion_tokens,
            },
        }

    @app.get("/_control/stats")
    async def stats() -> Any:
        with state.lock:
            return {
                "completions": list(state.completions),
                "fail_first": state.fail_first,
                "delay": state.delay,
                "max_active": state.max_active,
                "hanging": state.hanging,
                "hung": state.hung,
            }

    @app.post("/_control")
    async def control(request: Request) -> Any:
        body = await request.json()
        with state.lock:
            state.fail_first = int(body.get("fail_first", state.fail_first))
            state.delay = float(body.get("delay", state.delay))
            state.retry_after = float(body.get("retry_after", state.retry_after))
            state.max_n = int(body.get("max_n", state.max_n))
            state.gather = int(body.get("gather", state.gather))
            state.hang_on = str(body.get("hang_on", state.hang_on))
            state.override_delay = float(body.get("override_delay", state.override_delay))
            state.max_active = state.active
            state.hung = state.hanging
            if "content_override" in body:
                state.content_override = list(body["content_override"])[:1]
            state.completions.clear()
        return {"ok": True}

    return app


def control(base_url: str, **values: object) -> None:
    """Set the test server's switches (``/_control``: ``hang_on``, ``fail_first``, ``delay``, ``content_override``...)."""
    httpx.post(base_url.removesuffix("/v1") + "/_control", json=values, timeout=30).raise_for_status()


def stats(base_url: str) -> dict[str, Any]:
    """What the test server counted (``/_control/stats``: ``completions``, ``hanging``, ``hung``...)."""
    return dict(httpx.get(base_url.removesuffix("/v1") + "/_control/stats", timeout=30).json())


@contextlib.contextmanager
def running_server(
    model_dir: str | Path, *extra_args: str, startup_timeout_s: float = HANG_GUARD_S, port: int | None = None
) -> Iterator[str]:
    """Run the server as a subprocess on ``port`` (default: a free loopback port); yields its base URL
    (``.../v1``). A port given again after the server stopped brings "the same server" back."""
    import httpx

    port = port or free_port()
    cmd = [
        sys.executable,
        "-m",
        "tests.support.openai_compat_server",
        "--model",
        str(model_dir),
        "--port",
        str(port),
        *extra_args,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - outlives this block: closed in the finally below
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"openai_compat_server exited with {proc.returncode}: {log.read()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_control/stats", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"openai_compat_server did not answer on port {port} within {startup_timeout_s:g} s")
            time.sleep(0.2)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="local model directory (transformers format)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-model-name", default=None, help="name in /v1/models (default: --model)")
    parser.add_argument("--fail-first", type=int, default=0, help="answer the first N completions with 503")
    parser.add_argument("--retry-after", type=float, default=0.0, help="Retry-After seconds sent with those 503s")
    parser.add_argument("--delay", type=float, default=0.0, help="hold every completion this many seconds")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    args = parser.parse_args(argv)

    import uvicorn

    app = build_app(
        args.model,
        served_model_name=args.served_model_name or args.model,
        fail_first=args.fail_first,
        delay=args.delay,
        retry_after=args.retry_after,
        api_key=args.api_key,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
