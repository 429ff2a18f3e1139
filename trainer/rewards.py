"""``RegimeWReward``: the Regime W reward service as a TRL reward function (DESIGN §5).

TRL's ``GRPOTrainer`` calls every reward function as
``f(prompts=..., completions=..., completion_ids=..., **dataset_columns)`` with one entry per
completion (each prompt repeated ``num_generations`` times). ``RegimeWReward``:

- groups the completions of the same question (and gold answer) into one ``ScoreItem``, so the
  service generates / looks up the arms of each question once per call;
- takes the question from the ``question`` column (else from the prompt: the last user turn of a
  conversational prompt, or the prompt string itself), the gold answer from ``gold_answer`` (else
  from a GSM8K-style ``answer`` column, reduced to its ``#### N`` value; none -> label-free), the
  item id from an ``id`` column (else a hash of the question), and the token counts from
  ``completion_ids`` when TRL passes them;
- accepts plain string completions and conversational ones (lists of message dicts);
- returns ``score.reward`` per completion (or another score field, ``reward_key``) and keeps the
  last call's components, which ``component_functions()`` exposes as zero-weight reward functions
  ``s_end``, ``s_path``, ``s_cf``, ``s_wm`` so that GRPO logs them per step::

      reward = RegimeWReward.from_args(reward_args)
      GRPOTrainer(..., reward_funcs=[reward, *reward.component_functions()],
                  args=GRPOConfig(..., reward_weights=[1.0, 0.0, 0.0, 0.0, 0.0]))

Outside TRL, ``reward.score(questions, completions, gold_answers)`` returns the full
``TrajectoryScore`` of each completion.

Timing hook: ``wait_seconds`` and ``calls`` accumulate the wall time and number of the HTTP scoring
calls (``reset_timing()`` zeroes them); under TRL each call also logs ``regime_w/wait_s``, so the
step logs show how long the step waited on the service.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

from shared_schemas.answer import gold_answer as normalize_gold
from shared_schemas.wire import ScoreItem, TrajectoryScore
from trainer.reward_client import RewardClient

__all__ = ["COMPONENTS", "RegimeWReward", "ComponentReward", "completion_text", "question_text"]

#: The score components exposed as separate (zero-weight) reward functions.
COMPONENTS = ("s_end", "s_path", "s_cf", "s_wm")

_SCORE_FIELDS = frozenset(TrajectoryScore.model_fields)


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
    return isinstance(value, Sequence) and not isinstance(value, str) and all(
        isinstance(m, Mapping) for m in value
    )


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or the assistant turns of a conversational completion."""
    if isinstance(completion, str):
        return completion
    if _is_messages(completion):
        turns = [m for m in completion if m.get("role", "assistant") == "assistant"] or list(completion)
        return "\n".join(_content_text(m.get("content")) for m in turns)
    raise TypeError(
        "a completion must be a string or a list of message dicts, got " f"{type(completion).__name__}"
    )


def question_text(prompt: Any) -> str:
    """The question a prompt asks: the last user turn of a conversation, else the prompt string."""
    if isinstance(prompt, str):
        return prompt
    if _is_messages(prompt):
        users = [m for m in prompt if m.get("role") == "user"]
        if not users:
            raise ValueError("a conversational prompt has no user turn to take the question from")
        return _content_text(users[-1].get("content"))
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


class ComponentReward:
    """A zero-weight reward function returning one component of the last ``RegimeWReward`` call.

    When called with completions other than those of the last call, it scores them first, so it
    never reports stale numbers.
    """

    def __init__(self, parent: "RegimeWReward", component: str) -> None:
        if component not in _SCORE_FIELDS:
            raise ValueError(f"{component!r} is not a TrajectoryScore field")
        self.parent = parent
        self.component = component
        self.__name__ = component

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        if self.parent.last_key != self.parent.call_key(prompts, completions, kwargs):
            self.parent(prompts, completions, **kwargs)
        return [getattr(score, self.component) for score in self.parent.last_scores]

    def __repr__(self) -> str:
        return f"ComponentReward({self.component!r})"


