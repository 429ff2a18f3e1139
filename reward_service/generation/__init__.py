"""Arm generation backends (DESIGN §4): one batched protocol, three implementations.

``create_backend`` imports each implementation lazily, so a service configured for ``provided``
or ``openai`` never imports torch, transformers or vLLM. Backend ``provided`` has no model at all:
``create_backend`` returns ``None`` for it and every request must carry its arm texts.
"""

from __future__ import annotations

import os

from reward_service.generation.base import (
    ArmPrompt,
    BackendConfig,
    GenerationBackend,
    GenerationError,
    GenerationTimeout,
    effective_seed,
)

BACKEND_KINDS = ("hf", "openai", "vllm", "provided")
#: the model id of backend ``provided`` (part of its arm-cache keys)
PROVIDED_MODEL_ID = "provided"

__all__ = [
    "BACKEND_KINDS",
    "PROVIDED_MODEL_ID",
    "ArmPrompt",
    "BackendConfig",
    "GenerationBackend",
    "GenerationError",
    "GenerationTimeout",
    "create_backend",
    "effective_seed",
]


def create_backend(config: BackendConfig) -> GenerationBackend | None:
    """Build the backend ``config.kind`` names; ``None`` for ``provided`` (no model).

    Configuration mistakes (unknown kind, missing model or URL) raise ``ValueError``; a model that
    cannot be loaded or a server that cannot be reached raises ``GenerationError``.
    """
    kind = config.kind.strip().lower()
    if kind == "provided":
        return None
    if kind == "hf":
        if not config.model:
            raise ValueError("backend 'hf' needs model= (a local path or a hub id)")
        from reward_service.generation.hf import HFBackend

        return HFBackend(
            config.model,
            device=config.device,
            dtype=config.dtype,
            batch_size=config.batch_size,
            timeout_s=config.timeout_s,
            seed=config.seed,
            generation_engine=config.generation_engine,
        )
    if kind == "openai":
        if not config.openai_base_url:
            raise ValueError("backend 'openai' needs openai_base_url= (e.g. http://vllm:8000/v1)")
        from reward_service.generation.openai import OpenAIBackend

        tokenizer = config.model if config.model and os.path.isdir(config.model) else None
        return OpenAIBackend(
            config.openai_base_url,
            model=config.model,
            api_key=config.openai_api_key,
            timeout_s=config.timeout_s,
            max_concurrency=config.max_concurrency,
            concurrent_calls=config.concurrent_calls,
            seed=config.seed,
            tokenizer=tokenizer,
        )
    if kind == "vllm":
        if not config.model:
            raise ValueError("backend 'vllm' needs model= (a local path or a hub id)")
        from reward_service.generation.vllm import VLLMBackend

        return VLLMBackend(config.model, dtype=config.dtype, seed=config.seed)
    raise ValueError(f"unknown generation backend {kind!r}: use one of {', '.join(BACKEND_KINDS)}")
