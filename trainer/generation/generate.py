"""``generate_texts``: one completion per prompt from a model in memory, by ``hf`` or ``fast``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from trainer.generation.engine_choice import resolve_generation_engine
from trainer.generation.specs import Generation, SamplingSpec
from trainer.generation.tokens import stop_token_ids

__all__ = ["generate_texts"]


@torch.inference_mode()
def generate_texts(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    specs: Sequence[SamplingSpec] | None = None,
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
    engine: str = "hf",
) -> list[Generation]:
    """Generate one completion per prompt, ``batch_size`` rows per batch, in the order of ``prompts``.

    ``specs`` gives each row its sampling (default: greedy). ``on_batch(n)`` is called as rows finish
    with how many did (for progress bars). ``engine``: ``"hf"`` (:func:`~trainer.generation.hf.generate_hf`:
    transformers ``generate``, ``batch_size`` rows per call), ``"fast"``
    (:func:`~trainer.generation.fast.generate_fast`: fastgen, ``batch_size`` slots refilled as rows
    finish) or ``"auto"`` (fast on CUDA, hf elsewhere: vLLM is not an engine of a model in memory).
    """
    from trainer.generation.fast import generate_fast
    from trainer.generation.hf import generate_hf

    if specs is None:
        specs = [SamplingSpec()] * len(prompts)
    if len(specs) != len(prompts):
        raise ValueError(f"got {len(prompts)} prompts but {len(specs)} sampling specs")
    if max_new_tokens <= 0 or batch_size <= 0:
        raise ValueError("max_new_tokens and batch_size must be positive")
    if engine == "vllm":
        raise ValueError("generate_texts decodes a model in memory (hf | fast | auto); vLLM is VLLMGenerator")
    if not prompts:
        return []
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    eos_ids = stop_token_ids(model, tokenizer)
    device = next(model.parameters()).device
    run = generate_fast if resolve_generation_engine(engine, device, auto_vllm=False) == "fast" else generate_hf
    return run(model, tokenizer, prompts, specs, max_new_tokens, batch_size, on_batch, eos_ids)
