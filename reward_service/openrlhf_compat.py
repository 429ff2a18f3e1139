"""OpenRLHF's ``POST /get_reward`` met where it is: the pure logic, no HTTP and no scoring.

OpenRLHF (``--reward.remote_url http://host/get_reward``, formerly ``--remote_rm_url``) posts
``{"query": [prompt + response], "prompts": [prompt], "labels": [label]}`` where ``prompt`` is the
chat-templated prompt and ``query`` the decoded prompt + response tokens (special tokens kept). This
module turns such a body into ``ScoreItem`` chunks and the scores back into OpenRLHF's answer:

- the **question** of each query: ``metas[i]["question"]`` when given, else the last user turn of the
  templated prompt (Llama-3, DeepSeek-R1, ChatML/Qwen, Mistral, Phi-3, Gemma templates, or the
  trainer's plain ``Question: ...\\nAnswer:``), with the trainer's instruction suffix removed, so the
  arms cached for the raw data set's question are found again; then, through ``resolve`` (the arm
  provider's), the known question that text contains when it is not cached as read (another
  instruction, an unknown template, other whitespace: ``reward_service.question_index``), so the
  queries of one question group together and are scored against the question itself;
- the **response**: ``query[i]`` minus its prompt, without trailing end-of-turn / padding tokens;
- the **label**: ``""``, ``null`` or no labels at all -> label-free; numbers are read as answers;
  a long label (a whole GSM8K solution) is reduced to its ``#### N`` value;
- the **score** (OpenRLHF's 0-1 value for dynamic filtering): correctness when labelled, ``s_wm``
  when label-free, clamped to [0, 1]; ``reward`` is the Regime W reward itself.

Every text is checked before it reaches the scorer (lone surrogates, lengths within the deployment's
``reward_service.limits.Limits``) so that a bad body is a 422 naming its field, never a 500.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from reward_service.limits import Limits
from shared_schemas.rl_frameworks import (
    INSTRUCTION_SUFFIXES,
    has_lone_surrogate,
    normalize_label,
    question_from_prompt,
    response_from_query,
)
from shared_schemas.wire import OpenRLHFRequest, OpenRLHFResponse, ScoreItem, TrajectoryScore

__all__ = [
    "INSTRUCTION_SUFFIXES",
    "LOG_KEYS",
    "CompatError",
    "Group",
    "question_from_prompt",
    "response_from_query",
    "normalize_label",
    "plan_groups",
    "chunk_items",
    "openrlhf_score",
    "build_response",
]

#: ``extra_logs`` keys, the same for every query (OpenRLHF stacks them per sample).
LOG_KEYS = ("s_end", "s_path", "s_cf", "s_wm", "length_penalty", "correctness", "label_free")


class CompatError(ValueError):
    """A body the service cannot score; the message names the field (``labels[3]: ...``)."""


@dataclass
class Group:
    """The queries of one (question, label): scored together, against one arm set."""

    question: str
    label: str | None
    indices: list[int] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)


def _check_text(name: str, text: str, max_chars: int) -> None:
    if has_lone_surrogate(text):
        raise CompatError(f"{name}: holds a lone UTF-16 surrogate (not valid Unicode text)")
    if len(text) > max_chars:
        raise CompatError(f"{name}: {len(text)} characters exceed this service's limit of {max_chars}")


def _meta_question(metas: Sequence[dict[str, Any]] | None, i: int) -> str | None:
    if not metas:
        return None
    value = metas[i].get("question")
    if value is None:
        return None
    if not isinstance(value, str):
        raise CompatError(f"metas[{i}].question: must be a string, got {type(value).__name__}")
    return value if value.strip() else None


def plan_groups(body: OpenRLHFRequest, limits: Limits, resolve: Callable[[str], str] | None = None) -> list[Group]:
    """The body's queries grouped by (question, label), in order of first appearance; ``resolve`` maps
    each question read from a prompt to the known question whose arms serve it (``ArmProvider.resolve``).
    ``limits``: ``openrlhf_max_queries`` queries, ``max_text_chars`` a response (10 times that a query
    or prompt), ``max_question_chars`` a question."""
    n = len(body.query)
    if n > limits.openrlhf_max_queries:
        raise CompatError(
            f"query: {n} queries exceed this service's limit of {limits.openrlhf_max_queries} "
            "(REGIME_W_OPENRLHF_MAX_QUERIES); send smaller batches"
        )
    if body.prompts is None:
        raise CompatError("prompts: required (the service splits each response off its prompt and reads the question)")
    question_chars = limits.max_question_chars
    groups: dict[tuple[str, str | None], Group] = {}
    for i, (query, prompt) in enumerate(zip(body.query, body.prompts)):
        _check_text(f"query[{i}]", query, 10 * limits.max_text_chars)
        _check_text(f"prompts[{i}]", prompt, 10 * limits.max_text_chars)
        meta_question = _meta_question(body.metas, i)
        if meta_question is not None:
            _check_text(f"metas[{i}].question", meta_question, question_chars)
            question = meta_question.strip()
        else:
            question = question_from_prompt(prompt)
            if not question:
                raise CompatError(f"prompts[{i}]: empty prompt and no metas[{i}].question")
            if resolve is not None:
                question = resolve(question)
            _check_text(f"prompts[{i}] (the question read from it)", question, question_chars)
        response = response_from_query(query, prompt)
        _check_text(f"query[{i}] (the response part)", response, limits.max_text_chars)
        try:
            label = normalize_label(body.labels[i], f"labels[{i}]") if body.labels is not None else None
        except ValueError as exc:
            raise CompatError(str(exc)) from None
        group = groups.setdefault((question, label), Group(question, label))
        group.indices.append(i)
        group.responses.append(response)
    return list(groups.values())


def chunk_items(groups: Sequence[Group], limits: Limits) -> Iterator[tuple[list[ScoreItem], list[list[int]]]]:
    """``ScoreItem`` chunks within ``limits.max_items`` and ``limits.max_trajectories``, with each item's
    query indices.

    A group larger than ``max_trajectories`` is split into several items of the same question (the
    arms are still generated once: the cache keys on the question)."""
    items: list[ScoreItem] = []
    where: list[list[int]] = []
    k = 0
    for group in groups:
        step = limits.max_trajectories
        for start in range(0, len(group.indices), step):
            items.append(
                ScoreItem(
                    id=f"q{k}",
                    question=group.question,
                    gold_answer=group.label,
                    trajectories=group.responses[start : start + step],
                )
            )
            where.append(group.indices[start : start + step])
            k += 1
            if len(items) == limits.max_items:
                yield items, where
                items, where = [], []
    if items:
        yield items, where


def openrlhf_score(score: TrajectoryScore, labelled: bool) -> float:
    """OpenRLHF's 0-1 ``scores`` value: correctness when labelled, ``s_wm`` when label-free."""
    value = score.correctness if labelled else score.s_wm
    if value is None:
        value = 0.0
    return min(1.0, max(0.0, float(value)))


def build_response(n: int, scored: Sequence[tuple[list[int], bool, Sequence[TrajectoryScore]]]) -> OpenRLHFResponse:
    """OpenRLHF's answer from ``(query indices, labelled, scores)`` per scored item."""
    rewards = [0.0] * n
    scores = [0.0] * n
    logs: dict[str, list[float]] = {key: [0.0] * n for key in LOG_KEYS}
    for indices, labelled, item_scores in scored:
        for i, s in zip(indices, item_scores):
            rewards[i] = float(s.reward)
            scores[i] = openrlhf_score(s, labelled)
            for key in LOG_KEYS[:-1]:
                value = getattr(s, key)
                logs[key][i] = float(value) if value is not None else 0.0
            logs["label_free"][i] = 0.0 if labelled else 1.0
    return OpenRLHFResponse(rewards=rewards, scores=scores, extra_logs=logs)
