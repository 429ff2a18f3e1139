"""TRL reward functions over the scorers of ``trainer.reward_modes``, and the Regime W service scorer.

``ServiceScorer`` is the ``regime_w`` scorer of ``trainer.reward_modes.make_scorer``: the Regime W
service over HTTP (a ``RewardClient``, or an ``AsyncRewardClient`` built on the caller's event loop),
the gold left out when label-free. ``build_reward_functions(args)`` wraps the scorer of a recipe's
``reward`` as the TRL reward function of that mode.

TRL's ``GRPOTrainer`` calls every reward function as
``f(prompts=..., completions=..., completion_ids=..., log_metric=..., log_extra=..., **dataset_columns)``
with one entry per completion (each prompt repeated ``num_generations`` times), and awaits it on its
own event loop when ``__call__`` is a coroutine function.

- ``RegimeWReward`` (sync) and ``AsyncRegimeWReward`` (async, for TRL's async reward loop) score the
  completions over HTTP. The completions of one question (and gold answer) go out as one
  ``ScoreItem``, so the service looks up the arms of each question once per call; all items of a call
  go out in ``ceil(items / batch_items)`` requests (one, for a GRPO step of up to ``batch_items``
  questions).
- ``CorrectnessReward`` and ``MajorityReward`` (``ControlReward``s) are the controls of
  ``trainer.reward_modes`` (no service): answer == gold, and the label-free vote among one question's
  samples.

Where each field comes from: the question from the ``question`` column, the data set's raw question
(else read back from the prompt by ``question_text``: the last user turn of a conversational prompt,
or a string prompt without its chat-template markup, each without the trainer's instruction), so the
service finds the arms precomputed for the raw question instead of generating arms for the prompt;
the gold from ``gold_answer`` (else a GSM8K-style
``answer`` column reduced to its ``#### N`` value, else a ``solution`` column (TRL's math data sets:
a worked solution ending in ``\boxed{N}`` or ``#### N``) reduced to its final answer; none, or
``label_free=True`` -> label-free, and a Regime W reward that gets no gold column without
``label_free=True`` logs a warning once, naming the columns it did get); the
item id from an ``id`` column (else a hash of the question); token counts from ``completion_ids``.
A conversational completion is its assistant turns; a turn's ``reasoning_content`` (what TRL's
``parse_response`` splits off a reasoning model's output) is sent back in front of the content as
``<think>…</think>``, so the service scores the whole path, not only the final answer.

Logged through TRL's ``log_metric`` per call: ``regime_w/s_end``, ``regime_w/s_path``,
``regime_w/s_cf``, ``regime_w/s_wm``, ``regime_w/length_penalty``, ``regime_w/correctness`` (when
labelled), ``regime_w/format_ok``, ``regime_w/wait_s`` (seconds waited on the service) and
``regime_w/http_calls``; ``log_extra`` gets each completion's ``final_answer``. Outside TRL,
``reward.score(questions, completions, gold_answers)`` returns every ``TrajectoryScore``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared_schemas.answer import gold_answer as normalize_gold
from shared_schemas.rl_frameworks import question_from_prompt, strip_instruction
from shared_schemas.wire import ScoreItem, ScoreResponse, TrajectoryScore
from trainer.reward_client import AsyncRewardClient, ClientSettings, RewardClient
from trainer.reward_client.settings import DEFAULT_BATCH_ITEMS
from trainer.reward_modes import (
    CorrectnessScorer,
    GroupScores,
    MajorityScorer,
    ScoreGroup,
    Scorer,
    scorer_from_args,
)

__all__ = [
    "COMPONENTS",
    "RewardBatch",
    "ServiceScorer",
    "RegimeWReward",
    "AsyncRegimeWReward",
    "ControlReward",
    "CorrectnessReward",
    "MajorityReward",
    "build_reward_functions",
    "trl_reward_function",
    "completion_text",
    "question_text",
    "read_batch",
    "build_groups",
    "scatter_scores",
]

#: The score components logged per call (``regime_w/<name>``).
COMPONENTS = ("s_end", "s_path", "s_cf", "s_wm")

_SCORE_FIELDS = frozenset(TrajectoryScore.model_fields)
_REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")


# ------------------------------------------------------------------------------------ reading TRL input


def _content_text(content: Any) -> str:
    """Text of a message's content: a string, or a list of parts (``{"type": "text", "text": ...}``)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    raise TypeError(f"message content must be a string or a list of parts, got {type(content).__name__}")


