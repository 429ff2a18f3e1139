"""Regime W as an OpenRLHF reward-function file (``--reward.remote_url /path/to/this/file.py``).

OpenRLHF (checked against 0.11.2, ``openrlhf/utils/agent.py``: ``SingleTurnAgentExecutor``) loads a
``.py`` file given as the remote reward URL with ``importlib`` and calls
``reward_func(queries, prompts, labels)`` from a worker thread once per sample (lists of one), each
sample's call concurrent with the others of its prompt. It reads back a dict: ``rewards`` (the
advantage input), ``scores`` (a 0-1 value for ``--algo.dynamic_filtering``) and ``extra_logs``
(logged per sample).

This file, for each call:

- reads each sample as the service's ``/get_reward`` does (``shared_schemas.rl_frameworks``): the
  question from the last user turn of the chat-templated prompt (the trainer's instruction
  removed, so arms precomputed for the data set's questions are reused), the response from the
  query minus the prompt and trailing end-of-turn tokens, the label (``""`` / ``None`` ->
  label-free; numbers; a whole GSM8K solution -> its ``#### N``);
- merges concurrent calls into few ``POST /v1/score`` requests (one in flight at a time; calls that
  arrive meanwhile go out together next; see ``trainer.integrations.core``), with the API key from
  ``REGIME_W_API_KEY`` (or ``REGIME_W_API_KEY_FILE``), retried within the client's patience budget
  (connection errors, 429, 503, 504);
- returns ``rewards`` (the Regime W reward), ``scores`` (correctness when labelled, ``s_wm`` when
  label-free, in [0, 1]) and ``extra_logs`` (``s_end``, ``s_path``, ``s_cf``, ``s_wm``,
  ``length_penalty``, ``correctness``, ``label_free``), as float tensors of one entry per query.

A failure (the service unreachable past the patience budget, an error answer such as 401 or 422, a
label with no answer) is logged at ERROR and raised as ``RewardFailed``, a ``BaseException``:
OpenRLHF 0.11.2's executor catches ``Exception`` around the reward call, logs it at INFO and leaves
the sample's reward ``None`` (the run then crashes later, elsewhere, or trains without that sample);
``RewardFailed`` passes that handler, so the rollout stops where the reward failed, with the
original error as its cause. Settings:
``REGIME_W_URL``, ``REGIME_W_API_KEY[_FILE]``, ``REGIME_W_LABEL_FREE``, ``REGIME_W_BATCH_ITEMS``,
``REGIME_W_TIMEOUT_S``, ``REGIME_W_PATIENCE_S``, ``REGIME_W_COALESCE_MS``, ``REGIME_W_COALESCE_MAX``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared_schemas.rl_frameworks import normalize_label, question_from_prompt, response_from_query
from trainer.integrations.core import (
    LOG_KEYS,
    IntegrationError,
    RewardFailed,
    Sample,
    SyncCoalescer,
    reset_shared,
    reward_failed,
    score_fields,
    shared_sync_coalescer,
)

__all__ = ["RewardFailed", "reward_func", "samples_from_openrlhf", "coalescer", "reset"]

#: This integration's name among the process's shared coalescers (``trainer.integrations.core``).
OWNER = "openrlhf"
_WHY = "OpenRLHF's rollout stops here instead of logging it at INFO and leaving the sample without a reward"


def coalescer() -> SyncCoalescer:
    """The process's coalescer (built from the environment at the first call)."""
    return shared_sync_coalescer(OWNER)


def reset() -> None:
    """Close the client and forget the settings (the next call reads the environment again)."""
    reset_shared(OWNER)


def samples_from_openrlhf(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any] | None) -> list[Sample]:
    """OpenRLHF's lists as ``Sample``s (question from the prompt, response from the query, gold)."""
    if len(prompts) != len(queries) or (labels is not None and len(labels) != len(queries)):
        raise IntegrationError(
            f"got {len(queries)} queries, {len(prompts)} prompts and "
            f"{'no' if labels is None else len(labels)} labels; they must pair up"
        )
    out = []
    for i, (query, prompt) in enumerate(zip(queries, prompts)):
        question = question_from_prompt(prompt)
        if not question:
            raise IntegrationError(f"prompts[{i}]: no question in the prompt")
        gold = normalize_label(labels[i], f"labels[{i}]") if labels is not None else None
        out.append(Sample(question=question, response=response_from_query(query, prompt), gold=gold))
    return out


def _as_tensor(values: list[float]) -> Any:
    try:
        import torch
    except ImportError:  # OpenRLHF always has torch; plain lists keep the file usable without it
        return values
    return torch.tensor(values, dtype=torch.float32)


def reward_func(
    queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any] | None = None, **kwargs: Any
) -> dict[str, Any]:
    """OpenRLHF's reward-function convention (see the module docstring)."""
    try:
        samples = samples_from_openrlhf(queries, prompts, labels)
        scores = coalescer().score(samples)
    except Exception as exc:
        raise reward_failed(f"{len(queries)} OpenRLHF queries", exc, _WHY) from exc
    labelled = [s.gold is not None and not coalescer().settings.label_free for s in samples]
    fields = [score_fields(score, lab) for score, lab in zip(scores, labelled)]
    return {
        "rewards": _as_tensor([f["reward"] for f in fields]),
        "scores": _as_tensor([f["score01"] for f in fields]),
        "extra_logs": {key: _as_tensor([f[key] for f in fields]) for key in LOG_KEYS},
    }
