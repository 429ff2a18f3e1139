"""The scoring service: a validated ``ScoreRequest`` in, a ``ScoreResponse`` out.

``ScoringService`` checks the request against the deployment's limits (``reward_service.limits``),
gets arms (client-supplied, cached or generated), counts tokens when the client did not, and runs
the Regime W scorer; it also takes ``PrecomputeRequest``s (limits, then the arm provider). It is
shared by the HTTP routes and the offline ``regime-w-score`` CLI. Nothing it returns or logs
contains an arm prompt or arm text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from reward_service.arms import ArmProvider, QuestionArms
from reward_service.errors import InvalidRequest
from reward_service.limits import Limits, check_request
from reward_service.memo import PreparedMemo
from reward_service.metrics import Metrics
from reward_service.progress import ProgressItem, build_progress
from reward_service.regime_w.config import RegimeWConfig
from reward_service.regime_w.scorer import (
    ArmText,
    GoldAnswerError,
    PreparedArms,
    TrajectoryScores,
    UnknownArmError,
    prepare_arms,
    score_trajectories,
)
from shared_schemas.wire import (
    ItemResult,
    PrecomputeRequest,
    PrecomputeResponse,
    ScoreItem,
    ScoreRequest,
    ScoreResponse,
    ScorerInfo,
    TrajectoryScore,
    question_sha256,
)


def whitespace_tokens(texts: Sequence[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def to_wire(s: TrajectoryScores, details: bool) -> TrajectoryScore:
    if not details:
        return TrajectoryScore(reward=s.reward, final_answer=s.final_answer, format_ok=s.format_ok)
    return TrajectoryScore(
        reward=s.reward,
        correctness=s.correctness,
        s_end=s.s_end,
        s_path=s.s_path,
        s_cf=s.s_cf,
        s_wm=s.s_wm,
        length_penalty=s.length_penalty,
        num_tokens=s.num_tokens,
        final_answer=s.final_answer,
        format_ok=s.format_ok,
    )


TokenCounter = Callable[[Sequence[str]], "list[int] | None"]


class ScoringService:
    """Scores requests with the arms ``arms`` provides; ``count_tokens`` is the arm model's
    tokenizer (None: whitespace counts); ``model_name`` is the public name in every response."""

    def __init__(
        self,
        config: RegimeWConfig,
        arms: ArmProvider,
        metrics: Metrics,
        limits: Limits,
        *,
        model_name: str,
        count_tokens: TokenCounter | None = None,
        memo: PreparedMemo | None = None,
    ) -> None:
        self.config = config
        self.arms = arms
        self.metrics = metrics
        self.limits = limits
        self.count_tokens = count_tokens
        self.info = ScorerInfo(
            name=config.name, version=config.version, config_fingerprint=config.fingerprint, model=model_name
        )
        # parsed arms of recent questions: every request of a training run scores the same questions again
        self.memo = memo if memo is not None else PreparedMemo(max_items=4096, max_bytes=256 * 1024 * 1024)
        # the [progress] variant: prefixes continued on the arm backend (None without the table)
        self.progress = build_progress(
            config, arms.backend, metrics, model_id=arms.model_id, seed=arms.seed, timeout_s=arms.timeout_s
        )

    def prepare(self, question: str, arm_texts: tuple[ArmText, ...]) -> tuple[bytes, PreparedArms]:
        """``prepare_arms``, memoized on (question, arm texts): each arm text is parsed once."""
        return self.memo.get(question, arm_texts, lambda: prepare_arms(question, arm_texts, self.config))

    def _client_arms(self, i: int, item: ScoreItem) -> tuple[ArmText, ...]:
        assert item.arm_outputs is not None
        known = set(self.config.arm_names)
        unknown = sorted({a.arm for a in item.arm_outputs} - known)
        if unknown:
            raise InvalidRequest(
                f"items[{i}].arm_outputs: unknown arm name(s) {', '.join(map(repr, unknown))}; "
                f"known arms: {', '.join(self.config.arm_names)}"
            )
        if not item.arm_outputs:
            raise InvalidRequest(f"items[{i}].arm_outputs: empty list; omit it to have the service generate arms")
        return tuple(ArmText(arm=a.arm, text=a.text) for a in item.arm_outputs)

    def _count_tokens(self, item: ScoreItem) -> tuple[list[int], str]:
        if item.num_tokens is not None:
            return list(item.num_tokens), "client"
        counted = self.count_tokens(item.trajectories) if self.count_tokens is not None else None
        if counted is not None:
            return list(counted), "tokenizer"
        return whitespace_tokens(item.trajectories), "whitespace"

    async def gather_arms(self, request: ScoreRequest) -> list[QuestionArms]:
        """Arms of every item: the client's where given, else cached or generated (one batch); each with
        ``from_cache`` and the question they belong to (a known question found inside a wrapped one:
        ``ArmProvider.get``), which the scorer reads the question's numbers from."""
        out: list[QuestionArms | None] = [None] * len(request.items)
        need: list[int] = []
        for i, item in enumerate(request.items):
            if item.arm_outputs is not None:
                out[i] = QuestionArms(self._client_arms(i, item), from_cache=False, question=item.question)
            else:
                need.append(i)
        if need:
            got = await self.arms.get([request.items[i].question for i in need])
            for i, arms in zip(need, got):
                out[i] = arms
        return [a for a in out if a is not None]

    def score_items(self, request: ScoreRequest, arms: list[QuestionArms]) -> ScoreResponse:
        results = []
        n_traj = 0
        for i, (item, got) in enumerate(zip(request.items, arms)):
            question = got.question
            try:
                memo_key, prepared = self.prepare(question, got.arms)
            except UnknownArmError as exc:
                raise InvalidRequest(f"items[{i}].arm_outputs: {exc}") from None
            num_tokens, source = self._count_tokens(item)
            try:
                scores = score_trajectories(item.trajectories, num_tokens, prepared, self.config, item.gold_answer)
            except GoldAnswerError as exc:
                raise InvalidRequest(f"items[{i}].gold_answer: {exc}") from None
            self.memo.charge(memo_key, len(scores))
            n_traj += len(scores)
            results.append(
                ItemResult(
                    id=item.id,
                    consensus_answer=prepared.consensus_answer,
                    arms_from_cache=got.from_cache,
                    arms_question_sha256=question_sha256(question),  # whose arms: the item's or a known question's
                    label_free=item.gold_answer is None,
                    token_count_source=source,  # type: ignore[arg-type]
                    scores=[to_wire(s, request.return_details) for s in scores],
                )
            )
        self.metrics.items.inc(len(results))
        self.metrics.trajectories.inc(n_traj)
        return ScoreResponse(scorer=self.info, results=results)

    async def score(self, request: ScoreRequest) -> ScoreResponse:
        """Limits, arms, scores. Every step whose work grows with the request (the limit checks over
        every text, the cache lookups in ``ArmProvider.get``, parsing arms and trajectories, scoring)
        runs in a worker thread, whatever the request's size: the event loop only awaits, so one
        dense request never stalls the others (a small request pays two thread hops for it:
        docs/reliability.md, "One request blocks every other")."""
        await asyncio.to_thread(check_request, request, self.limits)
        arms = await self.gather_arms(request)
        response = await asyncio.to_thread(self.score_items, request, arms)
        if self.progress is not None:  # + β_progress·s_prog on every reward (reward_service.progress)
            items = await asyncio.to_thread(self.progress_items, request, arms)
            await self.progress.apply(items, [result.scores for result in response.results])
        return response

    def progress_items(self, request: ScoreRequest, arms: list[QuestionArms]) -> list[ProgressItem]:
        """What the ``[progress]`` scorer values: each item's question, trajectories, gold and prepared arms."""
        return [
            ProgressItem(got.question, item.trajectories, item.gold_answer, self.prepare(got.question, got.arms)[1])
            for item, got in zip(request.items, arms)
        ]

    async def precompute(self, request: PrecomputeRequest) -> PrecomputeResponse:
        """Limits, then the arms of every question generated into the cache (``ArmProvider.precompute``)."""
        check_request(request, self.limits)
        return PrecomputeResponse(**(await self.arms.precompute(request.questions)))