def _is_messages(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str) and all(isinstance(m, Mapping) for m in value)


def _turn_text(message: Mapping[str, Any]) -> str:
    """One assistant turn: ``<think>\\nreasoning\\n</think>\\n\\ncontent`` when the reasoning was split off."""
    content = _content_text(message.get("content"))
    for key in _REASONING_KEYS:
        reasoning = message.get(key)
        if isinstance(reasoning, str) and reasoning.strip():
            return f"<think>\n{reasoning.strip()}\n</think>\n\n{content.lstrip()}"
    return content


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or the assistant turns of a conversational completion
    (each with its ``reasoning_content`` put back in front as a ``<think>`` block)."""
    if isinstance(completion, str):
        return completion
    if _is_messages(completion):
        turns = [m for m in completion if m.get("role", "assistant") == "assistant"] or list(completion)
        return "\n".join(_turn_text(m) for m in turns)
    raise TypeError(f"a completion must be a string or a list of message dicts, got {type(completion).__name__}")


def question_text(prompt: Any) -> str:
    """The raw question a prompt asks: the last user turn of a conversation, or a string prompt's last
    user turn inside its chat template (``shared_schemas.rl_frameworks.question_from_prompt``: Llama-3,
    DeepSeek-R1, ChatML/Qwen, Mistral, Phi-3, Gemma, ``Question: ...\\nAnswer:``; an unknown template is
    kept whole), in both cases without the trainer's instruction (``trainer.prompts.INSTRUCTION``)."""
    if isinstance(prompt, str):
        return question_from_prompt(prompt)
    if _is_messages(prompt):
        users = [m for m in prompt if m.get("role") == "user"]
        if not users:
            raise ValueError("a conversational prompt has no user turn to take the question from")
        return strip_instruction(_content_text(users[-1].get("content")))
    raise TypeError(f"a prompt must be a string or a list of message dicts, got {type(prompt).__name__}")


def _column(name: str, values: Any, n: int) -> list[Any] | None:
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"column {name!r} must be a list with one entry per completion")
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} entries for {n} completions")
    return list(values)