class RegimeWReward:
    """TRL reward function backed by the Regime W service over HTTP (see the module docstring)."""

    def __init__(
        self,
        client: RewardClient | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        reward_key: str = "reward",
        return_details: bool = True,
        use_completion_ids: bool = True,
        name: str = "regime_w",
        **client_kwargs: Any,
    ) -> None:
        if reward_key not in _SCORE_FIELDS:
            raise ValueError(
                f"reward_key must be a TrajectoryScore field ({sorted(_SCORE_FIELDS)}), got {reward_key!r}"
            )
        if client is not None and (base_url or api_key or client_kwargs):
            raise ValueError("pass either a client or the settings to build one, not both")
        self.__name__ = name
        self.reward_key = reward_key
        self.return_details = return_details
        self.use_completion_ids = use_completion_ids
        self._client = client
        self._owns_client = client is None
        self._client_kwargs: dict[str, Any] = dict(base_url=base_url, api_key=api_key, **client_kwargs)
        self.last_scores: list[TrajectoryScore] = []
        self.last_key: tuple[Any, ...] | None = None
        #: Timing hook: wall seconds spent waiting on the service (HTTP scoring calls) and their count.
        self.wait_seconds = 0.0
        self.calls = 0

    @classmethod
    def from_args(cls, args: Any, **kwargs: Any) -> "RegimeWReward":
        """From ``trainer.configs.RewardServiceArguments``; the client is built on first use."""
        return cls(
            base_url=args.reward_url,
            timeout_s=args.reward_timeout_s,
            max_retries=args.reward_max_retries,
            batch_items=args.reward_batch_items,
            api_key_env=args.reward_api_key_env,
            **kwargs,
        )

    # ---------------------------------------------------------------------------- client handling

    @property
    def client(self) -> RewardClient:
        if self._client is None:
            self._client = RewardClient(**self._client_kwargs)
            self._owns_client = True
        return self._client

    def close(self) -> None:
        if self._client is not None and self._owns_client:
            self._client.close()
            self._client = None

    def __enter__(self) -> "RegimeWReward":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        client = state.pop("_client")
        if client is not None and not self._owns_client:
            state["_client_kwargs"] = dict(
                base_url=client.base_url,
                api_key=client.api_key,
                timeout_s=client.timeout_s,
                max_retries=client.max_retries,
                backoff_base_s=client.backoff_base_s,
                backoff_max_s=client.backoff_max_s,
                batch_items=client.batch_items,
            )
        state["_client"] = None
        state["_owns_client"] = True
        return state

    def reset_timing(self) -> None:
        """Zero ``wait_seconds`` and ``calls`` (e.g. after a warm-up step)."""
        self.wait_seconds = 0.0
        self.calls = 0

    # --------------------------------------------------------------------------------- scoring

    @staticmethod
    def call_key(prompts: Sequence[Any], completions: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
        """What identifies one call: the completion texts and the questions they answer."""
        texts = tuple(completion_text(c) for c in completions)
        questions = kwargs.get("question")
        asked = tuple(questions) if questions is not None else tuple(question_text(p) for p in prompts)
        return texts, asked

    def component_functions(self, names: Sequence[str] = COMPONENTS) -> list[ComponentReward]:
        """Zero-weight reward functions ``s_end``, ``s_path``, ``s_cf``, ``s_wm`` (for GRPO logging)."""
        return [ComponentReward(self, name) for name in names]

    @property
    def last_components(self) -> dict[str, list[float | None]]:
        """The last call's components, one list per name in ``COMPONENTS``."""
        return {name: [getattr(s, name) for s in self.last_scores] for name in COMPONENTS}

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        *,
        question: Sequence[str] | None = None,
        gold_answer: Sequence[str | None] | None = None,
        completion_ids: Sequence[Sequence[int]] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        """One reward per completion (``None`` where the chosen ``reward_key`` is absent)."""
        n = len(completions)
        if len(prompts) != n:
            raise ValueError(f"got {len(prompts)} prompts for {n} completions; they must pair up")
        questions = _column("question", question, n)
        golds = _column("gold_answer", gold_answer, n)
        if golds is None and kwargs.get("answer") is not None:
            solutions = _column("answer", kwargs["answer"], n)
            assert solutions is not None
            golds = [None if s is None else normalize_gold(str(s)) for s in solutions]
        ids = _column("id", kwargs.get("id"), n)
        token_ids = _column("completion_ids", completion_ids, n) if self.use_completion_ids else None
        waited_before = self.wait_seconds
        scores = self._score(
            questions=questions if questions is not None else [question_text(p) for p in prompts],
            texts=[completion_text(c) for c in completions],
            golds=golds,
            ids=ids,
            num_tokens=[len(t) for t in token_ids] if token_ids is not None else None,
        )
        self.last_scores = scores
        self.last_key = self.call_key(prompts, completions, {"question": questions} if questions else {})
        self._log(kwargs.get("log_metric"), kwargs.get("log_extra"), scores)
        if callable(kwargs.get("log_metric")) and scores:
            kwargs["log_metric"]("regime_w/wait_s", self.wait_seconds - waited_before)
        return [getattr(s, self.reward_key) for s in scores]

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
        n = len(completions)
        qs = _column("questions", questions, n)
        assert qs is not None
        scores = self._score(
            questions=qs,
            texts=[completion_text(c) for c in completions],
            golds=_column("gold_answers", gold_answers, n),
            ids=_column("ids", ids, n),
            num_tokens=_column("num_tokens", num_tokens, n),
        )
        self.last_scores = scores
        self.last_key = (tuple(completion_text(c) for c in completions), tuple(qs))
        return scores

    def _score(
        self,
        *,
        questions: list[str],
        texts: list[str],
        golds: list[str | None] | None,
        ids: list[Any] | None,
        num_tokens: list[int] | None,
    ) -> list[TrajectoryScore]:
        if not texts:
            return []
        # Group completions by (question, gold); remember where each one goes back.
        groups: dict[tuple[str, str | None], list[int]] = {}
        for i, q in enumerate(questions):
            if not isinstance(q, str) or not q.strip():
                raise ValueError(f"completion {i} has no question text (got {q!r})")
            groups.setdefault((q, golds[i] if golds is not None else None), []).append(i)
        items: list[ScoreItem] = []
        positions: list[list[int]] = []
        used_ids: set[str] = set()
        for (q, gold), members in groups.items():
            item_id = str(ids[members[0]]) if ids is not None and ids[members[0]] is not None else _question_id(q)
            base, k = item_id, 1
            while item_id in used_ids:
                k += 1
                item_id = f"{base}#{k}"
            used_ids.add(item_id)
            items.append(
                ScoreItem(
                    id=item_id,
                    question=q,
                    gold_answer=None if gold is None else str(gold),
                    trajectories=[texts[i] for i in members],
                    num_tokens=[num_tokens[i] for i in members] if num_tokens is not None else None,
                )
            )
            positions.append(members)
        started = time.perf_counter()
        try:
            response = self.client.score(items, return_details=self.return_details)
        finally:
            self.wait_seconds += time.perf_counter() - started
            self.calls += 1
        out: list[TrajectoryScore | None] = [None] * len(texts)
        for members, result in zip(positions, response.results):
            for i, score in zip(members, result.scores):
                out[i] = score
        assert all(s is not None for s in out)
        return out  # type: ignore[return-value]

    @staticmethod
    def _log(log_metric: Any, log_extra: Any, scores: Sequence[TrajectoryScore]) -> None:
        """Report answers, format and correctness rates through TRL's ``log_extra``/``log_metric``."""
        if callable(log_extra) and scores:
            log_extra("final_answer", [s.final_answer for s in scores])
        if not callable(log_metric) or not scores:
            return
        log_metric("regime_w/format_ok", sum(s.format_ok for s in scores) / len(scores))
        correct = [s.correctness for s in scores if s.correctness is not None]
        if correct:
            log_metric("regime_w/correctness", sum(correct) / len(correct))
