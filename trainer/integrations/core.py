"""What the framework integrations share: settings from the environment, one scoring call for a
list of samples, and coalescers that merge concurrent per-sample calls into one HTTP request.

The samples are scored by the ``regime_w`` scorer of ``trainer.reward_modes.make_scorer`` (the one
dispatch from a reward mode to its scorer; ``REGIME_W_LABEL_FREE`` is its ``label_free``), and the
client's defaults are ``trainer.reward_client.settings``'s: ``REGIME_W_BATCH_ITEMS``,
``REGIME_W_TIMEOUT_S`` and ``REGIME_W_PATIENCE_S`` override them.

OpenRLHF and verl's reward loop call a reward function once per sample, from many threads
(OpenRLHF: ``asyncio.to_thread``; verl's ``naive`` manager: an executor) or many coroutines (verl's
async ``compute_score``). A coalescer keeps at most one scoring request in flight: a call that
finds none sends at once, calls that arrive meanwhile queue and go out together in the next request
(the samples of one question grouped into one item, so its arms are looked up once), and each caller
gets its own scores back. Once concurrency has been seen (a request carried more than one caller),
a sender first waits up to ``coalesce_ms`` for the rest of a burst (or until ``coalesce_max``
samples wait). Sequential callers
(verl's legacy ``naive`` manager) thus pay no wait; a burst of N concurrent samples costs one or two
requests; samples finishing over time cost about one request per round trip.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from shared_schemas.wire import TrajectoryScore
from trainer.errors import RewardFailed, RewardInputError
from trainer.reward_client.settings import DEFAULT_BATCH_ITEMS, DEFAULT_PATIENCE_S, DEFAULT_TIMEOUT_S
from trainer.reward_modes import ScoreGroup, Scorer, make_scorer
from trainer.rewards import RewardBatch, build_groups, scatter_scores

__all__ = [
    "ENV_PREFIX",
    "LOG_KEYS",
    "IntegrationError",
    "RewardFailed",
    "reward_failed",
    "IntegrationSettings",
    "Sample",
    "score_samples",
    "score_samples_async",
    "score_fields",
    "SyncCoalescer",
    "AsyncCoalescer",
    "shared_sync_coalescer",
    "shared_async_coalescer",
    "reset_shared",
]

log = logging.getLogger("trainer.integrations")

ENV_PREFIX = "REGIME_W_"
#: Per-sample values every integration reports beside the reward (the same keys for every sample).
LOG_KEYS = ("s_end", "s_path", "s_cf", "s_wm", "length_penalty", "correctness", "label_free")


class IntegrationError(RewardInputError):
    """A sample the integration cannot score as given (the message says what to add or change); a
    ``trainer.errors.RewardInputError`` (so a ``TrainerError`` and a ``ValueError``).

    ``RewardFailed`` (``trainer.errors``, re-exported here) is what the framework files raise from it
    or from any other failure: a ``BaseException``, for the reasons its docstring gives."""


def reward_failed(what: str, exc: BaseException, why: str) -> RewardFailed:
    """Log ``exc`` at ERROR and return the ``RewardFailed`` to raise from it (``raise ... from exc``):
    ``what`` names the call (``"2 OpenRLHF queries"``), ``why`` the handler it has to pass."""
    message = f"Regime W reward failed for {what}: {type(exc).__name__}: {exc}"
    log.error("%s", message)
    return RewardFailed(f"{message} (raised as RewardFailed so that {why})")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(ENV_PREFIX + name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise IntegrationError(f"{ENV_PREFIX}{name}={raw!r} is not a number") from None


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(ENV_PREFIX + name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise IntegrationError(f"{ENV_PREFIX}{name}={raw!r}: use 1/0, true/false")


@dataclass(frozen=True)
class IntegrationSettings:
    """How an integration reaches the service; every field from ``REGIME_W_*`` (see ``from_env``).

    The URL and the API key are resolved by the client itself (``REGIME_W_URL``,
    ``REGIME_W_API_KEY`` or the file named by ``REGIME_W_API_KEY_FILE``).
    """

    label_free: bool = False  # REGIME_W_LABEL_FREE: never send the gold
    batch_items: int = DEFAULT_BATCH_ITEMS  # REGIME_W_BATCH_ITEMS: questions per HTTP request
    timeout_s: float = DEFAULT_TIMEOUT_S  # REGIME_W_TIMEOUT_S: one request's read timeout
    coalesce_ms: float = 20.0  # REGIME_W_COALESCE_MS: how long a sender waits for the rest of a burst
    coalesce_max: int = 4096  # REGIME_W_COALESCE_MAX: send at once when this many samples wait
    client_fields: Mapping[str, Any] = field(default_factory=dict)  # more client keywords (patience_s, ...)

    @classmethod
    def from_env(cls) -> IntegrationSettings:
        fields: dict[str, Any] = {}
        if os.environ.get(ENV_PREFIX + "PATIENCE_S"):
            fields["patience_s"] = _env_float("PATIENCE_S", DEFAULT_PATIENCE_S)
        settings = cls(
            label_free=_env_bool("LABEL_FREE", False),
            batch_items=int(_env_float("BATCH_ITEMS", DEFAULT_BATCH_ITEMS)),
            timeout_s=_env_float("TIMEOUT_S", DEFAULT_TIMEOUT_S),
            coalesce_ms=_env_float("COALESCE_MS", 20.0),
            coalesce_max=int(_env_float("COALESCE_MAX", 4096)),
            client_fields=fields,
        )
        if settings.batch_items < 1 or settings.coalesce_max < 1 or settings.coalesce_ms < 0 or settings.timeout_s <= 0:
            raise IntegrationError(f"out of range: {settings} (batch_items, coalesce_max >= 1; coalesce_ms >= 0)")
        return settings

    def client_kwargs(self) -> dict[str, Any]:
        return {"timeout_s": self.timeout_s, "batch_items": self.batch_items, **self.client_fields}

    def scorer(self) -> Scorer:
        """The ``regime_w`` scorer of these settings (its client is built, from the environment's URL
        and key, at the first request)."""
        return make_scorer("regime_w", label_free=self.label_free, **self.client_kwargs())


@dataclass(frozen=True)
class Sample:
    """One response to score: its question, the response text, and the gold (None: label-free)."""

    question: str
    response: str
    gold: str | None


def _groups(samples: Sequence[Sample], scorer: Scorer) -> tuple[list[ScoreGroup], list[list[int]]]:
    """The samples of one (question, gold) as one group (a label-free scorer never reads the gold)."""
    batch = RewardBatch(
        questions=[s.question for s in samples],
        texts=[s.response for s in samples],
        golds=[s.gold for s in samples],
    )
    return build_groups(batch, need_questions=scorer.needs_question)


def score_samples(scorer: Scorer, samples: Sequence[Sample]) -> list[TrajectoryScore]:
    """Every sample's score in one ``scorer.score`` call (the samples of one question in one group;
    for the service, ``ceil(questions / batch_items)`` requests)."""
    if not samples:
        return []
    groups, positions = _groups(samples, scorer)
    return scatter_scores(len(samples), positions, scorer.score(groups))


async def score_samples_async(scorer: Scorer, samples: Sequence[Sample]) -> list[TrajectoryScore]:
    """``score_samples`` on the event loop (``scorer.ascore``)."""
    if not samples:
        return []
    groups, positions = _groups(samples, scorer)
    return scatter_scores(len(samples), positions, await scorer.ascore(groups))


def score_fields(score: TrajectoryScore, labelled: bool) -> dict[str, float]:
    """The reward, a 0-1 ``score01`` (correctness when labelled, ``s_wm`` when label-free) and the
    ``LOG_KEYS`` of one sample, as plain floats (``correctness`` is 0 where label-free)."""
    out = {"reward": float(score.reward)}
    value = score.correctness if labelled else score.s_wm
    out["score01"] = min(1.0, max(0.0, float(value))) if value is not None else 0.0
    for key in LOG_KEYS[:-1]:
        v = getattr(score, key)
        out[key] = float(v) if v is not None else 0.0
    out["label_free"] = 0.0 if labelled else 1.0
    return out


# ------------------------------------------------------------------------------------ coalescers


class SyncCoalescer:
    """Merge per-sample calls from many threads into few HTTP requests (see the module docstring).

    ``requests`` counts the scoring calls sent (one call is several HTTP requests only past
    ``batch_items`` questions); ``last_callers`` how many calls the last one carried;
    ``concurrency_seen`` whether any request has carried more than one (from then on a sender first
    waits up to ``coalesce_ms`` for the rest of a burst, or until ``coalesce_max`` samples wait)."""

    def __init__(self, settings: IntegrationSettings) -> None:
        self.settings = settings
        self._cond = threading.Condition()
        self._pending: list[tuple[list[Sample], Future[list[TrajectoryScore]]]] = []
        self._waiting = 0
        self._sending = False
        self.scorer = settings.scorer()
        self.requests = 0
        self.last_callers = 0
        self.concurrency_seen = False

    def close(self) -> None:
        """Close the scorer's client (a later call builds a new one)."""
        self.scorer.close()

    def score(self, samples: Sequence[Sample]) -> list[TrajectoryScore]:
        future: Future[list[TrajectoryScore]] = Future()
        with self._cond:
            self._pending.append((list(samples), future))
            self._waiting += len(samples)
            self._cond.notify_all()
            while not future.done() and self._sending:
                self._cond.wait()
            if future.done():
                return future.result()
            self._sending = True
        try:
            self._send_one()
        finally:
            with self._cond:
                self._sending = False
                self._cond.notify_all()  # a queued caller becomes the next sender
        return future.result()

    def _send_one(self) -> None:
        with self._cond:
            if self.concurrency_seen and self.settings.coalesce_ms > 0:
                deadline = time.monotonic() + self.settings.coalesce_ms / 1000.0
                while self._waiting < self.settings.coalesce_max:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            taken, self._pending, self._waiting = self._pending, [], 0
            self.last_callers = len(taken)
            self.concurrency_seen = self.concurrency_seen or len(taken) > 1
        flat = [s for samples, _ in taken for s in samples]
        try:
            scores = score_samples(self.scorer, flat)
        except BaseException as exc:  # every caller of this request gets the error, not a hang
            for _, future in taken:
                future.set_exception(exc)
            return
        finally:
            self.requests += 1
        at = 0
        for samples, future in taken:
            future.set_result(scores[at : at + len(samples)])
            at += len(samples)


class AsyncCoalescer:
    """``SyncCoalescer`` for the coroutines of one event loop (verl's async reward loop)."""

    def __init__(self, settings: IntegrationSettings) -> None:
        self.settings = settings
        self._pending: list[tuple[list[Sample], asyncio.Future[list[TrajectoryScore]]]] = []
        self._waiting = 0
        self._sending = False
        self._changed: asyncio.Condition | None = None
        self.scorer = settings.scorer()
        self.requests = 0
        self.last_callers = 0
        self.concurrency_seen = False

    async def aclose(self) -> None:
        """Close the scorer's client (a later call builds a new one on its loop)."""
        await self.scorer.aclose()

    async def score(self, samples: Sequence[Sample]) -> list[TrajectoryScore]:
        if self._changed is None:
            self._changed = asyncio.Condition()
        changed = self._changed
        future: asyncio.Future[list[TrajectoryScore]] = asyncio.get_running_loop().create_future()
        async with changed:
            self._pending.append((list(samples), future))
            self._waiting += len(samples)
            changed.notify_all()
            while not future.done() and self._sending:
                await changed.wait()
            if future.done():
                return future.result()
            self._sending = True
        try:
            await self._send_one(changed)
        finally:
            async with changed:
                self._sending = False
                changed.notify_all()
        return future.result()

    async def _send_one(self, changed: asyncio.Condition) -> None:
        async with changed:
            if self.concurrency_seen and self.settings.coalesce_ms > 0:
                deadline = time.monotonic() + self.settings.coalesce_ms / 1000.0
                while self._waiting < self.settings.coalesce_max:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        await asyncio.wait_for(changed.wait(), left)
                    except TimeoutError:
                        break
            taken, self._pending, self._waiting = self._pending, [], 0
            self.last_callers = len(taken)
            self.concurrency_seen = self.concurrency_seen or len(taken) > 1
        flat = [s for samples, _ in taken for s in samples]
        try:
            scores = await score_samples_async(self.scorer, flat)
        except BaseException as exc:
            for _, future in taken:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        finally:
            self.requests += 1
        at = 0
        for samples, future in taken:
            if not future.done():
                future.set_result(scores[at : at + len(samples)])
            at += len(samples)


# ------------------------------------------------------------------ the process's shared coalescers
#
# The framework files keep no state of their own: verl's ``remote`` reward manager hands our function
# to Ray actors, and Ray pickles it with cloudpickle. A file loaded by path is pickled BY VALUE, with
# every module global its functions reach, so a lock or a client there fails the manager's
# construction (``cannot pickle '_thread.lock' object``). This module is imported by name, so its
# functions are pickled BY REFERENCE and each process (each Ray actor) builds its own state on first use.

_shared_lock = threading.Lock()
_shared_sync: dict[str, SyncCoalescer] = {}
_shared_async: dict[str, weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncCoalescer]] = {}
_shared_settings: dict[str, IntegrationSettings] = {}


def _owner_settings(owner: str) -> IntegrationSettings:
    found = _shared_settings.get(owner)
    if found is None:
        found = _shared_settings[owner] = IntegrationSettings.from_env()
    return found


def shared_sync_coalescer(owner: str) -> SyncCoalescer:
    """This process's ``SyncCoalescer`` of integration ``owner`` (``"verl"``, ``"openrlhf"``), built
    from the environment at the first call."""
    with _shared_lock:
        found = _shared_sync.get(owner)
        if found is None:
            found = _shared_sync[owner] = SyncCoalescer(_owner_settings(owner))
        return found


def shared_async_coalescer(owner: str) -> AsyncCoalescer:
    """This process's ``AsyncCoalescer`` of ``owner`` for the running event loop (one per loop)."""
    loop = asyncio.get_running_loop()
    with _shared_lock:
        per_loop = _shared_async.setdefault(owner, weakref.WeakKeyDictionary())
        found = per_loop.get(loop)
        if found is None:
            found = per_loop[loop] = AsyncCoalescer(_owner_settings(owner))
        return found


def reset_shared(owner: str) -> None:
    """Close ``owner``'s sync client and forget its settings (the next call reads the environment)."""
    with _shared_lock:
        old = _shared_sync.pop(owner, None)
        _shared_async.pop(owner, None)
        _shared_settings.pop(owner, None)
    if old is not None:
        old.close()
