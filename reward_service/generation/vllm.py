"""The ``vllm`` backend: vLLM in process (optional extra ``regime-w[vllm]``, GPU only).

vLLM is imported inside the constructor so the service runs without it. One ``SamplingParams`` per
prompt (its arm's temperature / top_p / max_tokens and seed), all prompts in one batched
``LLM.chat`` call; vLLM schedules them with continuous batching. Production deployments prefer the
``openai`` backend against a ``vllm serve`` container, which keeps vLLM's pins out of this image.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from reward_service.generation.base import ArmPrompt, GenerationError, effective_seed


class VLLMBackend:
    """Arm generation with an in-process ``vllm.LLM``."""

    name = "vllm"

    def __init__(self, model: str, *, dtype: str = "auto", seed: int = 0, **engine_kwargs: Any) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise GenerationError(
                "backend 'vllm' needs vLLM, which is not installed: install the optional extra "
                "`pip install 'regime-w[vllm]'` on a GPU machine, or use backend 'openai' against `vllm serve`"
            ) from exc
        self.model_id = model
        self.seed = seed
        self._sampling_params = vllm.SamplingParams
        self._lock = threading.Lock()
        try:
            self._llm: Any = vllm.LLM(model=model, dtype=dtype, seed=seed, **engine_kwargs)
        except Exception as exc:  # vLLM raises many types (ValueError, RuntimeError, OSError) on load
            raise GenerationError(
                f"backend 'vllm' could not load model {model!r}: {type(exc).__name__}: {exc}"
            ) from exc

    def generate(self, prompts: Sequence[ArmPrompt]) -> list[str]:
        if not prompts:
            return []
        if any(p.assistant_prefix for p in prompts):  # a chat API would answer it as a new turn
            raise GenerationError(
                "backend 'vllm' cannot continue an assistant prefix (the [progress] scorer needs backend 'hf')"
            )
        conversations = [p.message_dicts() for p in prompts]
        params = [
            self._sampling_params(
                temperature=p.temperature,
                top_p=p.top_p,
                max_tokens=p.max_tokens,
                seed=effective_seed(self.seed, p.seed),
            )
            for p in prompts
        ]
        with self._lock:
            try:
                outputs = self._llm.chat(conversations, sampling_params=params, use_tqdm=False)
            except Exception as exc:
                raise GenerationError(
                    f"backend 'vllm' ({self.model_id}) generation failed: {type(exc).__name__}", detail=str(exc)
                ) from exc
        if len(outputs) != len(prompts):
            raise GenerationError(f"backend 'vllm' returned {len(outputs)} outputs for {len(prompts)} prompts")
        return [out.outputs[0].text for out in outputs]

    def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        tokenizer = self._llm.get_tokenizer()
        return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]] if texts else []

    def close(self) -> None:
        with self._lock:
            self._llm = None
