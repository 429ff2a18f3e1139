"""The HTTP server's connection handling: uvicorn's h11 protocol with a header-read timeout.

uvicorn (0.54 here) closes an idle keep-alive connection after ``timeout_keep_alive``, but it has no
limit on how long a client may take to send a request head: a connection that sends half a request
line, or nothing, is held open for as long as the client likes (3,000 such keyless connections were
held 62 s and longer, each a file descriptor and a parser). ``h11_max_incomplete_event_size`` bounds
the head's size, not its time.

``HeaderTimeoutProtocol`` adds that limit: from the moment a connection opens, and again from the
first byte of each next request on a kept-alive connection, the whole request head (request line and
headers) must arrive within ``header_timeout_s`` (``REGIME_W_HEADER_TIMEOUT_S``); else the server
answers ``408 Request Timeout`` and closes the connection. A request whose head has arrived is the
app's: its body and its response have no such limit here (the routes' own deadlines apply).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("reward_service.server")

_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    b"content-length: 36\r\n\r\nrequest head not received in time.\r\n"
)


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol; a request head must arrive within ``header_timeout_s`` seconds."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None

    def _awaiting_head(self) -> bool:
        """No request of this connection is being served: the next bytes are a request head."""
        return self.cycle is None or self.cycle.response_complete

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head():  # the first bytes of a request after a kept-alive response
            self._arm_head_timer()
        super().data_received(data)

    def handle_events(self) -> None:
        scope = self.scope
        super().handle_events()
        if self.scope is not scope:  # a request head was parsed: the request is the app's now
            self._disarm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._awaiting_head():
            return
        log.debug("closing a connection whose request head did not arrive within %g s", self.header_timeout_s)
        self.transport.write(_REQUEST_TIMEOUT)
        self.transport.close()


def http_protocol(header_timeout_s: float) -> Callable[..., HeaderTimeoutProtocol]:
    """The ``http`` argument of ``uvicorn.Config`` / ``uvicorn.run``: ``HeaderTimeoutProtocol`` with
    its timeout bound (a ``functools.partial`` of a module-level class: picklable for workers)."""
    return functools.partial(HeaderTimeoutProtocol, header_timeout_s=header_timeout_s)
