"""Bearer-key authentication. Keys are compared in constant time.

The check runs twice over: ``middleware.AuthMiddleware`` answers 401 from the headers before any
body is read, and ``require_api_key`` (a route dependency) declares the bearer scheme in the
OpenAPI document and checks again, so a route is never reachable without a key by mistake.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from reward_service.errors import Unauthorized

bearer_scheme = HTTPBearer(auto_error=False, description="an API key of this service: `Authorization: Bearer <key>`")


def _matches(presented: bytes, keys: tuple[bytes, ...]) -> bool:
    ok = False
    for key in keys:  # compare against every key, so timing says nothing about which matched
        ok |= hmac.compare_digest(presented, key)
    return ok


def check_authorization(header: str | None, keys: tuple[bytes, ...]) -> str | None:
    """None when ``header`` carries one of ``keys`` (or no key is configured), else what is wrong."""
    if not keys:  # --insecure-no-auth
        return None
    if not header:
        return "missing Authorization header: send 'Authorization: Bearer <key>'"
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "Authorization must be 'Bearer <key>'"
    if not _matches(token.strip().encode("utf-8", "surrogateescape"), keys):
        return "invalid API key"
    return None


async def require_api_key(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],  # the scheme, in OpenAPI
) -> None:
    from reward_service.routers.deps import service_state

    problem = check_authorization(request.headers.get("authorization"), service_state(request).api_keys)
    if problem is not None:
        raise Unauthorized(problem)