def _question_id(question: str) -> str:
    return "q-" + hashlib.sha256(question.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class RewardBatch:
    """One call's completions, each with its question, gold (None: label-free), id and token count."""

    questions: list[str]
    texts: list[str]
    golds: list[str | None]
    ids: list[Any] | None = None
    num_tokens: list[int] | None = None


#: The columns a gold is read from, in order: as given, then reduced to a worked solution's final answer.
GOLD_COLUMNS = ("gold_answer", "answer", "solution")
#: Columns TRL passes to every reward function that are never data set columns.
_TRL_ARGUMENTS = frozenset({"completion_ids", "trainer_state", "log_metric", "log_extra", "environments"})

log = logging.getLogger("trainer.rewards")


def gold_column(columns: Mapping[str, Any]) -> str | None:
    """The column the gold comes from (``GOLD_COLUMNS`` order), or None: label-free."""
    return next((name for name in GOLD_COLUMNS if columns.get(name) is not None), None)


def _golds(columns: Mapping[str, Any], n: int) -> list[str | None]:
    name = gold_column(columns)
    golds = _column("gold_answer", columns.get("gold_answer"), n)
    if golds is None and name is not None:  # "answer" (GSM8K) or "solution" (TRL math sets): the final answer
        solutions = _column(name, columns[name], n)
        assert solutions is not None
        golds = [None if s is None else normalize_gold(str(s)) for s in solutions]
    if golds is None:
        return [None] * n
    return [None if g is None or not str(g).strip() else str(g) for g in golds]


def read_batch(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    columns: Mapping[str, Any],
    *,
    label_free: bool = False,
    use_completion_ids: bool = True,
) -> RewardBatch:
    """A TRL call's arguments as a ``RewardBatch`` (see the module docstring for the sources)."""
    n = len(completions)
    if len(prompts) != n:
        raise ValueError(f"got {len(prompts)} prompts for {n} completions; they must pair up")
    questions = _column("question", columns.get("question"), n)
    token_ids = _column("completion_ids", columns.get("completion_ids"), n) if use_completion_ids else None
    return RewardBatch(
        questions=[
            q if isinstance(q, str) and q.strip() else question_text(p)
            for q, p in zip(questions if questions is not None else [None] * n, prompts)
        ],
        texts=[completion_text(c) for c in completions],
        golds=[None] * n if label_free else _golds(columns, n),
        ids=_column("id", columns.get("id"), n),
        num_tokens=[len(t) for t in token_ids] if token_ids is not None else None,
    )


def build_groups(batch: RewardBatch, *, need_questions: bool = True) -> tuple[list[ScoreGroup], list[list[int]]]:
    """One ``ScoreGroup`` per (question, gold), and the completion positions of each. With
    ``need_questions`` (a scorer that looks up the question's arms), a completion without question
    text is an error."""
    groups: dict[tuple[str, str | None], list[int]] = {}
    for i, q in enumerate(batch.questions):
        if need_questions and (not isinstance(q, str) or not q.strip()):
            raise ValueError(f"completion {i} has no question text (got {q!r})")
        groups.setdefault((q, batch.golds[i]), []).append(i)
    out: list[ScoreGroup] = []
    positions: list[list[int]] = []
    used_ids: set[str] = set()
    for (q, gold), members in groups.items():
        first = batch.ids[members[0]] if batch.ids is not None else None
        group_id = str(first) if first is not None else _question_id(q)
        base, k = group_id, 1
        while group_id in used_ids:
            k += 1
            group_id = f"{base}#{k}"
        used_ids.add(group_id)
        out.append(
            ScoreGroup(
                id=group_id,
                question=q,
                gold=gold,
                texts=[batch.texts[i] for i in members],
                num_tokens=[batch.num_tokens[i] for i in members] if batch.num_tokens is not None else None,
            )
        )
        positions.append(members)
    return out, positions


def scatter_scores(n: int, positions: list[list[int]], scored: Sequence[GroupScores]) -> list[TrajectoryScore]:
    """The groups' scores back in the order of the ``n`` completions (``positions`` from ``build_groups``)."""
    out: list[TrajectoryScore | None] = [None] * n
    for members, group in zip(positions, scored):
        for i, score in zip(members, group.scores):
            out[i] = score
    missing = [i for i, s in enumerate(out) if s is None]
    if missing:
        raise ValueError(f"no score came back for completions {missing[:5]}")
    return out  # type: ignore[return-value]


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def log_scores(columns: Mapping[str, Any], scores: Sequence[TrajectoryScore], waited_s: float, calls: int) -> None:
    """Report a call's components through TRL's ``log_metric`` / ``log_extra`` (when TRL passes them)."""
    log_metric, log_extra = columns.get("log_metric"), columns.get("log_extra")
    if callable(log_extra) and scores:
        log_extra("final_answer", [s.final_answer for s in scores])
    if not callable(log_metric) or not scores:
        return
    for name in (*COMPONENTS, "length_penalty", "correctness"):
        value = _mean([getattr(s, name) for s in scores])
        if value is not None:
            log_metric(f"regime_w/{name}", value)
    log_metric("regime_w/format_ok", sum(s.format_ok for s in scores) / len(scores))
    log_metric("regime_w/wait_s", waited_s)
    log_metric("regime_w/http_calls", float(calls))


# ------------------------------------------------------------------------------- the service scorer


class ServiceScorer(Scorer):
    """``regime_w``: the Regime W service over HTTP (``trainer.reward_modes.make_scorer`` builds it).

    ``service``: a ``ClientSettings``, a recipe's ``RewardServiceArguments`` (the client is built from
    it, key from the environment variable it names), a ``RewardClient`` / ``AsyncRewardClient`` to
    use (the caller's: never closed here), or None with the client's keywords in ``client_fields``
    (``base_url``, ``api_key``, ``timeout_s``, ...; unset ones from the environment). A client the
    scorer builds is built at the first request — the sync one by ``score``, the async one by
    ``ascore`` on the running event loop — and closed by ``close`` / ``aclose``. ``label_free``: the
    groups' golds are never sent. ``info``: the ``ScorerInfo`` of the last response, as a dict.
    Pickling drops a client the scorer built (the copy builds its own); one around a caller's client
    cannot be pickled.
    """

    mode = "regime_w"
    needs_question = True

    def __init__(
        self,
        service: ClientSettings | RewardClient | AsyncRewardClient | Any = None,
        *,
        label_free: bool = False,
        return_details: bool = True,
        **client_fields: Any,
    ) -> None:
        given = service if isinstance(service, (RewardClient, AsyncRewardClient)) else None
        fields = {k: v for k, v in client_fields.items() if v is not None}
        if given is not None and fields:
            raise ValueError("pass either a client or the settings to build one, not both")
        self.label_free = bool(label_free)
        self.return_details = return_details
        self.info = None
        #: ClientSettings | RewardServiceArguments | None (a caller's client is in _sync / _async)
        self._service: Any = None if given is not None else service
        self._fields = fields
        self._sync: RewardClient | None = given if isinstance(given, RewardClient) else None
        self._async: AsyncRewardClient | None = given if isinstance(given, AsyncRewardClient) else None
        self._owns = given is None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def _build(self, kind: Any) -> Any:
        """A client of ``kind`` from the settings given (keywords in ``client_fields`` override them)."""
        if isinstance(self._service, ClientSettings):
            return kind(self._service.replace(**self._fields) if self._fields else self._service)
        if self._service is not None:  # a recipe's RewardServiceArguments
            return kind.from_args(self._service, **self._fields)
        return kind(**self._fields)

    @property
    def client(self) -> RewardClient:
        """The sync client (built at first use unless the caller gave one)."""
        with self._lock:
            if self._sync is None:
                if not self._owns:
                    raise TypeError("this scorer was given an AsyncRewardClient: score with ascore()")
                self._sync = self._build(RewardClient)
            return self._sync  # type: ignore[return-value]

    def connect(self) -> ServiceScorer:
        """Build the sync client now (settings and key resolved; no request is sent)."""
        _ = self.client
        return self

    async def aclient(self) -> AsyncRewardClient:
        """The async client, built on the running event loop at first use unless the caller gave one."""
        if self._async is None:
            if not self._owns:
                raise TypeError("this scorer was given a RewardClient: score with score()")
            self._async = self._build(AsyncRewardClient)
            self._loop = asyncio.get_running_loop()
        return self._async

    @property
    def batch_items(self) -> int:
        """Questions per ``/v1/score`` request of the client (built or to be built)."""
        client = self._sync or self._async
        if client is not None:
            return int(client.batch_items)
        if "batch_items" in self._fields:
            return int(self._fields["batch_items"])
        if isinstance(self._service, ClientSettings):
            return self._service.batch_items
        if self._service is not None:
            return int(self._service.reward_batch_items)
        return DEFAULT_BATCH_ITEMS

    def items(self, groups: Sequence[ScoreGroup]) -> list[ScoreItem]:
        """The ``ScoreItem``s sent for ``groups`` (no gold when label-free)."""
        return [
            ScoreItem(
                id=g.id,
                question=g.question,
                gold_answer=None if self.label_free else g.gold,
                trajectories=list(g.texts),
                num_tokens=list(g.num_tokens) if g.num_tokens is not None else None,
            )
            for g in groups
        ]

    def _read(self, response: ScoreResponse) -> list[GroupScores]:
        self.info = response.scorer.model_dump()
        return [GroupScores(list(r.scores), r.consensus_answer) for r in response.results]

    def score(self, groups: Sequence[ScoreGroup]) -> list[GroupScores]:
        if not groups:
            return []
        return self._read(self.client.score(self.items(groups), return_details=self.return_details))

    async def ascore(self, groups: Sequence[ScoreGroup]) -> list[GroupScores]:
        if not groups:
            return []
        client = await self.aclient()
        return self._read(await client.score(self.items(groups), return_details=self.return_details))

    def close(self) -> None:
        """Close the clients the scorer built; the async one also from outside its loop (e.g. after
        ``trainer.train()``), where that loop still runs."""
        if not self._owns:
            return
        with self._lock:
            sync, self._sync = self._sync, None
        if sync is not None:
            sync.close()
        loop = self._loop
        if self._async is None:
            return
        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(self.aclose(), loop).result(timeout=30)
        elif loop is None or not loop.is_closed():
            (loop or asyncio.new_event_loop()).run_until_complete(self.aclose())
        else:
            self._async = None  # its loop is gone; the sockets went with it

    async def aclose(self) -> None:
        if not self._owns:
            return
        client, self._async = self._async, None
        if client is not None:
            await client.close()
        with self._lock:
            sync, self._sync = self._sync, None
        if sync is not None:
            sync.close()

    def __getstate__(self) -> dict[str, Any]:  # a live HTTP client never travels (multiprocessing, deepcopy)
        if not self._owns:
            raise TypeError("a reward built around a caller's client cannot be pickled; build it from settings")
        state = dict(self.__dict__)
        state.update(_sync=None, _async=None, _loop=None)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


# ------------------------------------------------------------------------------------- Regime W


class _RegimeWBase:
    """What the sync and async Regime W rewards share: the service scorer, timing, reading TRL's call."""

    def __init__(
        self,
        client: RewardClient | AsyncRewardClient | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        args: Any = None,
        scorer: ServiceScorer | None = None,
        reward_key: str = "reward",
        return_details: bool = True,
        use_completion_ids: bool = True,
        label_free: bool = False,
        name: str = "regime_w",
        **client_fields: Any,
    ) -> None:
        if reward_key not in _SCORE_FIELDS:
            raise ValueError(
                f"reward_key must be a TrajectoryScore field ({sorted(_SCORE_FIELDS)}), got {reward_key!r}"
            )
        if client is not None and (base_url or api_key or args is not None or client_fields):
            raise ValueError("pass either a client or the settings to build one, not both")
        if scorer is not None and (client is not None or base_url or api_key or args is not None or client_fields):
            raise ValueError("pass either a scorer or the settings to build one, not both")
        if scorer is None:
            scorer = ServiceScorer(
                client if client is not None else args,
                label_free=label_free,
                return_details=return_details,
                base_url=base_url,
                api_key=api_key,
                **client_fields,
            )
        self.scorer = scorer
        self.__name__ = name
        self.reward_key = reward_key
        self.use_completion_ids = use_completion_ids
        self._warned_label_free = False
        self.last_scores: list[TrajectoryScore] = []
        #: Timing hook: wall seconds spent waiting on the service, and the HTTP scoring requests sent.
        self.wait_seconds = 0.0
        self.calls = 0

    @property
    def label_free(self) -> bool:
        return self.scorer.label_free

    @property
    def return_details(self) -> bool:
        return self.scorer.return_details

    @classmethod
    def from_args(cls, args: Any, **kwargs: Any) -> Any:
        """From ``trainer.configs.RewardServiceArguments`` (URL, key env, timeouts, ``label_free``);
        the client is built on first use."""
        kwargs.setdefault("label_free", bool(getattr(args, "label_free", False)))
        return cls(args=args, **kwargs)

    @property
    def batch_items(self) -> int:
        return self.scorer.batch_items

    def reset_timing(self) -> None:
        """Zero ``wait_seconds`` and ``calls`` (e.g. after a warm-up step)."""
        self.wait_seconds = 0.0
        self.calls = 0

    def _warn_label_free(self, columns: Mapping[str, Any]) -> None:
        """Once per reward: data without a gold column, scored label-free though not asked to be."""
        if self.label_free or self._warned_label_free or gold_column(columns) is not None:
            return
        self._warned_label_free = True
        seen = sorted(k for k in columns if k not in _TRL_ARGUMENTS)
        log.warning(
            "Regime W reward %r: the data set has no gold column (%s; got %s): scoring LABEL-FREE, correctness "
            "left out of the reward. Name the gold column gold_answer, or pass label_free=True to say so.",
            self.__name__,
            " / ".join(GOLD_COLUMNS),
            ", ".join(seen) or "no columns",
        )

    def _prepare(
        self, prompts: Sequence[Any], completions: Sequence[Any], columns: Mapping[str, Any]
    ) -> tuple[list[ScoreGroup], list[list[int]]]:
        self._warn_label_free(columns)
        batch = read_batch(
            prompts, completions, columns, label_free=self.label_free, use_completion_ids=self.use_completion_ids
        )
        return build_groups(batch)

    def _finish(
        self,
        columns: Mapping[str, Any],
        n: int,
        positions: list[list[int]],
        scored: Sequence[GroupScores],
        waited: float,
        requests: int,
    ) -> list[float | None]:
        scores = scatter_scores(n, positions, scored)
        self.last_scores = scores
        log_scores(columns, scores, waited, requests)
        return [getattr(s, self.reward_key) for s in scores]

    def _requests(self, groups: Sequence[ScoreGroup]) -> int:
        return math.ceil(len(groups) / self.batch_items)

    def _outside_trl(
        self,
        questions: Sequence[str],
        completions: Sequence[Any],
        gold_answers: Sequence[str | None] | None,
        ids: Sequence[str] | None,
        num_tokens: Sequence[int] | None,
    ) -> tuple[list[ScoreGroup], list[list[int]]]:
        n = len(completions)
        qs = _column("questions", questions, n)
        assert qs is not None
        golds = _column("gold_answers", gold_answers, n)
        batch = RewardBatch(
            questions=qs,
            texts=[completion_text(c) for c in completions],
            golds=[None] * n if self.label_free or golds is None else golds,
            ids=_column("ids", ids, n),
            num_tokens=_column("num_tokens", num_tokens, n),
        )
        return build_groups(batch)


class RegimeWReward(_RegimeWBase):
    """Synchronous TRL reward function backed by the Regime W service (see the module docstring)."""

    @property
    def client(self) -> RewardClient:
        return self.scorer.client

    def close(self) -> None:
        self.scorer.close()

    def __enter__(self) -> RegimeWReward:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, groups: list[ScoreGroup]) -> tuple[list[GroupScores], float]:
        started = time.perf_counter()
        try:
            scored = self.scorer.score(groups)
        finally:
            elapsed = time.perf_counter() - started
            self.wait_seconds += elapsed
            self.calls += self._requests(groups)
        return scored, elapsed

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        """One reward per completion (``None`` where the chosen ``reward_key`` is absent)."""
        groups, positions = self._prepare(prompts, completions, columns)
        if not groups:
            return []
        scored, waited = self._send(groups)
        return self._finish(columns, len(completions), positions, scored, waited, self._requests(groups))

    def score(
        self,
        questions: Sequence[str],
        completions: Sequence[Any],
        gold_answers: Sequence[str | None] | None = None,
        *,
        ids: Sequence[str] | None = None,
        num_tokens: Sequence[int] | None = None,
    ) -> list[TrajectoryScore]:
        """Outside TRL: the full score of each completion of ``questions[i]`` (same order)."""
        groups, positions = self._outside_trl(questions, completions, gold_answers, ids, num_tokens)
        if not groups:
            return []
        scored, _ = self._send(groups)
        self.last_scores = scatter_scores(len(completions), positions, scored)
        return self.last_scores


