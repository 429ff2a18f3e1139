"""Generation for the trainer's stages: one setting, ``generation_engine: auto|hf|fast|vllm``.

The public surface; each engine lives in a module of its own:

- :mod:`~trainer.generation.engine_choice`: the setting's values, default, validation and ``auto``;
- :mod:`~trainer.generation.specs`, :mod:`~trainer.generation.tokens`: a row's sampling and result,
  stop ids, BOS handling;
- :mod:`~trainer.generation.hf` (transformers ``generate`` + per-row sampler),
  :mod:`~trainer.generation.fast` (fastgen), :mod:`~trainer.generation.vllm` (in-process vLLM):
  rollouts and eval, through :func:`generate_texts` or :class:`VLLMGenerator`;
- :mod:`~trainer.generation.policy_copy`: the merged bf16 copy of a quantized / LoRA policy that
  ``fast`` decodes;
- :mod:`~trainer.generation.grpo`: the GRPO hook (imported on its own: it imports TRL).

Sampling is reproducible per row: a row's tokens depend on its own :class:`SamplingSpec` (seed
``hash(seed, question id, k)``, :func:`sample_seed`), never on its batch mates. ``hf`` and ``fast``
choose tokens with fastgen's one sampler (``hash(seed, step)`` draws; :class:`fastgen.LogitsSampler`
inside ``generate``), so they differ only where their forwards' rounding flips a near-tie.
"""

from __future__ import annotations

from trainer.generation.engine_choice import (
    DEFAULT_GENERATION_ENGINE,
    GENERATION_ENGINE_HELP,
    GENERATION_ENGINES,
    EngineUnavailable,
    check_generation_engine,
    resolve_generation_engine,
    vllm_available,
)
from trainer.generation.fast import fast_engine_for, release_fast_engine
from trainer.generation.generate import generate_texts
from trainer.generation.policy_copy import FastGenerationConfig, MergedPolicyCopy
from trainer.generation.specs import Generation, SamplingSpec, sample_seed
from trainer.generation.tokens import stop_token_ids, strip_duplicate_bos
from trainer.generation.vllm import VLLMGenerator

__all__ = [
    "DEFAULT_GENERATION_ENGINE",
    "GENERATION_ENGINES",
    "GENERATION_ENGINE_HELP",
    "EngineUnavailable",
    "FastGenerationConfig",
    "Generation",
    "MergedPolicyCopy",
    "SamplingSpec",
    "VLLMGenerator",
    "check_generation_engine",
    "fast_engine_for",
    "generate_texts",
    "release_fast_engine",
    "resolve_generation_engine",
    "sample_seed",
    "stop_token_ids",
    "strip_duplicate_bos",
    "vllm_available",
]
