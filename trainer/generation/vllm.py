"""``generation_engine: vllm`` for rollouts and eval: in-process vLLM (per-request seeds, LoRA adapters
through ``LoRARequest``)."""

from __future__ import annotations

from collections.abc import Sequence

from trainer.generation.engine_choice import EngineUnavailable, vllm_available
from trainer.generation.specs import Generation, SamplingSpec
from trainer.generation.tokens import strip_duplicate_bos

__all__ = ["VLLMGenerator"]


class VLLMGenerator:
    """Optional fast path: in-process vLLM with per-request seeds and an optional LoRA adapter."""

    def __init__(
        self,
        model_name_or_path: str,
        *,
        enable_lora: bool = True,
        max_model_len: int = 4096,
        gpu_memory_utilization: float = 0.85,
        max_lora_rank: int = 64,
    ) -> None:
        if not vllm_available():
            raise EngineUnavailable(
                "vLLM is not installed or no GPU is present; use generation_engine: hf, fast or auto"
            )
        from vllm import LLM  # type: ignore[import-not-found]

        self._adapter_ids: dict[str, int] = {}
        self._llm = LLM(
            model=model_name_or_path,
            enable_lora=enable_lora,
            max_lora_rank=max_lora_rank,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
        )

    def generate(
        self,
        prompts: Sequence[str],
        specs: Sequence[SamplingSpec],
        *,
        max_new_tokens: int,
        adapter_path: str | None = None,
    ) -> list[Generation]:
        """Generate with the base model, or with the LoRA adapter at ``adapter_path``."""
        from vllm import SamplingParams  # type: ignore[import-not-found]
        from vllm.lora.request import LoRARequest  # type: ignore[import-not-found]

        if len(specs) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(specs)} sampling specs")
        params = [
            SamplingParams(temperature=s.temperature, top_p=s.top_p, seed=s.seed, max_tokens=max_new_tokens)
            for s in specs
        ]
        lora = None
        if adapter_path is not None:
            lora_id = self._adapter_ids.setdefault(adapter_path, len(self._adapter_ids) + 1)
            lora = LoRARequest(f"adapter-{lora_id}", lora_id, adapter_path)
        tokenizer = self._llm.get_tokenizer()
        texts = [strip_duplicate_bos(p, tokenizer) for p in prompts]
        outputs = self._llm.generate(texts, params, lora_request=lora, use_tqdm=False)
        return [
            Generation(
                text=o.outputs[0].text,
                num_tokens=len(o.outputs[0].token_ids),
                finished=o.outputs[0].finish_reason == "stop",
            )
            for o in outputs
        ]
