"""The ``[progress]`` scorer variant in the service: trajectory prefixes continued on the arm backend.

For every scored trajectory, ``ProgressScorer.apply`` cuts it at its steps
(``regime_w.progress.prefix_cuts``), has the arm model continue each prefix ``K`` times, values each
prefix by the share of its continuations that reach the target answer, and adds
``β_progress·s_prog`` to the trajectory's reward (the formulas: ``reward_service.regime_w.progress``).

- **One batch a request.** The prefixes of every item of a request are gathered first; each distinct
  (question, prefix) not in the cache is continued once, all of them in ONE ``generate`` call on the
  backend that generates the arms (cut in chunks of ``chunk_prompts`` prompts, each chunk one call
  under the backend's own deadline), in a worker thread. The request waits ``timeout_s`` for them (the
  service's ``GENERATION_TIMEOUT_S``, on top of its wait for the arms), then gets 504
  ``generation_timeout``; the generation goes on and fills the cache, so a retry is served from it.
- **The prompt.** The ``[progress]`` table's ``system`` / ``instruction`` with the question, then the
  prefix as the start of the assistant turn (``ArmPrompt.assistant_prefix``: the rendered prompt with
  its generation prompt, then the prefix, as the trainer's trajectory followed its prompt).
  Continuation ``k`` of a prefix has a seed that depends on (base seed, question, prefix, k) only,
  so a prefix's continuations are the same whether generated now or found in the cache.
- **The cache.** The answers of a prefix's continuations (never their texts) are kept in memory under
  the SHA-256 of (arm model, config fingerprint, question, prefix), bounded in entries and bytes
  (``shared_schemas.bounded_cache``): the samples of a GRPO group share their first steps, and a
  prefix is continued once, whichever sample (or later request) needs it again. Two requests in flight
  at once that need the same new prefix each generate it (no single flight here, unlike the arms).
- **The cost**, per trajectory (``TrajectoryProgress``): continuations generated for it (the first
  trajectory of the request that needs a prefix missing from the cache is charged its ``K``),
  continuations reused (the cache, or a trajectory before it in the request), and seconds (the batch's
  generation time, shared by the generated continuations). Metrics: ``regime_w_progress_continuations
  {cached="false"|"true"}`` and the ``regime_w_progress_seconds`` histogram, one observation a
  trajectory. Nothing of a prompt, a prefix or a continuation is returned or logged.

Only backend ``hf`` continues an assistant prefix (``CONTINUING_BACKENDS``); a config with
``[progress]`` on another backend fails at start.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from reward_service.errors import ArmModelUnavailable, GenerationDeadline, GenerationFailed, ServiceError
from reward_service.generation import ArmPrompt, GenerationBackend, GenerationError
from reward_service.metrics import Metrics
from reward_service.regime_w.config import ProgressSpec, RegimeWConfig
from reward_service.regime_w.progress import (
    continuation_answer,
    prefix_cuts,
    prefix_value,
    progress_reward,
    progress_target,
    s_prog,
    start_value,
)
from reward_service.regime_w.scorer import PreparedArms
from shared_schemas.answer import gold_answer
from shared_schemas.bounded_cache import ENTRY_OVERHEAD, BoundedCache
from shared_schemas.wire import TrajectoryScore

__all__ = [
    "CONTINUING_BACKENDS",
    "ContinuationCache",
    "ProgressItem",
    "ProgressScorer",
    "ProgressTotals",
    "TrajectoryProgress",
    "build_progress",
    "continuation_seed",
]

log = logging.getLogger("reward_service.progress")

#: the backends that continue ``ArmPrompt.assistant_prefix``
CONTINUING_BACKENDS = ("hf",)
#: the continuation cache's bounds (entries: one a prefix; bytes: keys, answers and bookkeeping)
DEFAULT_CACHE_ENTRIES = 262_144
DEFAULT_CACHE_BYTES = 128 * 1024 * 1024
#: prompts per ``generate`` call (each call runs under the backend's own deadline)
DEFAULT_CHUNK_PROMPTS = 256
#: how long a request waits for its continuations (the service passes its GENERATION_TIMEOUT_S)
DEFAULT_TIMEOUT_S = 90.0

Answers = tuple[str | None, ...]


def continuation_seed(base_seed: int, question: str, prefix: str, k: int) -> int:
    """The seed of continuation ``k`` of ``prefix``: depends only on (base seed, question, prefix, k)."""
    digest = hashlib.sha256(f"{base_seed}\x00progress\x00{k}\x00{question}\x00{prefix}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _answers_size(key: bytes, answers: Answers) -> int:
    return sys.getsizeof(key) + sys.getsizeof(answers) + sum(sys.getsizeof(a) for a in answers) + ENTRY_OVERHEAD


def _never(key: bytes) -> Answers:
    raise KeyError("the continuation cache is filled with put(), never computed")


class ContinuationCache:
    """The answers of each prefix's continuations, bounded in entries and bytes (least recently used out)."""

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._cache: BoundedCache[bytes, Answers] = BoundedCache(_never, max_entries, max_bytes, _answers_size)

    @staticmethod
    def key(model_id: str, fingerprint: str, question: str, prefix: str) -> bytes:
        parts = (model_id, fingerprint, question, prefix)
        return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).digest()

    def get(self, key: bytes) -> Answers | None:
        return self._cache.peek(key)

    def put(self, key: bytes, answers: Answers) -> None:
        self._cache.put(key, answers)

    def __len__(self) -> int:
        return self._cache.cache_info().entries


