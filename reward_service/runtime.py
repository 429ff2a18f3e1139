"""The composition root of the service: settings in, a running scorer out.

``Runtime.start(settings)`` builds, in order, the private Regime W config, the generation backend,
the arm cache, the arm provider (its generation worker started) and the scoring service;
``close()`` stops and releases them in reverse. The HTTP app's lifespan and every console script
(``regime-w-score``, ``regime-w-precompute``) build the service here and nowhere else, so every
setting means the same thing wherever the scorer runs.

``ServiceState`` is what the HTTP app holds while the runtime loads in the background: the
runtime once it is up, or the reason it is not (``require`` turns that into a 503). A start that
fails (the model cannot be loaded, the arm model's server does not answer its readiness probe) is
tried again ``BACKEND_LOAD_ATTEMPTS`` times with a doubling backoff while ``/readyz`` answers 503 +
``Retry-After``; after the last try the state calls ``on_fatal`` with a one-line reason (the CLI
stops the server and exits 1; under a multi-worker uvicorn the worker exits with uvicorn's
startup-failure status, which stops the supervisor too). Configuration mistakes (``ValueError``)
are not retried. An arm store that cannot be reached at start (PostgreSQL down: ``StoreUnavailable``)
is retried the same way.

While running, ``Runtime`` polls the arm store every ``CACHE_POLL_S`` for questions that another
process wrote (``regime-w-precompute``, another replica) and adds them to the provider's question
index, so a wrapped prompt finds them without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from reward_service.arm_cache import ArmCache
from reward_service.arms import ArmProvider, ProviderOptions
from reward_service.errors import NotReady, StoreUnavailable
from reward_service.generation import PROVIDED_MODEL_ID, GenerationBackend, create_backend
from reward_service.generation.base import probe_backend
from reward_service.limits import Limits
from reward_service.memo import PreparedMemo
from reward_service.metrics import Metrics
from reward_service.regime_w.config import RegimeWConfig, load_config
from reward_service.scoring import ScoringService
from reward_service.settings import Settings
from reward_service.store import ArmStore, PostgresOptions, open_store
from shared_schemas.wire import InfoResponse

log = logging.getLogger("reward_service")

#: exit status of a worker whose backend never loaded: uvicorn's STARTUP_FAILURE, so a multi-worker
#: supervisor stops instead of starting the worker again
EXIT_STARTUP_FAILURE = 3


def provider_options(settings: Settings) -> ProviderOptions:
    return ProviderOptions(
        seed=settings.seed,
        timeout_s=settings.generation_timeout_s,
        batch_window_s=settings.generation_batch_window_ms / 1000.0,
        max_pending=settings.max_pending_questions,
        max_batch_questions=settings.arm_batch_questions,
        concurrency=settings.generation_slots,
        claim_lease_s=settings.cache_claim_lease_s,
    )


def open_arm_store(settings: Settings) -> ArmStore | None:
    """The persistent arm store the settings name (``CACHE_URL``, else ``CACHE_PATH``); None: memory only."""
    return open_store(settings.cache_store_url(), PostgresOptions(password_file=settings.cache_password_file))


def open_arm_cache(settings: Settings) -> ArmCache:
    """The arm store behind the in-memory LRU."""
    return ArmCache(open_arm_store(settings), settings.cache_memory_items, settings.cache_memory_bytes)


@dataclass
class Runtime:
    """One running scorer: every part built from one ``Settings``."""

    settings: Settings
    config: RegimeWConfig
    metrics: Metrics
    backend: GenerationBackend | None  # None: backend 'provided' (no model)
    cache: ArmCache
    provider: ArmProvider
    scoring: ScoringService
    follower: asyncio.Task[None] | None = None  # learns questions other processes stored

    @classmethod
    async def start(
        cls, settings: Settings, *, metrics: Metrics | None = None, limits: Limits | None = None
    ) -> Runtime:
        """Build and start everything; the backend loads in a worker thread (a model load blocks)."""
        metrics = metrics or Metrics()
        config = await asyncio.to_thread(load_config, settings.config_path)
        backend = await asyncio.to_thread(create_backend, settings.backend_config())
        try:
            await asyncio.to_thread(probe_backend, backend)
            cache = await asyncio.to_thread(open_arm_cache, settings)
        except BaseException:
            if backend is not None:
                backend.close()
            raise
        model_id = backend.model_id if backend is not None else PROVIDED_MODEL_ID
        try:
            # the cursor first: a question stored while the index loads is read again, never missed
            cursor = await asyncio.to_thread(cache.question_cursor)
            provider = ArmProvider(backend, model_id, config, cache, metrics, provider_options(settings))
        except BaseException:
            cache.close()
            if backend is not None:
                backend.close()
            raise
        await provider.start()
        follower = None
        if cache.store is not None:
            follower = asyncio.create_task(
                follow_questions(provider, cursor, settings.cache_poll_s), name="regime-w-question-follower"
            )
        metrics.queue_depth.set_function(lambda: provider.pending)
        scoring = ScoringService(
            config,
            provider,
            metrics,
            limits or Limits.from_settings(settings),
            model_name=settings.public_model_name(model_id),
            count_tokens=backend.count_tokens if backend is not None else None,
            memo=PreparedMemo(settings.prepared_memo_items, settings.prepared_memo_bytes),
        )
        return cls(settings, config, metrics, backend, cache, provider, scoring, follower)

    @classmethod
    @asynccontextmanager
    async def running(
        cls, settings: Settings, *, metrics: Metrics | None = None, limits: Limits | None = None
    ) -> AsyncIterator[Runtime]:
        """``start`` ... ``close`` as an ``async with`` block (the console scripts)."""
        runtime = await cls.start(settings, metrics=metrics, limits=limits)
        try:
            yield runtime
        finally:
            await runtime.close()

    async def close(self) -> None:
        if self.follower is not None:
            self.follower.cancel()
            try:
                await self.follower
            except asyncio.CancelledError:
                pass
        await self.provider.stop()
        self.cache.close()
        if self.backend is not None:
            self.backend.close()

    @property
    def backend_name(self) -> str:
        return self.settings.backend

    def info(self) -> InfoResponse:
        """The public facts of ``GET /v1/info``: arm names and limits, never prompts or paths."""
        return InfoResponse(
            scorer=self.scoring.info,
            backend=self.backend_name,
            arms=list(self.config.arm_names),
            limits=self.scoring.limits.public(),
        )


async def follow_questions(provider: ArmProvider, cursor: int, interval_s: float) -> None:
    """Every ``interval_s``: add the questions stored since ``cursor`` (by this or any other process)
    to the provider's question index. A store outage skips a round (logged by the store)."""
    cache, model_id, fingerprint = provider.cache, provider.model_id, provider.config.fingerprint
    while True:
        await asyncio.sleep(interval_s)
        try:
            new, cursor = await asyncio.to_thread(cache.questions_since, model_id, fingerprint, cursor)
        except StoreUnavailable:
            continue
        except Exception as exc:  # never end the follower: the next round may succeed
            log.error("reading new questions from the arm store failed: %s", type(exc).__name__)
            continue
        if new:
            added = provider.questions.add_many(new)
            if added:
                log.info("learned %d question(s) stored by another process", added)


