"""Bearer-key authentication, checked in one place: ``AuthMiddleware``. Keys are compared in constant time.

The middleware answers 401 from the ``Authorization`` header before any body is read, on every path
but ``PUBLIC_PATHS`` (probes, the scraper, the API description): a route added later is keyed
unless it is listed there. The OpenAPI document states the same rule (``reward_service.openapi``
marks every operation outside ``PUBLIC_PATHS`` with ``BEARER_SCHEME``).

The middleware reads the keys from one ``KeyRing``, which ``reload()`` refills from the settings' sources
(``REGIME_W_API_KEYS`` and the file ``REGIME_W_API_KEYS_FILE``): the app calls it on SIGHUP, so keys
rotate without a restart (as nginx reloads its configuration). New keys are accepted and removed
ones refused from the next request on; a key file that cannot be read, breaks a key rule or holds
no key at all leaves the keys in use as they were and logs one line, which never holds a key.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from reward_service.errors import Unauthorized
from reward_service.middleware import send_error
from reward_service.settings import Settings, load_keys

log = logging.getLogger("reward_service.auth")

#: routes anyone may call: probes, the scraper and the API description
PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)

#: the OpenAPI security scheme every operation outside ``PUBLIC_PATHS`` requires
BEARER_SCHEME_NAME = "HTTPBearer"
BEARER_SCHEME: dict[str, Any] = {
    "type": "http",
    "description": "an API key of this service: `Authorization: Bearer <key>`",
    "scheme": "bearer",
}


class KeyRing:
    """The API keys accepted now (UTF-8 bytes); ``reload`` reads their sources again."""

    def __init__(self, settings: Settings) -> None:
        self._api_keys = settings.api_keys
        self._api_keys_file = settings.api_keys_file
        self._keys = tuple(k.encode("utf-8") for k in settings.keys)

    @property
    def keys(self) -> tuple[bytes, ...]:
        """The keys in use (empty: no authentication, ``--insecure-no-auth``)."""
        return self._keys

    def reload(self) -> bool:
        """Read the keys again; True when the new set is in use. On any problem the keys in use stay
        and one line is logged (where and what, never a key)."""
        if self._api_keys_file is None:
            log.warning("API keys not reloaded: REGIME_W_API_KEYS_FILE is not set (REGIME_W_API_KEYS needs a restart)")
            return False
        try:
            keys = load_keys(self._api_keys, self._api_keys_file)
        except ValueError as exc:
            problem = " ".join(str(exc).split())
            log.error("API keys not reloaded, the %d key(s) in use are kept: %s", len(self._keys), problem)
            return False
        if not keys and self._keys:
            log.error(
                "API keys not reloaded, the %d key(s) in use are kept: REGIME_W_API_KEYS_FILE %s holds no key "
                "(the service would serve without authentication)",
                len(self._keys),
                self._api_keys_file,
            )
            return False
        self._keys = tuple(k.encode("utf-8") for k in keys)  # one assignment: a request sees the old or the new set
        log.info("API keys reloaded from REGIME_W_API_KEYS_FILE %s: %d key(s)", self._api_keys_file, len(keys))
        return True


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


class AuthMiddleware:
    """401 from the ``Authorization`` header alone, before the body is read, on every path but
    ``PUBLIC_PATHS``, against the keys ``keyring`` holds now (reloaded on SIGHUP). No keys
    configured (``--insecure-no-auth``): everything passes."""

    def __init__(self, app: ASGIApp, keyring: KeyRing) -> None:
        self.app = app
        self.keyring = keyring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        keys = self.keyring.keys
        if scope["type"] == "http" and keys and scope.get("path", "") not in PUBLIC_PATHS:
            header = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), None)
            problem = check_authorization(header.decode("latin-1") if header is not None else None, keys)
            if problem is not None:
                refused = Unauthorized(problem)
                await send_error(send, refused.status, refused.code, refused.message, refused.headers)
                return
        await self.app(scope, receive, send)
