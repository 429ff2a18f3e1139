"""Bearer-key authentication, a FastAPI dependency. Keys are compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import Request

from reward_service.errors import Unauthorized
from reward_service.routers.deps import service_state


def _matches(presented: bytes, keys: tuple[bytes, ...]) -> bool:
    ok = False
    for key in keys:  # compare against every key, so timing says nothing about which matched
        ok |= hmac.compare_digest(presented, key)
    return ok


async def require_api_key(request: Request) -> None:
    keys = service_state(request).api_keys
    if not keys:  # --insecure-no-auth
        return
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("missing Authorization header: send 'Authorization: Bearer <key>'")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization must be 'Bearer <key>'")
    if not _matches(token.strip().encode("utf-8"), keys):
        raise Unauthorized("invalid API key")