class AsyncRegimeWReward(_RegimeWBase):
    """Asynchronous TRL reward function (TRL awaits it on its reward event loop, alongside other async
    reward functions); the ``AsyncRewardClient`` is built on that loop at the first call."""

    async def aclient(self) -> AsyncRewardClient:
        return await self.scorer.aclient()

    async def aclose(self) -> None:
        await self.scorer.aclose()

    def close(self) -> None:
        """Close the client from outside its loop (e.g. after ``trainer.train()``), where it still runs."""
        self.scorer.close()

    async def __aenter__(self) -> AsyncRegimeWReward:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _send(self, groups: list[ScoreGroup]) -> tuple[list[GroupScores], float]:
        await self.scorer.aclient()  # built before the clock starts: wait_seconds is the service's time
        started = time.perf_counter()
        try:
            scored = await self.scorer.ascore(groups)
        finally:
            elapsed = time.perf_counter() - started
            self.wait_seconds += elapsed
            self.calls += self._requests(groups)
        return scored, elapsed

    async def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        """One reward per completion (``None`` where the chosen ``reward_key`` is absent)."""
        groups, positions = self._prepare(prompts, completions, columns)
        if not groups:
            return []
        scored, waited = await self._send(groups)
        return self._finish(columns, len(completions), positions, scored, waited, self._requests(groups))

    async def score(
        self,
        questions: Sequence[str],
        completions: Sequence[Any],
        gold_answers: Sequence[str | None] | None = None,
        *,
        ids: Sequence[str] | None = None,
        num_tokens: Sequence[int] | None = None,
    ) -> list[TrajectoryScore]:
        """Outside TRL: the full score of each completion of ``questions[i]`` (same order)."""
        groups, positions = self._outside_trl(questions, completions, gold_answers, ids, num_tokens)
        if not groups:
            return []
        scored, _ = await self._send(groups)
        self.last_scores = scatter_scores(len(completions), positions, scored)
        return self.last_scores


