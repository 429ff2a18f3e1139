"""fastgen: one fast generation engine for the trainer and the reward service.

An open package of its own (torch + transformers only) so that both sides can use it without
importing each other. :func:`build_engine` returns an :class:`Engine` (hand-written Llama decode,
static KV cache, CUDA-graph decode, per-row seeded sampling, refill of finished rows) for a
Llama-family model in a float dtype, else a :class:`GenerateFallback` over ``transformers``
``generate``, with a log line saying why.

The engine is laid out in parts: :mod:`fastgen.scheduler` (slots, queue, refill),
:mod:`fastgen.model_runner` (prefill, decode step, CUDA graphs), :mod:`fastgen.kv_cache` (the static
cache and slot state), :mod:`fastgen.llama` (the forward), orchestrated by :mod:`fastgen.engine`.

The repository's one sampler is :mod:`fastgen.sampling`: :func:`select_tokens` (the engine's, on the
device) and :class:`LogitsSampler` (the same selection as a transformers ``generate`` logits processor,
for every path that decodes with ``generate``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from fastgen.engine import Engine
from fastgen.fallback import GenerateFallback
from fastgen.sampling import (
    LogitsSampler,
    Mode,
    RowParams,
    SamplingParams,
    mix32,
    seed_keys,
    select_tokens,
    uniforms,
)
from fastgen.types import Completion, EngineConfig, EngineTimeout, Request, UnsupportedModel

__all__ = [
    "ENGINES",
    "Completion",
    "Engine",
    "EngineConfig",
    "EngineTimeout",
    "GenerateFallback",
    "LogitsSampler",
    "Mode",
    "Request",
    "RowParams",
    "SamplingParams",
    "UnsupportedModel",
    "build_engine",
    "mix32",
    "resolve_engine",
    "seed_keys",
    "select_tokens",
    "uniforms",
]

log = logging.getLogger(__name__)

#: "hf": the caller's own transformers path; "fast": this engine; "auto": fast on CUDA, hf on the CPU.
ENGINES = ("auto", "hf", "fast")


def resolve_engine(choice: str, device: torch.device | str) -> str:
    """``auto`` -> ``fast`` on a CUDA device, ``hf`` elsewhere; ``hf`` and ``fast`` as given."""
    if choice not in ENGINES:
        raise ValueError(f"generation engine must be one of {ENGINES}, got {choice!r}")
    if choice == "auto":
        return "fast" if torch.device(device).type == "cuda" else "hf"
    return choice


def build_engine(model: Any, config: EngineConfig | None = None) -> Engine | GenerateFallback:
    """The fast engine for ``model``, or the ``generate`` fallback when it cannot read the model."""
    try:
        return Engine(model, config)
    except UnsupportedModel as exc:
        log.warning("fastgen: falling back to transformers generate (slow path): %s", exc)
        return GenerateFallback(model, config)
