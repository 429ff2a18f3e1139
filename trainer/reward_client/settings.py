"""How the reward client reaches the service: one frozen settings object.

``ClientSettings.from_env()`` resolves what is not given: the URL from ``REGIME_W_URL`` (else
``http://127.0.0.1:8000``; several services comma-separated, see ``trainer.reward_client.endpoints``),
the key from ``REGIME_W_API_KEY``, else the first key of the file named by ``REGIME_W_API_KEY_FILE``
(the service's key-file format), else no key. ``ClientSettings.from_args()`` is THE mapping of a
recipe's ``trainer.configs.RewardServiceArguments`` to client settings.

This module is the one source of the reward client's defaults (``DEFAULT_*`` below): the recipes'
``RewardServiceArguments`` (and so the CLI's help), the TRL rewards and the framework integrations'
``REGIME_W_*`` variables all read them from here.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict

from trainer.reward_client.endpoints import split_urls
from trainer.reward_client.errors import RewardServiceError
from trainer.reward_client.retry import RETRY_STATUSES

if TYPE_CHECKING:
    from typing import Unpack

    from trainer.configs import RewardServiceArguments

__all__ = [
    "DEFAULT_BASE_URL",
    "URL_ENV",
    "API_KEY_ENV",
    "DEFAULT_PATIENCE_S",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_BATCH_ITEMS",
    "ClientSettings",
    "SettingsFields",
    "resolve_base_url",
    "resolve_api_key",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
URL_ENV = "REGIME_W_URL"
API_KEY_ENV = "REGIME_W_API_KEY"
# Why these values (the service's defaults are in the README's settings table):
# - DEFAULT_TIMEOUT_S, one request's read timeout: a request waits on arm generation for at most the
#   service's GENERATION_TIMEOUT_S (90 s), then gets 504 + Retry-After and is retried; 120 s leaves 30 s
#   above it (tests/test_service_faults.py checks it), so the client hears the 504 instead of giving up
#   first. A read timeout is never retried, so a longer one only delays noticing a hung service. The
#   service's BACKEND_TIMEOUT_S (300 s) bounds a backend call, not a request: a request that meets a hung
#   call gets its 504 at 90 s and its retries end within DEFAULT_PATIENCE_S (the service checks
#   BACKEND_TIMEOUT_S + GENERATION_TIMEOUT_S <= CLIENT_PATIENCE_S = 600 s at start).
# - DEFAULT_BATCH_ITEMS, questions (ScoreItems) per /v1/score request: the service accepts up to MAX_ITEMS
#   (256), but a request's body must stay under its MAX_BODY_BYTES (8 MiB; 413 is final, not retried):
#   256 questions x 8 reasoning traces of ~4 KB is 8 MiB, 32 questions 1 MiB. 32 is also the service's
#   ARM_BATCH_QUESTIONS (questions per generation batch): a request's uncached questions are one
#   generation batch, not eight. A call of more questions is several requests: one after another
#   (RewardClient), or up to max_concurrency (8) at once (AsyncRewardClient).
# - DEFAULT_PATIENCE_S: how long one logical request keeps retrying an unavailable service (connection
#   errors, 429, 503, 504) before it gives up: long enough for the service to restart and reload an 8B
#   arm model.
DEFAULT_PATIENCE_S = 600.0
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_BATCH_ITEMS = 32
#: How long a URL that refused, dropped the connection or answered 429/503 is skipped (several URLs).
DEFAULT_DOWN_FOR_S = 30.0


class SettingsFields(TypedDict, total=False):
    """The keyword form of ``ClientSettings`` fields (every field but ``base_url`` / ``api_key``)."""

    timeout_s: float
    connect_timeout_s: float
    patience_s: float
    max_retries: int | None
    backoff_base_s: float
    backoff_max_s: float
    batch_items: int
    max_connections: int
    max_concurrency: int
    retry_statuses: frozenset[int]
    seed: int | None
    down_for_s: float


@dataclass(frozen=True)
class ClientSettings:
    """Everything a ``RewardClient`` / ``AsyncRewardClient`` needs; validated on construction.

    ``patience_s`` bounds the wall time one logical request (one batch, one precompute chunk) spends
    retrying a service that is down or overloaded; ``max_retries`` (None: no cap) optionally bounds
    the number of retries within it. ``timeout_s`` (default ``DEFAULT_TIMEOUT_S``, 120 s) is kept at
    least 30 s above the service's generation deadline (``REGIME_W_GENERATION_TIMEOUT_S``, default
    90 s), so the client hears the service's 504 + ``Retry-After`` rather than giving up first. A read
    timeout is never retried for scoring: the service already spent ``timeout_s`` on the request.
    ``batch_items`` (default ``DEFAULT_BATCH_ITEMS``, 32) questions go in one ``/v1/score`` request.
    """

    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = DEFAULT_TIMEOUT_S
    connect_timeout_s: float = 10.0
    patience_s: float = DEFAULT_PATIENCE_S
    max_retries: int | None = None
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    batch_items: int = DEFAULT_BATCH_ITEMS
    max_connections: int = 16
    max_concurrency: int = 8
    retry_statuses: frozenset[int] = RETRY_STATUSES
    seed: int | None = None
    down_for_s: float = DEFAULT_DOWN_FOR_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", _checked_urls(self.base_url))
        object.__setattr__(self, "retry_statuses", frozenset(self.retry_statuses))
        checks = {
            "timeout_s": self.timeout_s > 0,
            "connect_timeout_s": self.connect_timeout_s > 0,
            "patience_s": self.patience_s >= 0,
            "max_retries": self.max_retries is None or self.max_retries >= 0,
            "backoff_base_s": self.backoff_base_s >= 0,
            "backoff_max_s": self.backoff_max_s >= 0,
            "batch_items": self.batch_items > 0,
            "max_connections": self.max_connections > 0,
            "max_concurrency": self.max_concurrency > 0,
            "down_for_s": self.down_for_s >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                ", ".join(f"{name}={getattr(self, name)!r}" for name in bad) + " out of range "
                "(timeouts, batch_items, max_connections, max_concurrency > 0; patience, retries, "
                "backoff >= 0)"
            )

    @classmethod
    def from_env(
        cls,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        api_key_env: str = API_KEY_ENV,
        **fields: Unpack[SettingsFields],
    ) -> ClientSettings:
        """Settings with the URL and key resolved from the environment where not given."""
        return cls(base_url=resolve_base_url(base_url), api_key=resolve_api_key(api_key, env=api_key_env), **fields)

    @classmethod
    def from_args(cls, args: RewardServiceArguments, **fields: Unpack[SettingsFields]) -> ClientSettings:
        """Settings from a recipe's ``RewardServiceArguments`` (keywords override; key from the env it names)."""
        mapped: SettingsFields = {
            "timeout_s": args.reward_timeout_s,
            "patience_s": args.reward_patience_s,
            "max_retries": args.reward_max_retries,
            "batch_items": args.reward_batch_items,
        }
        mapped.update(fields)
        return cls.from_env(args.reward_url, api_key_env=args.reward_api_key_env, **mapped)

    @property
    def urls(self) -> tuple[str, ...]:
        """The service URLs (``base_url`` may list several, comma-separated); requests go round robin."""
        return split_urls(self.base_url)

    def replace(self, **changes: object) -> ClientSettings:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _checked_urls(value: str) -> str:
    """One URL, or several comma-separated, each http(s) without a trailing slash, joined by ``,``."""
    urls = split_urls(value)
    if not urls:
        raise RewardServiceError(f"no reward service URL in {value!r}")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise RewardServiceError(f"reward service URL must start with http:// or https://, got {url!r}")
    return ",".join(urls)


def resolve_base_url(base_url: str | None) -> str:
    """``base_url``, else env ``REGIME_W_URL``, else ``http://127.0.0.1:8000``; no trailing slash
    (several URLs, comma-separated, come back as such: ``ClientSettings.urls`` splits them)."""
    return _checked_urls(base_url or os.environ.get(URL_ENV) or DEFAULT_BASE_URL)


def resolve_api_key(api_key: str | None, *, env: str = API_KEY_ENV) -> str | None:
    """``api_key``, else env ``<env>``, else the first key in the file named by env ``<env>_FILE``
    (one key a line, ``#`` comments — the service's key-file format)."""
    if api_key:
        return api_key
    from_env = os.environ.get(env)
    if from_env:
        return from_env.strip()
    key_file = os.environ.get(f"{env}_FILE")
    if not key_file:
        return None
    try:
        with open(key_file, encoding="utf-8") as fh:
            lines = (line.split("#", 1)[0].strip() for line in fh)
            key = next((line for line in lines if line), "")
    except OSError as exc:
        raise RewardServiceError(f"{env}_FILE names {key_file!r}, which cannot be read: {exc}") from exc
    if not key:
        raise RewardServiceError(f"{env}_FILE names {key_file!r}, which is empty")
    return key
