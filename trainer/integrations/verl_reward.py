"""Regime W as a verl custom reward function (``reward.custom_reward_function.path=<this file>``).

Checked against verl 0.9.1 (``verl/trainer/ppo/reward.py``: ``get_custom_reward_fn`` loads
``custom_reward_function.name`` from the file; ``load_reward_manager`` hands it to the manager named
by ``reward.reward_manager.name``, looked up in the reward loop's registry,
``verl/experimental/reward_loop/reward_manager/``: ``naive`` (the default), ``dapo``, ``gdpo``,
``rate_limited`` and ``remote``). Every one of them calls the function once per sample, as
``compute_score(data_source=, solution_str=, ground_truth=, extra_info=)``; 0.9.1's reward loop has
no ``batch`` manager (``Unknown reward manager: batch``; the older ``verl.workers.reward_manager``
classes are still in the package but no configuration reaches them). Two entry points:

- ``compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs)``: one sample,
  synchronous. verl 0.9.1's reward loop (``reward.reward_manager.name=naive``) runs it in an
  executor thread per sample, all samples of a worker's share at once; concurrent calls are merged
  into few HTTP requests (one in flight at a time, the calls that arrive meanwhile sent together
  next; ``trainer.integrations.core``).
- ``compute_score_async(...)``: the same as a coroutine; verl's reward loop awaits it on the
  worker's event loop (no thread per sample), merged the same way: about one HTTP request per step
  per reward-loop worker. The one to use.

A failure (the service unreachable past ``REGIME_W_PATIENCE_S``, an error answer, a sample without
its question) is logged at ERROR and raised as ``RewardFailed``, a ``BaseException``: ``naive``,
``dapo`` and ``gdpo`` let any error fail the step, and ``rate_limited`` catches ``Exception`` and
would score the sample 0.0 (``reward_extra_info["error"]``) where ``RewardFailed`` passes it. Under
``rate_limited``, keep ``reward.timeout`` above ``REGIME_W_PATIENCE_S`` + ``REGIME_W_TIMEOUT_S``: its
own timeout still scores 0.0 (docs/integrations.md has the settings that fit).

The file keeps no state (no lock, no client): verl's ``remote`` manager pickles the function into
Ray actors, by value for a file loaded by path; the process's coalescers live in
``trainer.integrations.core`` (imported by name, so pickled by reference) and each process builds
its own at first use.

The question comes from ``extra_info["question"]`` (verl's GSM8K preprocessing writes it; so must
yours) — a missing one is an error that says so. ``ground_truth``: the gold (``"72"``, ``"#### 72"``,
a number); empty or None -> label-free; ``REGIME_W_LABEL_FREE=1`` never sends it. Each call returns
``{"score": reward, "score01": ..., "s_end", "s_path", "s_cf", "s_wm", "length_penalty",
"correctness", "label_free"}``: verl takes ``score`` as the reward and logs the other keys
(``score01``: correctness when labelled, ``s_wm`` when label-free, in [0, 1]). The API key comes
from ``REGIME_W_API_KEY`` (or ``REGIME_W_API_KEY_FILE``), the URL from ``REGIME_W_URL``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared_schemas.rl_frameworks import normalize_label
from trainer.integrations.core import (
    IntegrationError,
    RewardFailed,
    Sample,
    reset_shared,
    reward_failed,
    score_fields,
    shared_async_coalescer,
    shared_sync_coalescer,
)

__all__ = ["RewardFailed", "compute_score", "compute_score_async", "sample_from_verl", "reset", "OWNER"]

#: This integration's name among the process's shared coalescers (``trainer.integrations.core``).
OWNER = "verl"
_WHY = "verl's rate_limited manager (which catches Exception and scores 0.0) fails the step as the other managers do"


def reset() -> None:
    """Close the sync client and forget the settings (the next call reads the environment again)."""
    reset_shared(OWNER)


def sample_from_verl(
    solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None, where: str = "sample"
) -> Sample:
    """One verl sample as a ``Sample``: question from ``extra_info["question"]``, gold from ``ground_truth``."""
    question = extra_info.get("question") if isinstance(extra_info, Mapping) else None
    if not isinstance(question, str) or not question.strip():
        raise IntegrationError(
            f"{where}: extra_info['question'] is missing: Regime W scores a response against its question. Write "
            "the raw question into extra_info when you preprocess the data (as verl's "
            "examples/data_preprocess/gsm8k.py does: extra_info={'split', 'index', 'answer', 'question'})"
        )
    if not isinstance(solution_str, str):
        raise IntegrationError(f"{where}: solution_str must be a string, got {type(solution_str).__name__}")
    try:
        gold = normalize_label(ground_truth, f"{where}: ground_truth")
    except ValueError as exc:
        raise IntegrationError(str(exc)) from None
    return Sample(question=question.strip(), response=solution_str, gold=gold)


def _result(samples: Sequence[Sample], scores: Sequence[Any], label_free: bool) -> list[dict[str, float]]:
    out = []
    for sample, score in zip(samples, scores):
        fields = score_fields(score, sample.gold is not None and not label_free)
        out.append({"score": fields.pop("reward"), **fields})
    return out


def compute_score(
    data_source: Any, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None, **kwargs: Any
) -> dict[str, float]:
    """One response's Regime W reward (concurrent calls share an HTTP request)."""
    try:
        sample = sample_from_verl(solution_str, ground_truth, extra_info)
        coalescer = shared_sync_coalescer(OWNER)
        [score] = coalescer.score([sample])
    except Exception as exc:
        raise reward_failed("1 verl sample (compute_score)", exc, _WHY) from exc
    return _result([sample], [score], coalescer.settings.label_free)[0]


async def compute_score_async(
    data_source: Any, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None, **kwargs: Any
) -> dict[str, float]:
    """``compute_score`` as a coroutine for verl's reward loop (calls on one loop share a request)."""
    try:
        sample = sample_from_verl(solution_str, ground_truth, extra_info)
        coalescer = shared_async_coalescer(OWNER)
        [score] = await coalescer.score([sample])
    except Exception as exc:
        raise reward_failed("1 verl sample (compute_score_async)", exc, _WHY) from exc
    return _result([sample], [score], coalescer.settings.label_free)[0]