@dataclass(frozen=True, slots=True)
class ProgressItem:
    """One scored item: the question whose arms scored it, its trajectories, its gold (raw, or None)
    and its prepared arms (for ``v_0`` and, label-free, the consensus answer)."""

    question: str
    trajectories: Sequence[str]
    gold: str | None
    arms: PreparedArms


@dataclass(frozen=True, slots=True)
class TrajectoryProgress:
    """``s_prog`` of one trajectory and what it cost."""

    s_prog: float
    prefixes: int  # prefixes valued (continued or found in the cache)
    generated: int  # continuations generated for this trajectory (cache misses charged to it)
    reused: int  # continuations reused (cache hits, or generated for an earlier trajectory of the request)
    seconds: float  # its share of the request's generation time


@dataclass
class ProgressTotals:
    """Sums over every trajectory this scorer valued (benchmarks read them)."""

    trajectories: int = 0
    generated: int = 0
    reused: int = 0
    seconds: float = 0.0


@dataclass
class _Plan:
    targets: list[str | None]
    starts: list[float]
    prefixes: list[list[list[bytes]]]  # item -> trajectory -> the keys of its valued prefixes
    texts: dict[bytes, str]  # key -> prefix text, for the keys to generate
    answers: dict[bytes, Answers]  # key -> answers, the cached ones (generated ones are added)
    owner: dict[bytes, tuple[int, int]]  # key to generate -> the (item, trajectory) charged for it


