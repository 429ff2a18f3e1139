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

A failure is logged at ERROR and raised. ``naive`` (and ``dapo``, ``gdpo``) let it fail the step;
``rate_limited`` catches it and scores the sample 0.0 with ``reward_extra_info["error"]`` set, so
do not use ``rate_limited`` with this file unless a silent 0 on an outage is what you want.

The question comes from ``extra_info["question"]`` (verl's GSM8K preprocessing writes it; so must
yours) — a missing one is an error that says so. ``ground_truth``: the gold (``"72"``, ``"#### 72"``,
a number); empty or None -> label-free; ``REGIME_W_LABEL_FREE=1`` never sends it. Each call returns
``{"score": reward, "score01": ..., "s_end", "s_path", "s_cf", "s_wm", "length_penalty",
"correctness", "label_free"}``: verl takes ``score`` as the reward and logs the other keys
(``score01``: correctness when labelled, ``s_wm`` when label-free, in [0, 1]). The API key comes
from ``REGIME_W_API_KEY`` (or ``REGIME_W_API_KEY_FILE``), the URL from ``REGIME_W_URL``.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from shared_schemas.rl_frameworks import normalize_label
from trainer.integrations.core import (
    AsyncCoalescer,
    IntegrationError,
    IntegrationSettings,
    Sample,
    SyncCoalescer,
    log,
    score_fields,
)

__all__ = ["compute_score", "compute_score_async", "sample_from_verl", "reset"]

_lock = threading.Lock()
_sync: SyncCoalescer | None = None
_async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncCoalescer] = weakref.WeakKeyDictionary()


def _settings() -> IntegrationSettings:
    with _lock:
        global _sync
        if _sync is None:
            _sync = SyncCoalescer(IntegrationSettings.from_env())
        return _sync.settings


def _sync_coalescer() -> SyncCoalescer:
    _settings()
    assert _sync is not None
    return _sync


def _async_coalescer() -> AsyncCoalescer:
    loop = asyncio.get_running_loop()
    found = _async.get(loop)
    if found is None:
        found = _async[loop] = AsyncCoalescer(_settings())
    return found


def reset() -> None:
    """Close the sync client and forget the settings (the next call reads the environment again)."""
    global _sync
    with _lock:
        old, _sync = _sync, None
    _async.clear()
    if old is not None:
        old.close()


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
    sample = sample_from_verl(solution_str, ground_truth, extra_info)
    coalescer = _sync_coalescer()
    try:
        [score] = coalescer.score([sample])
    except Exception:
        log.exception("Regime W reward failed (verl compute_score)")
        raise
    return _result([sample], [score], coalescer.settings.label_free)[0]


async def compute_score_async(
    data_source: Any, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None, **kwargs: Any
) -> dict[str, float]:
    """``compute_score`` as a coroutine for verl's reward loop (calls on one loop share a request)."""
    sample = sample_from_verl(solution_str, ground_truth, extra_info)
    coalescer = _async_coalescer()
    try:
        [score] = await coalescer.score([sample])
    except Exception:
        log.exception("Regime W reward failed (verl compute_score_async)")
        raise
    return _result([sample], [score], coalescer.settings.label_free)[0]
