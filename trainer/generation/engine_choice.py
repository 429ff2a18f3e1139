"""``generation_engine``: the one setting that picks how rollouts, eval and GRPO generate.

===========  =====================================================================================
value        meaning (every stage)
===========  =====================================================================================
``hf``       transformers ``generate``. Rollouts/eval: the policy with the per-row sampler; GRPO:
             TRL's own generation with the training model (or, with ``grpo_policy_copy:
             merged_bf16``, transformers ``generate`` on a merged bf16 copy of the policy).
``fast``     :mod:`fastgen` (static KV cache, CUDA-graph decode, refill). A quantized or LoRA policy
             is decoded from its merged bf16 copy (:class:`~trainer.generation.MergedPolicyCopy`),
             which in GRPO is re-merged after every optimizer step.
``vllm``     vLLM. Rollouts/eval: in-process vLLM (:class:`~trainer.generation.VLLMGenerator`);
             GRPO: TRL's vLLM mode (``use_vllm``, with the recipe's ``vllm_mode``). Needs vLLM and a
             CUDA GPU, else a clear error.
``auto``     rollouts/eval: ``vllm`` when vLLM is installed and a GPU is present, else ``fast`` on
             CUDA, else ``hf``. GRPO: ``fast`` on CUDA, else ``hf`` (vLLM is never picked for
             training on its own: TRL's vLLM mode takes a share of the training GPU, or a server).
===========  =====================================================================================

The reward service's ``REGIME_W_GENERATION_ENGINE`` takes the same values with the same meaning
for its in-process arm backends (the service and the trainer never import each other, so it spells
the values out itself; README, service settings).

Old spellings are errors that name the new setting: ``generation_backend`` (removed; ``vllm`` is now
``generation_engine: vllm``, ``transformers`` is ``hf``/``fast``/``auto``) and GRPO's ``trl``
(now ``hf``) and ``merged_bf16`` (now ``hf`` with ``grpo_policy_copy: merged_bf16``).
"""

from __future__ import annotations

import importlib.util

import torch

from trainer.errors import TrainerError

__all__ = [
    "DEFAULT_GENERATION_ENGINE",
    "GENERATION_ENGINES",
    "GENERATION_ENGINE_HELP",
    "EngineUnavailable",
    "check_generation_engine",
    "resolve_generation_engine",
    "vllm_available",
]

#: every value of ``generation_engine``
GENERATION_ENGINES = ("auto", "hf", "fast", "vllm")
#: the default of ``generation_engine`` in every stage
DEFAULT_GENERATION_ENGINE = "auto"
#: the ``--help`` text of every stage's ``generation_engine`` field
GENERATION_ENGINE_HELP = (
    "'hf' (transformers generate; GRPO: TRL's own), 'fast' (fastgen: merged bf16 copy, CUDA-graph decode, "
    "refill), 'vllm' (vLLM; GRPO: TRL's vLLM mode) or 'auto' (rollouts/eval: vLLM when installed with a GPU, "
    "else fast on CUDA, else hf; GRPO: fast on CUDA, else hf)."
)

#: old values and what replaced them
_RENAMED = {
    "trl": "generation_engine: hf (TRL's own generation with the training model)",
    "merged_bf16": "generation_engine: hf with grpo_policy_copy: merged_bf16",
    "transformers": "generation_engine: hf, fast or auto",
}


class EngineUnavailable(TrainerError):
    """The chosen engine cannot run here (vLLM missing, or no GPU)."""


def check_generation_engine(value: str, *, removed_backend: str | None = None) -> str:
    """``value`` when it is one of :data:`GENERATION_ENGINES`; else ``ValueError`` naming the new
    setting. ``removed_backend`` is the stage's old ``generation_backend`` field: set, it is an error."""
    if removed_backend is not None:
        new = "generation_engine: vllm" if removed_backend == "vllm" else _RENAMED.get(removed_backend, "")
        raise ValueError(
            f"generation_backend was removed: use generation_engine ({'|'.join(GENERATION_ENGINES)})"
            + (f"; generation_backend: {removed_backend} is now {new}" if new else "")
        )
    if value in _RENAMED:
        raise ValueError(f"generation_engine: {value} was renamed: use {_RENAMED[value]}")
    if value not in GENERATION_ENGINES:
        raise ValueError(f"generation_engine must be one of {GENERATION_ENGINES}, got {value!r}")
    return value


def vllm_available() -> bool:
    """True when vLLM is importable and a CUDA device is present."""
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def resolve_generation_engine(choice: str, device: torch.device | str | None = None, *, auto_vllm: bool = True) -> str:
    """The engine ``choice`` runs on here: ``hf``, ``fast`` or ``vllm``.

    ``device`` is where the model is (None: CUDA when present). ``auto_vllm``: whether ``auto`` may
    pick vLLM (rollouts and eval: yes; GRPO and a model already in memory: no); else ``auto`` is
    :func:`fastgen.resolve_engine`'s rule (fast on CUDA, hf elsewhere), the rule the service's hf
    backend follows too. ``vllm`` without vLLM or a GPU raises :class:`EngineUnavailable`.
    """
    from fastgen import resolve_engine

    check_generation_engine(choice)
    if choice == "vllm" or (choice == "auto" and auto_vllm and vllm_available()):
        if not vllm_available():
            raise EngineUnavailable(
                "generation_engine: vllm needs vLLM installed and a CUDA GPU; use auto, fast or hf instead"
            )
        return "vllm"
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return resolve_engine(choice, device)