class ProgressScorer:
    """Values trajectory prefixes with continuations from ``backend`` and adds ``β_progress·s_prog``."""

    def __init__(
        self,
        spec: ProgressSpec,
        backend: GenerationBackend,
        metrics: Metrics,
        *,
        model_id: str,
        fingerprint: str,
        rel_tol: float,
        seed: int = 0,
        cache: ContinuationCache | None = None,
        chunk_prompts: int = DEFAULT_CHUNK_PROMPTS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if chunk_prompts < 1:
            raise ValueError(f"chunk_prompts must be >= 1, got {chunk_prompts}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.spec = spec
        self.backend = backend
        self.metrics = metrics
        self.model_id = model_id
        self.fingerprint = fingerprint
        self.rel_tol = rel_tol
        self.seed = seed
        self.cache = cache if cache is not None else ContinuationCache()
        self.chunk_prompts = chunk_prompts
        self.timeout_s = timeout_s
        self.totals = ProgressTotals()

    def prompts(self, question: str, prefix: str) -> list[ArmPrompt]:
        """The ``K`` continuation prompts of one prefix."""
        messages = tuple((m["role"], m["content"]) for m in self.spec.render_messages(question))
        return [
            ArmPrompt(
                arm="progress",
                messages=messages,
                temperature=self.spec.temperature,
                top_p=self.spec.top_p,
                max_tokens=self.spec.max_tokens,
                seed=continuation_seed(self.seed, question, prefix, k),
                assistant_prefix=prefix,
            )
            for k in range(self.spec.continuations)
        ]

    def _plan(self, items: Sequence[ProgressItem]) -> _Plan:
        plan = _Plan([], [], [], {}, {}, {})
        for i, item in enumerate(items):
            gold = gold_answer(item.gold) if item.gold is not None else None
            target = progress_target(gold, item.arms)
            plan.targets.append(target)
            plan.starts.append(start_value(target, item.arms) if target is not None else 0.0)
            keyed: list[list[bytes]] = []
            plan.prefixes.append(keyed)
            for j, text in enumerate(item.trajectories):
                keys: list[bytes] = []
                keyed.append(keys)
                if target is None:  # nothing to reach: s_prog = 0, nothing generated
                    continue
                for cut in prefix_cuts(text, self.spec.max_prefixes, self.rel_tol):
                    prefix = text[:cut]
                    key = self.cache.key(self.model_id, self.fingerprint, item.question, prefix)
                    keys.append(key)
                    if key in plan.answers or key in plan.texts:
                        continue
                    found = self.cache.get(key)
                    if found is not None:
                        plan.answers[key] = found
                    else:
                        plan.texts[key] = prefix
                        plan.owner[key] = (i, j)
        return plan

    def _generate(self, items: Sequence[ProgressItem], plan: _Plan) -> None:
        """Continue every prefix to generate (in chunks of ``chunk_prompts``), parse and cache the answers."""
        questions = {key: items[i].question for key, (i, _) in plan.owner.items()}
        prompts: list[ArmPrompt] = []
        keys: list[bytes] = []
        for key, prefix in plan.texts.items():
            prompts.extend(self.prompts(questions[key], prefix))
            keys.append(key)
        texts: list[str] = []
        for lo in range(0, len(prompts), self.chunk_prompts):
            chunk = prompts[lo : lo + self.chunk_prompts]
            got = self.backend.generate(chunk)
            if len(got) != len(chunk) or not all(isinstance(t, str) for t in got):
                raise GenerationError(f"backend returned {len(got)} texts for {len(chunk)} continuation prompts")
            texts.extend(got)
        k = self.spec.continuations
        for n, key in enumerate(keys):
            prefix = plan.texts[key]
            answers = tuple(continuation_answer(prefix, t) for t in texts[n * k : (n + 1) * k])
            plan.answers[key] = answers
            self.cache.put(key, answers)

    def _value(self, plan: _Plan, seconds: float) -> list[list[TrajectoryProgress]]:
        k = self.spec.continuations
        generated_total = len(plan.texts) * k
        out: list[list[TrajectoryProgress]] = []
        for i, (target, start, keyed) in enumerate(zip(plan.targets, plan.starts, plan.prefixes)):
            row = []
            for j, keys in enumerate(keyed):
                generated = k * sum(1 for key in dict.fromkeys(keys) if plan.owner.get(key) == (i, j))
                values = [prefix_value(plan.answers[key], target) for key in keys] if target is not None else []
                row.append(
                    TrajectoryProgress(
                        s_prog=s_prog(start, values),
                        prefixes=len(keys),
                        generated=generated,
                        reused=k * len(keys) - generated,
                        seconds=seconds * generated / generated_total if generated_total else 0.0,
                    )
                )
            out.append(row)
        return out

    async def value(self, items: Sequence[ProgressItem]) -> list[list[TrajectoryProgress]]:
        """``s_prog`` and cost of every trajectory of ``items`` (one generation batch for the request)."""
        plan = await asyncio.to_thread(self._plan, items)
        seconds = 0.0
        if plan.texts:
            started = time.perf_counter()
            work = asyncio.ensure_future(asyncio.to_thread(self._generate, items, plan))
            # past a deadline (or a cancelled request) the generation goes on and fills the cache: its outcome
            # must not be reported as never retrieved
            work.add_done_callback(lambda f: f.cancelled() or f.exception())
            try:
                await asyncio.wait_for(asyncio.shield(work), timeout=self.timeout_s)
            except TimeoutError:
                raise GenerationDeadline(
                    f"continuing {len(plan.texts)} trajectory prefix(es) exceeded its {self.timeout_s:g} s deadline; "
                    "it continues in the background and a retry will be served from the cache"
                ) from None
            except Exception as exc:
                raise self._failure(exc, len(plan.texts)) from None
            seconds = time.perf_counter() - started
        found = await asyncio.to_thread(self._value, plan, seconds)
        self._count(found)
        return found

    async def apply(self, items: Sequence[ProgressItem], scores: Sequence[Sequence[TrajectoryScore]]) -> None:
        """``value`` the items, then add ``β_progress·s_prog`` to each trajectory's reward in ``scores``."""
        found = await self.value(items)
        beta = self.spec.beta_progress
        for item_scores, item_progress in zip(scores, found, strict=True):
            for score, progress in zip(item_scores, item_progress, strict=True):
                score.reward = progress_reward(score.reward, progress.s_prog, beta)

    def _count(self, found: list[list[TrajectoryProgress]]) -> None:
        generated = sum(p.generated for row in found for p in row)
        reused = sum(p.reused for row in found for p in row)
        seconds = 0.0
        trajectories = 0
        for row in found:
            for p in row:
                self.metrics.progress_seconds.observe(p.seconds)
                seconds += p.seconds
                trajectories += 1
        self.metrics.progress_continuations.labels(cached="false").inc(generated)
        self.metrics.progress_continuations.labels(cached="true").inc(reused)
        self.totals.trajectories += trajectories
        self.totals.generated += generated
        self.totals.reused += reused
        self.totals.seconds += seconds
        if generated:
            log.info(
                "progress: %d trajectories, %d continuations generated, %d reused, %.2f s",
                trajectories,
                generated,
                reused,
                seconds,
            )

    def _failure(self, exc: Exception, prefixes: int) -> ServiceError:
        """The error a request gets when its continuations could not be generated (nothing was cached):
        503 ``arm_model_unavailable`` for an outage or a deadline, else 502 ``generation_failed``. The
        backend's own message names no prompt (``GenerationError``); other exceptions only by type."""
        summary = str(exc) if isinstance(exc, GenerationError) else type(exc).__name__
        log.error("continuation generation failed for %d prefix(es): %s", prefixes, summary)
        if isinstance(exc, GenerationError) and exc.transient:
            return ArmModelUnavailable(
                f"arm model unavailable while continuing {prefixes} trajectory prefix(es); nothing was cached, "
                "retry later (details in the service log)"
            )
        return GenerationFailed(
            f"continuing {prefixes} trajectory prefix(es) failed on the arm model (details in the service log)"
        )


def build_progress(
    config: RegimeWConfig,
    backend: GenerationBackend | None,
    metrics: Metrics,
    *,
    model_id: str,
    seed: int = 0,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ProgressScorer | None:
    """The config's ``ProgressScorer``; None without a ``[progress]`` table. ``ValueError`` (a
    configuration mistake, not retried at start) when the backend cannot continue a prefix."""
    if config.progress is None:
        return None
    if backend is None or backend.name not in CONTINUING_BACKENDS:
        name = "provided" if backend is None else backend.name
        raise ValueError(
            f"the config's [progress] table needs a backend that continues trajectory prefixes "
            f"({', '.join(CONTINUING_BACKENDS)}); backend {name!r} does not"
        )
    return ProgressScorer(
        config.progress,
        backend,
        metrics,
        model_id=model_id,
        fingerprint=config.fingerprint,
        rel_tol=config.equation_rel_tol,
        seed=seed,
        timeout_s=timeout_s,
    )
