"""The GRPO generation hook: how ``GRPOTrainer`` samples, by ``generation_engine``.

- ``hf``: TRL's own generation with the training model (today's CPU default). With
  ``grpo_policy_copy: merged_bf16`` it generates from the merged bf16 copy of the policy with
  transformers ``generate`` and a static KV cache instead (:class:`~trainer.generation.MergedPolicyCopy`,
  ``decoder="hf"``).
- ``fast``: the same merged bf16 copy decoded by :mod:`fastgen` (``decoder="fast"``).
- ``vllm``: TRL's vLLM mode (``use_vllm``; ``vllm_mode`` colocate or server, as the recipe says).
  TRL (1.16) builds its colocated vLLM with bitsandbytes quantization for a 4-bit policy and merges
  the LoRA adapter into the weights it syncs, so it takes our QLoRA policy (not exercised by the
  tests: they have no vLLM). It needs vLLM and a CUDA GPU, else a clear error.
- ``auto``: ``fast`` on CUDA, else ``hf``. vLLM is never picked on its own here: its colocate mode
  takes a share of the training GPU (``vllm_gpu_memory_utilization``) and its server mode needs a
  server, decisions a recipe makes, not a default.

Why ``merged_bf16`` is a knob of its own (``grpo_policy_copy``) and not an engine: it is not another
way of decoding. ``hf`` means transformers ``generate`` in every stage; which weights it reads, the
training policy or a merged copy of it, is a second choice that only GRPO has (rollouts and eval
never train, so their policy is never stale). The copy pays off with transformers ``generate`` only
for models fastgen cannot read (fastgen's fallback has no static cache), so it stays available
without taking a fourth engine name.

:class:`FastGenerationGRPOTrainer` is ``GRPOTrainer`` with its plain-transformers generation path
replaced by the copy (``fast_generation`` set); vLLM, continuous batching, tools and multimodal inputs
keep TRL's own path.
"""

from __future__ import annotations

import logging
from typing import Any

from trl import GRPOTrainer

from trainer.generation.engine_choice import (
    DEFAULT_GENERATION_ENGINE,
    check_generation_engine,
    resolve_generation_engine,
)
from trainer.generation.policy_copy import FastGenerationConfig, MergedPolicyCopy

__all__ = [
    "DEFAULT_GRPO_POLICY_COPY",
    "GRPO_POLICY_COPIES",
    "FastGenerationGRPOTrainer",
    "check_grpo_generation",
    "fast_generation_config",
]

log = logging.getLogger(__name__)

#: ``grpo_policy_copy``: "none" (``hf`` = TRL's generation with the training model) or "merged_bf16"
#: (``hf`` = transformers generate on the merged bf16 copy of the policy)
GRPO_POLICY_COPIES = ("none", "merged_bf16")
DEFAULT_GRPO_POLICY_COPY = "none"


def check_grpo_generation(engine: str, policy_copy: str, use_vllm: bool) -> bool:
    """Validate GRPO's generation settings; returns what ``use_vllm`` must be (``True`` for
    ``generation_engine: vllm``, and for ``auto`` when the recipe set TRL's ``use_vllm`` itself)."""
    check_generation_engine(engine)
    if policy_copy not in GRPO_POLICY_COPIES:
        raise ValueError(f"grpo_policy_copy must be one of {GRPO_POLICY_COPIES}, got {policy_copy!r}")
    if policy_copy != "none" and engine != "hf":
        raise ValueError(
            f"grpo_policy_copy: {policy_copy} applies to generation_engine: hf only (fast always decodes the "
            f"merged copy; vllm loads the weights into vLLM), got generation_engine: {engine}"
        )
    if use_vllm and engine in ("hf", "fast"):
        raise ValueError(
            f"use_vllm: true contradicts generation_engine: {engine}; set generation_engine: vllm for TRL's vLLM mode"
        )
    return use_vllm or engine == "vllm"


def fast_generation_config(config: Any) -> FastGenerationConfig | None:
    """The policy copy's config when a GRPO config's generation reads the merged copy (``fast`` on this
    machine, or ``hf`` with ``grpo_policy_copy: merged_bf16``); None for TRL's own path (``hf``,
    ``vllm``). ``config`` is the stage's ``GRPOStageConfig`` (a plain ``GRPOConfig``: the defaults)."""
    if config.use_vllm:
        return None
    engine = resolve_generation_engine(getattr(config, "generation_engine", DEFAULT_GENERATION_ENGINE), auto_vllm=False)
    policy_copy = getattr(config, "grpo_policy_copy", DEFAULT_GRPO_POLICY_COPY)
    if engine == "hf" and policy_copy == "none":
        return None
    return FastGenerationConfig(
        static_cache=getattr(config, "generation_static_cache", True),
        decoder=engine,
        seed=int(getattr(config, "seed", 0)),
    )


class FastGenerationGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` that samples from a merged bf16 copy of the policy (``generation_engine``)."""

    def __init__(self, *args: Any, fast_generation: FastGenerationConfig | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast_config = fast_generation
        self._fast_copy: MergedPolicyCopy | None = None
        self._fast_synced_step = -1

    def _fast_path(self, images: Any, multimodal_fields: Any, has_tool_images: bool) -> bool:
        return (
            self._fast_config is not None
            and not self.use_vllm
            and not getattr(self, "use_transformers_continuous_batching", False)
            and not images
            and not multimodal_fields
            and not has_tool_images
        )

    def _generate_single_turn(
        self, prompt_ids: Any, images: Any, multimodal_fields: Any, num_generations: Any, has_tool_images: bool = False
    ) -> tuple[list[list[int]], Any]:
        if not self._fast_path(images, multimodal_fields, has_tool_images):
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images=has_tool_images
            )
        policy = self.accelerator.unwrap_model(self.model)
        if self._fast_copy is None:
            self._fast_copy = MergedPolicyCopy(policy, self._fast_config)
            self._fast_synced_step = self.state.global_step
            log.info("merged bf16 copy of the policy built for generation")
        elif self._fast_synced_step != self.state.global_step:
            self._fast_copy.sync()
            self._fast_synced_step = self.state.global_step
        completion_ids = self._fast_copy.generate(
            [list(p) for p in prompt_ids],
            self.generation_kwargs,
            self._tokenizer.pad_token_id,
            list(self.eos_token_ids),
        )
        return completion_ids, None
