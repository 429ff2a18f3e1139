"""Getting the arm texts of questions: cache first, else one batched generation, never twice.

``ArmProvider.get`` is called by every request. Its cache lookups (and the question-index search for
a known question inside a wrapped prompt) run in a worker thread, never on the event loop. Questions
already cached return at once; the rest join a queue. A dispatcher drains it into *batches*: when a
generation slot is free it takes the first queued question, waits a few milliseconds for more, and
hands every queued question (up to ``max_batch_questions``, the setting ``ARM_BATCH_QUESTIONS``) to one batch task, which renders every
arm prompt of them and sends them to the backend in ONE ``generate`` call (in a thread of the
provider's own pool, one thread a slot). Up to ``concurrency`` batches run at once
(``GENERATION_CONCURRENCY``): a batch whose backend call hangs holds its slot until its deadline, and
the questions behind it go out in the other slots. Identical questions in flight share one future,
so concurrent requests for one question generate it once. A request that outlives its deadline gets
a 504, but the generation goes on and fills the cache for the retry.

One batch, start to end, is ``_run_batch``: ``_produce`` (render + generate in the pool) and
``_publish`` (cache write, then the waiters' futures) or ``_fail`` (every waiter gets the error).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from reward_service.arm_cache import ArmCache, cache_key
from reward_service.errors import (
    ArmModelUnavailable,
    ArmsUnavailable,
    GenerationDeadline,
    GenerationFailed,
    Overloaded,
    ServiceError,
    StoreUnavailable,
)
from reward_service.generation import ArmPrompt, GenerationBackend, GenerationError, GenerationTimeout
from reward_service.metrics import Metrics
from reward_service.question_index import QuestionIndex
from reward_service.redact import Redactor
from reward_service.regime_w.config import RegimeWConfig
from reward_service.regime_w.scorer import ArmText
from reward_service.settings import DEFAULT_ARM_BATCH_QUESTIONS
from reward_service.store import ArmRow
from reward_service.store.fleet import FleetClaims

log = logging.getLogger("reward_service.arms")


def arm_seed(base_seed: int, question: str, arm: str, sample: int) -> int:
    """A seed that depends only on (base seed, question, arm, sample): stable across processes."""
    digest = hashlib.sha256(f"{base_seed}\x00{arm}\x00{sample}\x00{question}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def render_arm_prompts(question: str, config: RegimeWConfig, base_seed: int) -> list[ArmPrompt]:
    """Every arm prompt of one question: ``n`` samples per arm, each with its own seed."""
    prompts = []
    for spec in config.arms:
        messages = tuple((m["role"], m["content"]) for m in spec.render_messages(question))
        for j in range(spec.n):
            prompts.append(
                ArmPrompt(
                    arm=spec.name,
                    messages=messages,
                    temperature=spec.temperature,
                    top_p=spec.top_p,
                    max_tokens=spec.max_tokens,
                    seed=arm_seed(base_seed, question, spec.name, j),
                )
            )
    return prompts


@dataclass(frozen=True)
class QuestionArms:
    """The arms that score one question, as ``ArmProvider.get`` (or the client) supplies them."""

    arms: tuple[ArmText, ...]
    from_cache: bool  # found in the arm cache (False: generated for this request, or sent by the client)
    question: str  # whose arms: the question as sent, or the known question found inside it


@dataclass
class _Pending:
    key: str
    question: str
    future: asyncio.Future[tuple[ArmText, ...]]


@dataclass(frozen=True)
class ProviderOptions:
    """How the provider batches and waits (from the service settings)."""

    seed: int = 0
    timeout_s: float = 90.0  # the service setting GENERATION_TIMEOUT_S's default
    batch_window_s: float = 0.005
    max_pending: int = 4096
    max_batch_questions: int = DEFAULT_ARM_BATCH_QUESTIONS  # the service setting ARM_BATCH_QUESTIONS
    concurrency: int = 1  # generation batches in flight at once (the service setting GENERATION_CONCURRENCY)
    claim_lease_s: float = 30.0  # a claim on questions being generated (the service setting CACHE_CLAIM_LEASE_S)


class ArmProvider:
    """Arms of questions from the cache or one batched generation. ``backend=None``: no model
    (backend ``provided``), only cached arms are served and every other request must carry them."""

    def __init__(
        self,
        backend: GenerationBackend | None,
        model_id: str,
        config: RegimeWConfig,
        cache: ArmCache,
        metrics: Metrics,
        options: ProviderOptions = ProviderOptions(),
    ) -> None:
        self.backend = backend
        self.model_id = model_id
        self.config = config
        self.cache = cache
        self.metrics = metrics
        self.seed = options.seed
        self.timeout_s = options.timeout_s
        self.batch_window_s = options.batch_window_s
        self.max_pending = options.max_pending
        self.max_batch_questions = options.max_batch_questions
        self.concurrency = options.concurrency
        self.redactor = Redactor(config)
        self._inflight: dict[str, asyncio.Future[tuple[ArmText, ...]]] = {}
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None  # the dispatcher
        self._slots: asyncio.Semaphore | None = None  # one permit a batch in flight
        self._batches: set[asyncio.Task[None]] = set()
        self._pool: ThreadPoolExecutor | None = None  # the backend calls: one thread a slot
        # the questions cached for this model and config, findable inside a wrapped prompt (lookup, get)
        self.questions = QuestionIndex()
        self.questions.add_many(cache.questions(model_id, config.fingerprint))
        metrics.arm_questions_indexed.set_function(lambda: len(self.questions))
        metrics.arm_questions_not_indexed.set_function(lambda: self.questions.dropped)
        # replicas sharing the arm store generate each question once (reward_service.store.fleet)
        self.fleet = FleetClaims(
            cache,
            options.claim_lease_s,
            on_found=self._found_elsewhere,
            on_failed=lambda p, exc: self._fail([p], exc),
            on_taken_over=self._requeue,
        )

    @property
    def can_generate(self) -> bool:
        return self.backend is not None

    @property
    def pending(self) -> int:
        """Questions waiting for (or in) generation."""
        return len(self._inflight)

    def key(self, question: str) -> str:
        return cache_key(self.model_id, self.config.fingerprint, question)

    async def start(self) -> None:
        if self._worker is None and self.backend is not None:
            self._queue = asyncio.Queue()
            self._slots = asyncio.Semaphore(self.concurrency)
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="regime-w-generate")
            self._worker = asyncio.create_task(self._run(self.backend), name="regime-w-arm-generation")

    async def stop(self) -> None:
        await self.fleet.stop()
        tasks = [t for t in (self._worker, *self._batches) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._worker = None
        self._batches.clear()
        if self._pool is not None:  # a call in flight ends at its own deadline; nobody waits for it
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        for fut in self._inflight.values():
            if not fut.done():
                fut.set_exception(GenerationFailed("service shutting down"))
        self._inflight.clear()

    def _resolve(self, question: str) -> tuple[str, tuple[tuple[ArmText, ...], str] | None]:
        """The question whose arms serve ``question`` (itself when cached as sent, else the known question
        it contains: ``reward_service.question_index``) and that question's cached arms, if any."""
        found = self.cache.get(self.key(question))
        if found is not None or not len(self.questions):
            return question, found
        match = self.questions.find(question)
        if match is None:
            return question, None
        self.metrics.arm_question_matches.labels(how=match.how).inc()
        if match.question is None:
            return question, None
        return match.question, self.cache.get(self.key(match.question))

    def _learn(self, questions: Sequence[str]) -> None:
        """Index questions whose arms are cached; record the text of the new ones beside their keys."""
        new = [q for q in questions if self.questions.add(q)]
        if new:
            self.cache.put_questions((self.key(q), self.model_id, self.config.fingerprint, q) for q in new)

    def resolve(self, question: str) -> str:
        """The question whose arms serve ``question``: itself, or the known question it contains."""
        return self._resolve(question)[0]

    def lookup(self, question: str) -> tuple[ArmText, ...] | None:
        """Cached arms of a question, or of the known question it contains; None (counts hits)."""
        _, found = self._resolve(question)
        if found is None:
            return None
        arms, layer = found
        self.metrics.arm_cache_hits.labels(layer=layer).inc()
        return arms

    def _lookup_all(self, questions: Sequence[str]) -> list[tuple[str, tuple[tuple[ArmText, ...], str] | None]]:
        """``_resolve`` of every question (cache reads, index searches: a worker thread's work), counting
        the hits; the cached questions the index does not know yet are added to it."""
        found = [self._resolve(q) for q in questions]
        for _, hit in found:
            if hit is not None:
                self.metrics.arm_cache_hits.labels(layer=hit[1]).inc()
        unindexed = self.questions.unknown(resolved for resolved, hit in found if hit is not None)
        if unindexed:  # cached before the index knew them (a cache file of an older version)
            self._learn(unindexed)
        return found

    async def get(self, questions: Sequence[str]) -> list[QuestionArms]:
        """Arms of each question, in order, each with ``from_cache`` and the question whose arms they are
        (the question as sent, or the known question it contains: score against that one)."""
        found = await asyncio.to_thread(self._lookup_all, questions)
        results: list[QuestionArms | None] = [None] * len(questions)
        waits: dict[int, asyncio.Future[tuple[ArmText, ...]]] = {}
        for i, (resolved, hit) in enumerate(found):
            if hit is not None:
                results[i] = QuestionArms(hit[0], from_cache=True, question=resolved)
                continue
            if not self.can_generate:
                raise ArmsUnavailable(
                    f"backend 'provided' generates no arms: items[{i}].arm_outputs is required "
                    f"(arms: {', '.join(self.config.arm_names)})"
                )
            waits[i] = self._enqueue(resolved)
        if waits:
            self.metrics.arm_cache_misses.inc(len(waits))
            try:
                done = await asyncio.wait_for(
                    asyncio.gather(*(asyncio.shield(f) for f in waits.values())), timeout=self.timeout_s
                )
            except TimeoutError:
                raise GenerationDeadline(
                    f"arm generation for {len(waits)} question(s) exceeded its {self.timeout_s:g} s deadline; "
                    "it continues in the background and a retry will be served from the cache"
                ) from None
            for i, arms in zip(waits, done):
                results[i] = QuestionArms(arms, from_cache=False, question=found[i][0])
            await asyncio.to_thread(self._learn, [found[i][0] for i in waits])
        return [r for r in results if r is not None]

    def _enqueue(self, question: str) -> asyncio.Future[tuple[ArmText, ...]]:
        key = self.key(question)
        fut = self._inflight.get(key)
        if fut is not None:
            self.metrics.arm_inflight_joins.inc()
            return fut
        assert self._queue is not None, "ArmProvider.start() was not called"
        if len(self._inflight) >= self.max_pending:
            raise Overloaded(
                f"{len(self._inflight)} questions are waiting for arm generation (limit {self.max_pending})",
                retry_after_s=max(1, int(self.timeout_s // 10)),
            )
        fut = asyncio.get_running_loop().create_future()
        # a failed generation must not be reported as "never retrieved" when nobody waits any more
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._inflight[key] = fut
        self._queue.put_nowait(_Pending(key, question, fut))
        return fut

    async def _run(self, backend: GenerationBackend) -> None:
        """The dispatcher: a free slot first (questions queue meanwhile and go out together), then the
        next batch, in a task of its own."""
        assert self._slots is not None
        while True:
            await self._slots.acquire()
            try:
                batch = await self._next_batch()
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.create_task(self._run_batch(backend, batch), name="regime-w-arm-batch")
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _next_batch(self) -> list[_Pending]:
        """The first queued question, then every one queued within the batch window (up to the batch size)."""
        assert self._queue is not None
        batch = [await self._queue.get()]
        if self.batch_window_s > 0:
            await asyncio.sleep(self.batch_window_s)
        while len(batch) < self.max_batch_questions and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _run_batch(self, backend: GenerationBackend, batch: list[_Pending]) -> None:
        """One batch in one slot: its arms generated, then cached and handed to its waiters."""
        assert self._slots is not None
        try:
            mine = await self.fleet.split(batch)  # the rest: another replica generates them (watched)
            if mine:
                async with self.fleet.holding([p.key for p in mine]):
                    await self._generate(backend, mine)
        finally:
            self._slots.release()

    def _found_elsewhere(self, p: _Pending, arms: tuple[ArmText, ...]) -> None:
        """Another replica stored the arms of a question this one waited on."""
        self._inflight.pop(p.key, None)
        if not p.future.done():
            p.future.set_result(arms)

    def _requeue(self, p: _Pending) -> None:
        """A question whose claim this replica took over (its holder stopped): generate it here."""
        if self._queue is not None:
            self._queue.put_nowait(p)

    async def _generate(self, backend: GenerationBackend, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            loop = asyncio.get_running_loop()
            prompts, entries = await loop.run_in_executor(self._pool, self._produce, backend, batch)
        except Exception as exc:
            self.metrics.generation_failures.inc()
            await self.fleet.release([p.key for p in batch])
            self._fail(batch, self._failure(exc, len(batch)))
            return
        elapsed = time.perf_counter() - started
        self.metrics.generation_seconds.observe(elapsed)
        self.metrics.arm_generations.inc(prompts)
        await self._publish(batch, entries)
        log.info("generated arms for %d question(s) (%d prompts) in %.2f s", len(batch), prompts, elapsed)

    def _produce(self, backend: GenerationBackend, batch: Sequence[_Pending]) -> tuple[int, list[ArmRow]]:
        """In the generation pool: every arm prompt of the batch rendered and sent in ONE ``generate``
        call; the number of prompts and the cache entries of the batch's questions, in order."""
        prompts: list[ArmPrompt] = []
        spans: list[tuple[int, int]] = []
        for p in batch:
            rendered = render_arm_prompts(p.question, self.config, self.seed)
            spans.append((len(prompts), len(prompts) + len(rendered)))
            prompts.extend(rendered)
        texts = backend.generate(prompts)
        if len(texts) != len(prompts):
            raise GenerationError(f"backend returned {len(texts)} texts for {len(prompts)} prompts")
        if not all(isinstance(t, str) for t in texts):  # never cache what is not a text
            raise GenerationError("backend returned an arm that is not a string")
        entries = []
        for p, (lo, hi) in zip(batch, spans):
            arms = tuple(ArmText(arm=pr.arm, text=t) for pr, t in zip(prompts[lo:hi], texts[lo:hi]))
            entries.append(ArmRow(p.key, self.model_id, self.config.fingerprint, arms, p.question))
        return len(prompts), entries

    async def _publish(self, batch: Sequence[_Pending], entries: list[ArmRow]) -> None:
        """Store a batch's arms with their questions (one transaction), then hand them to its waiters. A
        store that cannot be reached fails them with 503 ``store_unavailable``: an answer means stored
        (another replica finds the arms); a store error of another kind is logged and the arms served."""
        try:
            await asyncio.to_thread(self.cache.put_arms, entries)
        except StoreUnavailable as exc:
            await self.fleet.release([p.key for p in batch])
            self._fail(batch, exc)
            return
        except Exception as exc:
            log.error("arm cache write failed: %s", type(exc).__name__)
        self.questions.add_many(e.question for e in entries if e.question is not None)
        for p, row in zip(batch, entries):
            self._inflight.pop(p.key, None)
            if not p.future.done():
                p.future.set_result(row.arms)

    def _fail(self, batch: Sequence[_Pending], error: ServiceError) -> None:
        """Every waiter of a batch gets ``error``; nothing of it is cached."""
        for p in batch:
            self._inflight.pop(p.key, None)
            if not p.future.done():
                p.future.set_exception(error)

    def _failure(self, exc: Exception, questions: int) -> GenerationFailed | ArmModelUnavailable:
        """Log a failed generation and build the error its waiters get: 503 ``arm_model_unavailable``
        (with ``Retry-After``) for an outage (``GenerationError.transient``: unreachable, timed out,
        429/502/503/504), else 502 ``generation_failed``. Neither holds foreign text: the upstream's
        body (or a library's message) may echo the arm prompts, so it goes to the DEBUG log only,
        redacted; the response names the upstream status and a request id to look up. Nothing of a
        failed generation is cached (``_generate`` writes the cache on success only)."""
        request_id = uuid.uuid4().hex[:16]
        transient = isinstance(exc, GenerationError) and exc.transient
        if isinstance(exc, GenerationError):
            summary, status, detail = str(exc), exc.upstream_status, exc.detail
        else:
            summary, status, detail = type(exc).__name__, None, str(exc)
        log.error(
            "arm generation failed for %d question(s) [request %s]%s: %s",
            questions,
            request_id,
            " (arm model unavailable)" if transient else "",
            summary,
        )
        if detail and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "arm generation failure detail [request %s] (redacted): %s", request_id, self.redactor.redact(detail)
            )
        if isinstance(exc, GenerationTimeout):
            what = "the arm model exceeded its deadline"
        elif status is not None and status < 400:
            what = f"the arm model's server sent a reply of an unexpected shape (HTTP {status})"
        elif status is not None:
            what = f"the arm model's server answered HTTP {status}"
        elif transient:
            what = "the arm model's server could not be reached"
        else:
            what = "the arm model failed"
        where = f"(request id {request_id}; details in the service log)"
        if transient:
            return ArmModelUnavailable(f"arm model unavailable: {what}; nothing was cached, retry later {where}")
        return GenerationFailed(f"arm generation failed: {what} {where}")

    async def precompute(self, questions: Sequence[str]) -> dict[str, int]:
        """Fill the cache for many questions (deduplicated); returns counts."""
        unique = list(dict.fromkeys(questions))
        missing = await asyncio.to_thread(self._uncached, unique)
        if missing and not self.can_generate:
            raise ArmsUnavailable("backend 'provided' generates no arms: nothing to precompute")
        step = self.max_batch_questions * self.concurrency  # a batch for every slot at a time
        for lo in range(0, len(missing), step):
            chunk = missing[lo : lo + step]
            await asyncio.gather(*(asyncio.shield(self._enqueue(q)) for q in chunk))
        await asyncio.to_thread(self._learn_unknown, unique)
        return {"questions": len(unique), "generated": len(missing), "already_cached": len(unique) - len(missing)}

    def _uncached(self, questions: Sequence[str]) -> list[str]:
        """The questions without cached arms (cache reads: a worker thread's work)."""
        return [q for q in questions if self.cache.get(self.key(q)) is None]

    def _learn_unknown(self, questions: Sequence[str]) -> None:
        unindexed = self.questions.unknown(questions)
        if unindexed:
            self._learn(unindexed)
