"""The ``openai`` backend: any OpenAI-compatible server (``vllm serve``, SGLang, TGI, llama.cpp).

Prompts that are identical except for their seed (the service asks an arm ``n`` times) go in ONE
``POST {base_url}/chat/completions`` with ``n``; distinct prompts go out concurrently (a thread
pool of ``max_concurrency`` over one pooled ``httpx.Client``). 429 / 502 / 503 / 504 and connection
errors are retried (at most 3 times, honouring ``Retry-After``, else exponential backoff with jitter)
and, when they persist, raised as a *transient* ``GenerationError`` (the service answers 503
``arm_model_unavailable``); other HTTP errors fail at once with their status (the body excerpt goes
to ``GenerationError.detail``, never into the message: an upstream may echo the private prompts).
A 200 whose choices are not a list of ``{"message": {"content": str}}`` is a ``GenerationError``
too (not transient): ``content`` null, a number, a list or an object is never taken for a text.
``timeout_s`` is the deadline of one ``generate`` call, retries and queueing included.

The service makes ``concurrent_calls`` ``generate`` calls at once (one a generation batch); each
call keeps at most ``max_concurrency // concurrent_calls`` (at least 1) requests in flight, so the
calls together never need more threads or connections than the pool has: a call whose requests
hang holds its own share until its deadline, and the other calls go on with theirs.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import httpx

from reward_service.generation.base import ArmPrompt, GenerationError, GenerationTimeout, effective_seed

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRIES = 3
MAX_RETRY_AFTER_S = 30.0
_BODY_EXCERPT = 500


class OpenAIBackend:
    """Arm generation through an OpenAI-compatible ``/chat/completions`` endpoint."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_concurrency: int = 64,
        concurrent_calls: int = 1,
        seed: int = 0,
        backoff_s: float = 0.25,
        tokenizer: str | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"openai base_url must start with http:// or https://, got {base_url!r}")
        if not math.isfinite(timeout_s) or timeout_s <= 0:
            raise ValueError(f"timeout_s must be a finite number > 0, got {timeout_s}")
        if max_concurrency < 1 or concurrent_calls < 1:
            raise ValueError(
                f"max_concurrency and concurrent_calls must be >= 1, got {max_concurrency}, {concurrent_calls}"
            )
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        #: requests one generate call keeps in flight: its share of max_concurrency
        self.per_call_concurrency = max(1, max_concurrency // concurrent_calls)
        # every call's share at once (more than max_concurrency only when the calls outnumber it)
        max_concurrency = max(max_concurrency, self.per_call_concurrency * concurrent_calls)
        self.max_concurrency = max_concurrency
        self.seed = seed
        self.backoff_s = backoff_s
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="openai-gen")
        self._closed = threading.Event()
        self._tokenizer_path = tokenizer
        self._tokenizer: Any = None
        self._tok_lock = threading.Lock()
        self.model_id = model if model else self._served_model()

    # -- discovery -----------------------------------------------------------------------------

    def probe(self) -> None:
        """Readiness: ``GET {base_url}/models`` answers 2xx (the server is up and takes our key).
        Raises ``GenerationError`` otherwise; the service retries its start while this fails."""
        self._request("GET", f"{self.base_url}/models", None, time.monotonic() + min(self.timeout_s, 30.0))

    def _served_model(self) -> str:
        """The first model of ``GET {base_url}/models``."""
        url = f"{self.base_url}/models"
        response = self._request("GET", url, None, time.monotonic() + self.timeout_s)
        try:
            data = response.json()["data"]
            return str(data[0]["id"])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise GenerationError(
                f"backend 'openai': {url} did not list a model ({type(exc).__name__}); pass model= explicitly",
                upstream_status=response.status_code,
                detail=response.text[:_BODY_EXCERPT],
            ) from exc

    # -- HTTP ----------------------------------------------------------------------------------

    def _request(self, method: str, url: str, body: dict[str, Any] | None, deadline: float) -> httpx.Response:
        """One call with retries on 429/503/connection errors, bounded by ``deadline``."""
        last_problem = ""  # what went wrong, without the upstream's body (that is last_detail)
        last_status: int | None = None
        last_detail: str | None = None
        for attempt in range(MAX_RETRIES + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GenerationTimeout(
                    f"backend 'openai': {url} exceeded the {self.timeout_s:g} s deadline {last_problem}".rstrip(),
                    upstream_status=last_status,
                    detail=last_detail,
                )
            timeout = httpx.Timeout(remaining, connect=min(10.0, remaining))
            retry_after: float | None = None
            try:
                response = self._client.request(method, url, json=body, timeout=timeout)
            except httpx.TimeoutException as exc:
                raise GenerationTimeout(
                    f"backend 'openai': {url} timed out ({type(exc).__name__}) within the {self.timeout_s:g} s deadline"
                ) from exc
            except httpx.TransportError as exc:
                last_problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response
                last_status, last_detail = response.status_code, response.text[:_BODY_EXCERPT]
                if response.status_code not in RETRY_STATUSES:  # 4xx, 500, 501 ...: not an outage
                    raise GenerationError(
                        f"backend 'openai': {method} {url} returned HTTP {response.status_code}",
                        upstream_status=last_status,
                        detail=last_detail,
                    )
                last_problem = f"HTTP {response.status_code}"
                retry_after = _parse_retry_after(response.headers.get("retry-after"))
            if attempt == MAX_RETRIES:
                break
            pause = retry_after if retry_after is not None else self.backoff_s * (2**attempt) * (1 + random.random())
            if time.monotonic() + pause > deadline:
                raise GenerationTimeout(
                    f"backend 'openai': {url} would retry after {pause:.2f} s, past the {self.timeout_s:g} s deadline "
                    f"(last: {last_problem})",
                    upstream_status=last_status,
                    detail=last_detail,
                )
            time.sleep(pause)
        raise GenerationError(
            f"backend 'openai': {method} {url} failed after {MAX_RETRIES + 1} attempts: {last_problem}",
            upstream_status=last_status,
            detail=last_detail,
            transient=True,
        )

    def _complete(self, prompt: ArmPrompt, n: int, deadline: float) -> list[str]:
        body = {
            "model": self.model_id,
            "messages": prompt.message_dicts(),
            "temperature": prompt.temperature,
            "top_p": prompt.top_p,
            "max_tokens": prompt.max_tokens,
            "seed": effective_seed(self.seed, prompt.seed),
            "n": n,
        }
        url = f"{self.base_url}/chat/completions"
        response = self._request("POST", url, body, deadline)
        try:
            texts = _completion_texts(response.json())
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise GenerationError(
                f"backend 'openai': {url} returned a malformed completion ({type(exc).__name__})",
                upstream_status=response.status_code,
                detail=f"{exc}; body: {response.text[:_BODY_EXCERPT]}",
            ) from exc
        if not texts or len(texts) > n:
            raise GenerationError(
                f"backend 'openai': {url} returned {len(texts)} choices for n={n} (arm {prompt.arm!r})"
            )
        return texts

    def _complete_group(self, group: list[ArmPrompt], deadline: float) -> list[str]:
        """One request with ``n = len(group)``; servers that cap ``n`` (llama.cpp answers one
        choice) get the missing samples asked one by one, each with its own seed."""
        texts = self._complete(group[0], len(group), deadline)
        for prompt in group[len(texts) :]:
            texts.extend(self._complete(prompt, 1, deadline)[:1])
        return texts

    # -- protocol ------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[ArmPrompt]) -> list[str]:
        if self._closed.is_set():
            raise GenerationError("backend 'openai' is closed")
        if not prompts:
            return []
        if any(p.assistant_prefix for p in prompts):  # a chat API would answer it as a new turn
            raise GenerationError(
                "backend 'openai' cannot continue an assistant prefix (the [progress] scorer needs backend 'hf')"
            )
        deadline = time.monotonic() + self.timeout_s
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, prompt in enumerate(prompts):
            groups.setdefault(prompt.sampling_key, []).append(i)
        todo = deque(groups.values())
        running: dict[Future[list[str]], list[int]] = {}
        texts: list[str] = [""] * len(prompts)
        try:
            while todo or running:
                while todo and len(running) < self.per_call_concurrency:
                    idx = todo.popleft()
                    running[self._pool.submit(self._complete_group, [prompts[i] for i in idx], deadline)] = idx
                timeout = max(0.0, deadline - time.monotonic()) + 1.0
                done, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
                if not done:
                    raise GenerationTimeout(
                        f"backend 'openai': {len(running) + len(todo)} of {len(groups)} requests exceeded the "
                        f"{self.timeout_s:g} s deadline"
                    )
                for future in done:
                    for i, text in zip(running.pop(future), future.result()):  # the first failure raises
                        texts[i] = text
        finally:
            for future in running:
                future.cancel()
        return texts

    def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        """Counts with a local tokenizer when one was given (``tokenizer=`` path), else None."""
        if self._tokenizer_path is None:
            return None
        with self._tok_lock:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self._tokenizer_path)
            if not texts:
                return []
            return [len(ids) for ids in self._tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


def _completion_texts(body: Any) -> list[str]:
    """The text of every choice of a ``/chat/completions`` body, in ``index`` order; ``TypeError``
    (or ``KeyError``) when the body is not of the OpenAI shape."""
    if not isinstance(body, dict) or not isinstance(body["choices"], list):
        raise TypeError("'choices' is not a list")
    choices = body["choices"]
    if not all(isinstance(c, dict) for c in choices):
        raise TypeError("a choice is not an object")
    if not all(isinstance(c.get("index", 0), int) for c in choices):
        raise TypeError("a choice's 'index' is not an integer")
    return [_choice_text(c) for c in sorted(choices, key=lambda c: c.get("index", 0))]


def _choice_text(choice: dict[str, Any]) -> str:
    """The text of one choice; a separate reasoning field (vLLM reasoning parsers) is put back in
    ``<think>``. ``content`` must be a string; it may be null only beside a reasoning text (a
    reasoning model cut off inside its reasoning); anything else is a ``TypeError``."""
    message = choice["message"]
    if not isinstance(message, dict):
        raise TypeError("'message' is not an object")
    content = message.get("content")
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, str):
        raise TypeError(f"'reasoning_content' is {type(reasoning).__name__}, not a string")
    if content is None and reasoning:
        content = ""
    if not isinstance(content, str):
        raise TypeError(f"'content' is {'null' if content is None else type(content).__name__}, not a string")
    if reasoning:
        return f"<think>\n{reasoning}\n</think>\n\n{content}"
    return content


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds only), capped; None when absent or a date."""
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return None
