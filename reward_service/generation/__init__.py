"""Arm generation backends (DESIGN §4): one batched protocol, four implementations.

``create_backend`` imports each implementation lazily, so a service configured for ``provided``
or ``openai`` never imports torch, transformers or vLLM.
"""

from __future__ import annotations

import os

from reward_service.generation.base import (
    ArmPrompt,
    GenerationBackend,
    GenerationError,
    GenerationTimeout,
    effective_seed,
)

BACKEND_KINDS = ("hf", "openai", "vllm", "provided")

__all__ = [
    "BACKEND_KINDS",
    "ArmPrompt",
    "GenerationBackend",
    "GenerationError",
    "GenerationTimeout",
    "create_backend",
    "effective_seed",
]


def create_backend(
    kind: str,
    *,
    model: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 32,
    openai_base_url: str | None = None,
    openai_api_key: str | None = None,
    timeout_s: float = 120.0,
    max_concurrency: int = 16,
    seed: int = 0,
) -> GenerationBackend:
    """Build the backend named ``kind`` ("hf" | "openai" | "vllm" | "provided").

    Configuration mistakes (unknown kind, missing model or URL) raise ``ValueError``; a model that
    cannot be loaded or a server that cannot be reached raises ``GenerationError``.
    """
    kind = kind.strip().lower()
    if kind == "provided":
        from reward_service.generation.provided import ProvidedBackend

        return ProvidedBackend()
    if kind == "hf":
        if not model:
            raise ValueError("backend 'hf' needs model= (a local path or a hub id)")
        from reward_service.generation.hf import HFBackend

        return HFBackend(model, device=device, dtype=dtype, batch_size=batch_size, timeout_s=timeout_s, seed=seed)
    if kind == "openai":
        if not openai_base_url:
            raise ValueError("backend 'openai' needs openai_base_url= (e.g. http://vllm:8000/v1)")
        from reward_service.generation.openai import OpenAIBackend

        tokenizer = model if model and os.path.isdir(model) else None
        return OpenAIBackend(
            openai_base_url,
            model=model,
            api_key=openai_api_key,
            timeout_s=timeout_s,
            max_concurrency=max_concurrency,
            seed=seed,
            tokenizer=tokenizer,
        )
    if kind == "vllm":
        if not model:
            raise ValueError("backend 'vllm' needs model= (a local path or a hub id)")
        from reward_service.generation.vllm import VLLMBackend

        return VLLMBackend(model, dtype=dtype, seed=seed)
    raise ValueError(f"unknown generation backend {kind!r}: use one of {', '.join(BACKEND_KINDS)}")