def exit_startup_failure(reason: str) -> None:
    """The default ``on_fatal``: end this process at once with ``EXIT_STARTUP_FAILURE`` (the reason
    is already logged; nothing was started that needs closing)."""
    logging.shutdown()
    os._exit(EXIT_STARTUP_FAILURE)


def _keep_serving_503(reason: str) -> None:
    """``on_fatal`` of an app built without one (tests, embedding): ``/readyz`` stays 503."""


class ServiceState:
    """The HTTP app's one piece of state: settings, metrics, and the runtime once it has loaded.

    ``on_fatal(reason)`` is called once when the last try to start the runtime failed (default:
    nothing, ``/readyz`` stays 503; the servers pass ``exit_startup_failure`` or a stop of their
    own); ``fatal`` then holds that one-line reason."""

    def __init__(self, settings: Settings, metrics: Metrics, on_fatal: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.runtime: Runtime | None = None
        self.load_error: str | None = None
        self.fatal: str | None = None
        self.on_fatal = on_fatal or _keep_serving_503
        self._retry_at: float | None = None  # time.monotonic() of the next try while one is scheduled

    def require(self) -> Runtime:
        """The runtime, or ``NotReady`` (503 + Retry-After) saying why there is none yet."""
        if self.runtime is not None:
            return self.runtime
        if self.fatal is not None:
            raise NotReady(self.fatal, retry_after_s=30)
        if self.load_error is not None and self._retry_at is not None:
            wait = max(1, round(self._retry_at - time.monotonic()))
            raise NotReady(f"the model failed to load ({self.load_error}); trying again", retry_after_s=wait)
        raise NotReady("the model is still loading; retry shortly")

    async def load(self) -> None:
        """Start the runtime, trying again with backoff; the last failure calls ``on_fatal``."""
        attempts = self.settings.backend_load_attempts
        for attempt in range(1, attempts + 1):
            try:
                runtime = await Runtime.start(self.settings, metrics=self.metrics)
                break
            except Exception as exc:
                self.load_error = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
                if attempt == attempts or isinstance(exc, ValueError):
                    self._give_up(attempt)
                    return
                delay = self.settings.load_retry_delay(attempt)
                log.warning(
                    "the backend failed to load (attempt %d of %d): %s; trying again in %.1f s",
                    attempt,
                    attempts,
                    self.load_error,
                    delay,
                )
                self._retry_at = time.monotonic() + delay
                await asyncio.sleep(delay)
        else:
            return
        self.runtime = runtime
        self._retry_at = None
        self.load_error = None
        self.metrics.ready.set(1)
        log.info(
            "ready: backend=%s model=%s config=%s",
            runtime.backend_name,
            runtime.scoring.info.model,
            runtime.config.fingerprint,
        )

    def _give_up(self, attempts: int) -> None:
        self._retry_at = None
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        self.fatal = f"the backend failed to load after {tries}: {self.load_error}"
        log.error("%s; exiting", self.fatal)
        self.on_fatal(self.fatal)

    async def close(self) -> None:
        runtime, self.runtime = self.runtime, None
        self.metrics.ready.set(0)
        if runtime is not None:
            await runtime.close()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """The app's lifespan: load in the background (probes answer meanwhile), close at the end."""
        loader = asyncio.create_task(self.load(), name="regime-w-load")
        try:
            yield
        finally:
            loader.cancel()
            try:
                await loader
            except asyncio.CancelledError:
                pass
            await self.close()
