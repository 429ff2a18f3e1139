"""Request bodies parsed strictly: a duplicate key or a lone UTF-16 surrogate is an error (422),
not silently "last key wins" or a string that cannot be encoded later on.

``StrictJSONRoute`` is the route class of the service's routers: its requests parse JSON with
:func:`strict_loads`, whose errors FastAPI reports as ``json_invalid`` (the service's 422
``invalid_request``, "body is not valid JSON: ...").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:64]!r} in an object")
        out[key] = value
    return out


def _lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def strict_loads(body: bytes) -> Any:
    """``json.loads`` that raises ``json.JSONDecodeError`` on duplicate keys and lone surrogates."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError(f"the body is not UTF-8 ({exc.reason} at byte {exc.start})", "", 0) from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # from the hook
        raise json.JSONDecodeError(str(exc), text, 0) from None
    if _ESCAPED_SURROGATE.search(body) and _lone_surrogate(value):
        raise json.JSONDecodeError("a string holds a lone UTF-16 surrogate (not valid Unicode)", text, 0)
    return value


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler
