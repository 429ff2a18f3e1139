"""Each question's arms generated once across a fleet of replicas sharing one arm store.

``FleetClaims`` sits between the provider's generation queue and its backend. Before a batch is
generated, ``split`` claims its keys in the store (``ArmStore.claim``: a row per key with a lease):

- keys this replica claimed are generated here; ``holding`` renews their lease every third of it
  while the backend runs, and releases them if the generation fails (a success drops them in the
  same transaction that writes the arms);
- keys another live replica holds are watched (``watch``): every ``poll_s`` the store is read for
  their arms (a hit resolves the waiting requests), and the claim is tried again, so a key whose
  holder died (no heartbeat: its lease ran out) is taken over and queued for generation here.

A request keeps its own deadline while it waits (504 + ``Retry-After`` from the provider); the watch
goes on and fills the memory layer for the retry. A store that cannot be reached fails the batch's
requests with ``StoreUnavailable`` (503 + ``Retry-After``): generating without a claim would cost
the fleet duplicate generations it cannot write anyway. With no persistent store (memory only)
every key is this replica's and nothing is watched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

from reward_service.errors import StoreUnavailable
from reward_service.regime_w.scorer import ArmText

log = logging.getLogger("reward_service.fleet")

#: how often a replica waiting on another's claim reads the store
DEFAULT_POLL_S = 0.25


class PendingQuestion(Protocol):
    """What the provider queues: a key and the future its requests wait on."""

    key: str
    future: asyncio.Future[tuple[ArmText, ...]]


class ClaimStore(Protocol):
    """The part of ``ArmCache`` the fleet uses (blocking; called in a worker thread)."""

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[tuple[ArmText, ...], str]]: ...

    def claim(self, keys: Sequence[str], owner: str, lease_s: float) -> list[str]: ...

    def heartbeat(self, keys: Sequence[str], owner: str, lease_s: float) -> None: ...

    def release(self, keys: Sequence[str], owner: str) -> None: ...


def replica_id() -> str:
    """This process's claim owner: host, pid and a random part (a restarted pid is another owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class FleetClaims:
    """Claims, heartbeats and watches of one replica (module docstring)."""

    def __init__(
        self,
        cache: ClaimStore,
        lease_s: float,
        *,
        poll_s: float = DEFAULT_POLL_S,
        owner: str | None = None,
        on_found: Callable[[Any, tuple[ArmText, ...]], None],
        on_failed: Callable[[Any, StoreUnavailable], None],
        on_taken_over: Callable[[Any], None],
    ) -> None:
        self.cache = cache
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.owner = owner or replica_id()
        self.on_found = on_found
        self.on_failed = on_failed
        self.on_taken_over = on_taken_over
        self._watchers: set[asyncio.Task[None]] = set()
        self.waited = 0  # questions another replica generated for this one's requests
        self.taken_over = 0  # questions whose holder's lease ran out, generated here

    async def split(self, batch: Sequence[Any]) -> list[Any]:
        """The pending questions of ``batch`` this replica must generate; the rest are watched."""
        if not batch:
            return []
        try:
            mine = set(await asyncio.to_thread(self.cache.claim, [p.key for p in batch], self.owner, self.lease_s))
        except StoreUnavailable as exc:
            for p in batch:
                self.on_failed(p, exc)
            return []
        theirs = [p for p in batch if p.key not in mine]
        if theirs:
            self.watch(theirs)
        return [p for p in batch if p.key in mine]

    def watch(self, pending: Sequence[PendingQuestion]) -> None:
        task = asyncio.create_task(self._watch(list(pending)), name="regime-w-fleet-watch")
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _watch(self, pending: list[PendingQuestion]) -> None:
        while pending:
            await asyncio.sleep(self.poll_s)
            keys = [p.key for p in pending]
            try:
                found = await asyncio.to_thread(self.cache.get_many, keys)
                rest = [p for p in pending if p.key not in found]
                mine = set(await asyncio.to_thread(self.cache.claim, [p.key for p in rest], self.owner, self.lease_s))
            except StoreUnavailable:
                continue  # the store is back soon or the requests' deadlines end their wait
            for p in pending:
                if p.key in found:
                    self.waited += 1
                    self.on_found(p, found[p.key][0])
                elif p.key in mine:
                    self.taken_over += 1
                    log.warning("took over a question whose claim expired (its replica stopped renewing it)")
                    self.on_taken_over(p)
            pending = [p for p in pending if p.key not in found and p.key not in mine]

    @asynccontextmanager
    async def holding(self, keys: Sequence[str]) -> AsyncIterator[None]:
        """Renew the claims on ``keys`` while the block runs; release them if it raises."""
        beat = asyncio.create_task(self._heartbeat(list(keys)), name="regime-w-fleet-heartbeat")
        try:
            yield
        except BaseException:
            await self.release(keys)
            raise
        finally:
            beat.cancel()
            try:
                await beat
            except asyncio.CancelledError:
                pass

    async def _heartbeat(self, keys: list[str]) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await asyncio.to_thread(self.cache.heartbeat, keys, self.owner, self.lease_s)
            except StoreUnavailable:
                pass  # the next beat may reach it; past the lease another replica may take over

    async def release(self, keys: Sequence[str]) -> None:
        """Drop this replica's claims (best effort: an unreachable store lets them expire)."""
        try:
            await asyncio.to_thread(self.cache.release, list(keys), self.owner)
        except StoreUnavailable:
            pass

    async def stop(self) -> None:
        for task in list(self._watchers):
            task.cancel()
        for task in list(self._watchers):
            try:
                await task
            except asyncio.CancelledError:
                pass