# -------------------------------------------------------------------------------------- controls


class ControlReward:
    """TRL reward function of a control scorer (``correctness`` / ``majority``; no service): the
    completions of one question form one group (``majority`` votes within it), and the call's mean
    reward is logged as the scorer's ``log_name`` (``control/correctness``, ``control/majority_share``).
    GRPO passes all ``num_generations`` samples of a question in one call, so each group is whole."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.__name__ = scorer.mode

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        batch = read_batch(prompts, completions, columns, label_free=self.scorer.label_free, use_completion_ids=False)
        groups, positions = build_groups(batch, need_questions=self.scorer.needs_question)
        rewards = [s.reward for s in scatter_scores(len(batch.texts), positions, self.scorer.score(groups))]
        log_metric = columns.get("log_metric")
        if callable(log_metric) and rewards and self.scorer.log_name:
            log_metric(self.scorer.log_name, sum(rewards) / len(rewards))
        return rewards


class CorrectnessReward(ControlReward):
    """Control: 1.0 when a completion's answer equals the gold, else 0.0 (no service).

    A completion without a gold is an error: ``correctness`` needs labels."""

    def __init__(self) -> None:
        super().__init__(CorrectnessScorer())


class MajorityReward(ControlReward):
    """Control: label-free vote among the samples of one question in the call (test-time RL's reward):
    1.0 when a completion's answer is the group's most frequent answer, else 0.0."""

    def __init__(self) -> None:
        super().__init__(MajorityScorer())


def trl_reward_function(scorer: Scorer, *, use_async: bool = True) -> Callable[..., Any]:
    """``scorer`` as a TRL reward function: the service scorer as ``AsyncRegimeWReward`` (or, with
    ``use_async=False``, ``RegimeWReward``), a control as a ``ControlReward``."""
    if isinstance(scorer, ServiceScorer):
        return (AsyncRegimeWReward if use_async else RegimeWReward)(scorer=scorer)
    return ControlReward(scorer)


def build_reward_functions(args: Any, *, use_async: bool = True) -> list[Callable[..., Any]]:
    """The TRL reward function of a recipe's ``reward`` (``RewardServiceArguments``): its scorer
    (``trainer.reward_modes.scorer_from_args``) as a TRL function."""
    return [trl_reward_function(scorer_from_args(args), use_async=use_async)]
