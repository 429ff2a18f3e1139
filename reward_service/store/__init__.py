"""Persistent arm stores: SQLite (one host, the default) and PostgreSQL (N replicas share one).

``open_store(url)`` builds the store a cache URL names:

- ``sqlite:///relative/path.sqlite3`` or ``sqlite:////absolute/path.sqlite3`` (three slashes, then
  the path: four for an absolute one), or a plain path: ``SqliteArmStore``;
- ``postgresql://user@host:port/db`` (or ``postgres://``; libpq query parameters allowed):
  ``PostgresArmStore``; the password comes from ``PostgresOptions.password_file`` (a secret),
  never from the URL in a deployment;
- ``None`` / ``none``: no persistent store (memory only).

``resolve_cache_url(cache_url, cache_path)``: the service settings' rule. ``CACHE_URL`` wins when
both are set; else ``CACHE_PATH`` means ``sqlite:///CACHE_PATH``.
"""

from __future__ import annotations

from pathlib import Path

from reward_service.store.base import ArmRow, ArmStore, StoredRow, cache_key, decode_payload, encode_payload
from reward_service.store.postgres import PostgresArmStore, PostgresOptions, redact_url
from reward_service.store.sqlite import SqliteArmStore

__all__ = [
    "ArmRow",
    "ArmStore",
    "PostgresArmStore",
    "PostgresOptions",
    "SqliteArmStore",
    "StoredRow",
    "cache_key",
    "decode_payload",
    "encode_payload",
    "is_postgres_url",
    "open_store",
    "redact_url",
    "resolve_cache_url",
    "sqlite_path",
]

_NONE = {"", "none", "off", "memory"}


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///path`` URL (or of a plain path)."""
    if url.startswith("sqlite:///"):
        rest = url[len("sqlite:///") :]
        if not rest:
            raise ValueError("a sqlite cache URL needs a path: sqlite:///relative/path or sqlite:////absolute/path")
        return Path(rest)
    if "://" in url:
        raise ValueError(
            f"unknown arm cache URL scheme in {redact_url(url)!r}: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
        )
    return Path(url)


def resolve_cache_url(cache_url: str | None, cache_path: str | None) -> str | None:
    """The store URL of the settings: ``cache_url`` when set, else ``sqlite:///cache_path``, else None."""
    if cache_url is not None and cache_url.strip().lower() not in _NONE:
        return cache_url.strip()
    if cache_url is not None:  # CACHE_URL=none: memory only, whatever CACHE_PATH says
        return None
    if cache_path is None or cache_path.strip().lower() in _NONE:
        return None
    return f"sqlite:///{cache_path}"


def open_store(url: str | None, postgres: PostgresOptions | None = None) -> ArmStore | None:
    """The store ``url`` names (module docstring); ``ValueError`` for a malformed URL,
    ``StoreUnavailable`` when PostgreSQL cannot be reached."""
    if url is None or url.strip().lower() in _NONE:
        return None
    if is_postgres_url(url):
        return PostgresArmStore(url, postgres or PostgresOptions())
    return SqliteArmStore(sqlite_path(url))
