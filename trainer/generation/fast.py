"""``generation_engine: fast`` for rollouts and eval: the policy decoded by :mod:`fastgen`.

A bf16 copy of the policy (:func:`fast_engine_for`; a quantized or LoRA policy is dequantized and
merged by :class:`~trainer.generation.MergedPolicyCopy`), a static KV cache, CUDA-graph decode, refill
of finished rows, and per-row sampling from ``hash(seed, step)``: each row depends on its own
``SamplingSpec`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from trainer.generation.policy_copy import MergedPolicyCopy
from trainer.generation.specs import Generation, SamplingSpec
from trainer.generation.tokens import strip_duplicate_bos, to_generation

__all__ = ["fast_engine_for", "generate_fast", "release_fast_engine"]


def generate_fast(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    specs: Sequence[SamplingSpec],
    max_new_tokens: int,
    batch_size: int,
    on_batch: Callable[[int], None] | None,
    eos_ids: list[int],
) -> list[Generation]:
    """One completion per prompt from the kept fastgen engine (``batch_size`` slots, refilled as rows
    finish; ``on_batch(1)`` as each row finishes), in the order of ``prompts``."""
    from fastgen import Request

    engine = fast_engine_for(model, slots=batch_size, max_stop_ids=max(8, len(eos_ids)))
    texts = [strip_duplicate_bos(p, tokenizer) for p in prompts]
    encoded = tokenizer(texts)["input_ids"]
    requests = [
        Request(ids, max_new_tokens, temperature=s.temperature, top_p=s.top_p, seed=s.seed, stop_ids=eos_ids)
        for ids, s in zip(encoded, specs, strict=True)
    ]
    done = None if on_batch is None else (lambda _i, _c: on_batch(1))
    completions = engine.generate(requests, on_complete=done)
    return [to_generation(c.token_ids, tokenizer, eos_ids) for c in completions]


#: The one fast engine kept between calls: (the model it was built for, what the copy merged, engine).
_FAST: dict[str, Any] = {}


def _adapter_state(model: Any) -> tuple[Any, ...]:
    """What a merged copy of ``model`` depends on besides its base weights: the active, enabled adapters."""
    for module in model.modules():
        if hasattr(module, "lora_A") and hasattr(module, "base_layer"):
            return (tuple(module.active_adapters), bool(getattr(module, "disable_adapters", False)))
    return ()


def _needs_merged_copy(model: Any) -> bool:
    """True for a LoRA-wrapped or bitsandbytes-quantized policy (the engine reads plain float weights)."""
    if _adapter_state(model):
        return True
    return any(type(p).__name__ in ("Params4bit", "Int8Params") for p in model.parameters())


def fast_engine_for(model: Any, *, slots: int, max_stop_ids: int = 8) -> Any:
    """The :mod:`fastgen` engine for ``model``, built once and reused while the model, its active
    adapters and ``slots`` stay the same. A quantized or LoRA-wrapped policy is decoded from a merged
    bf16 copy (``MergedPolicyCopy``: 4-bit base dequantized once, LoRA delta merged); a plain model
    directly. The previous engine (and copy) is freed before a new one is built."""
    import weakref

    from fastgen import EngineConfig, build_engine

    key = (_adapter_state(model), slots, max_stop_ids)
    held = _FAST.get("entry")
    if held is not None and held[0]() is model and held[1] == key:
        return held[2]
    release_fast_engine()
    target = model
    if _needs_merged_copy(model):
        target = MergedPolicyCopy(model).model
    engine = build_engine(target, EngineConfig(slots=slots, max_stop_ids=max_stop_ids))
    _FAST["entry"] = (weakref.ref(model), key, engine)
    return engine


def release_fast_engine() -> None:
    """Drop the kept engine (its KV cache, graphs and merged copy)."""
    held = _FAST.pop("entry", None)
    if held is not None:
        held[2].release()
        del held
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
