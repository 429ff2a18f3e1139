"""The reward service in process: ``create_app(settings)`` behind ``httpx.ASGITransport``.

For HTTP tests where a subprocess and a socket add nothing (validation, auth, error bodies,
OpenAPI): the app's lifespan runs as under uvicorn (the runtime loads, then closes), requests go
through every middleware and handler, and the test talks to it with a synchronous, httpx-shaped
client. Tests of the server itself (startup flags, logs, streamed bodies) use ``servers.py``.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import httpx

from reward_service.app import create_app
from reward_service.settings import Settings


class InProcessService:
    """``with InProcessService(settings) as svc: svc.post("/v1/score", json=...)``."""

    def __init__(self, settings: Settings, *, headers: dict[str, str] | None = None, ready_timeout_s: float = 120.0):
        self.app = create_app(settings)
        self.headers = headers or {}
        self.ready_timeout_s = ready_timeout_s
        self._runner: asyncio.Runner | None = None
        self._stack = AsyncExitStack()
        self._client: httpx.AsyncClient | None = None

    def __enter__(self) -> InProcessService:
        self._runner = asyncio.Runner()
        try:
            self._runner.run(self._start())
        except BaseException:
            self._runner.close()
            raise
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        assert self._runner is not None
        try:
            self._runner.run(self._stack.aclose())
        finally:
            self._runner.close()

    async def _start(self) -> None:
        await self._stack.enter_async_context(self.app.router.lifespan_context(self.app))
        self._client = await self._stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://testserver", timeout=60)
        )
        deadline = asyncio.get_running_loop().time() + self.ready_timeout_s
        while (await self._client.get("/readyz")).status_code != 200:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"in-process service not ready: {(await self._client.get('/readyz')).text}")
            await asyncio.sleep(0.01)

    def request(
        self, method: str, url: str, *, headers: dict[str, str] | None = None, anonymous: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """``anonymous``: without the default headers (the key)."""
        assert self._runner is not None and self._client is not None, "use InProcessService in a with block"
        merged = {**({} if anonymous else self.headers), **(headers or {})}
        return self._runner.run(self._client.request(method, url, headers=merged, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)
