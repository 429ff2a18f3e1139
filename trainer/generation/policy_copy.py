"""A plain bf16 copy of a (quantized, LoRA-wrapped) policy that generation reads instead of the policy.

TRL's ``GRPOTrainer`` generates with the training model itself: on a QLoRA policy every decoding step
dequantizes the NF4 base and runs the LoRA branches beside it, eagerly, which leaves a GPU mostly idle
(issue 15: ~72 ms a token at batch 8 on an H100 for an 8B model). :class:`MergedPolicyCopy` keeps a
plain bf16 copy of the policy on the same device instead: every base weight dequantized once from the
policy's own 4-bit weights, the current LoRA delta merged into the target layers (re-merged by
:meth:`MergedPolicyCopy.sync`, e.g. after each optimizer step: dequantize + ``B @ A``, no weights copied
from the host). The copy is the same function as the policy up to bf16 rounding, so the samples stay
on-policy.

It decodes with :mod:`fastgen` (``decoder="fast"``: hand-written Llama decode, CUDA graphs, per-row
seeded sampling, refill) or with transformers ``generate`` and a static KV cache (``decoder="hf"``:
transformers compiles the forward and replays it as CUDA graphs, prompts left-padded to a multiple of
``pad_to_multiple_of`` so few shapes are compiled). Rollouts and eval use it through
:func:`trainer.generation.fast_engine_for`; GRPO through :mod:`trainer.generation.grpo`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from trainer.generation.specs import sample_seed

__all__ = ["DECODERS", "FastGenerationConfig", "MergedPolicyCopy"]

log = logging.getLogger(__name__)

#: how the copy decodes: transformers ``generate`` or fastgen
DECODERS = ("hf", "fast")


@dataclass(frozen=True, slots=True)
class FastGenerationConfig:
    """How the bf16 copy decodes."""

    static_cache: bool = True  # static KV cache: transformers compiles the forward (CUDA graphs) on GPU
    pad_to_multiple_of: int = 64  # prompt lengths rounded up, so the static cache has few shapes
    dtype: torch.dtype = torch.bfloat16
    decoder: str = "hf"  # "hf": transformers generate on the copy; "fast": fastgen's engine
    seed: int = 0  # fastgen: call c, row r samples with hash(seed, c, r)

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1, got {self.pad_to_multiple_of}")


def _dense_weight(module: Any, dtype: torch.dtype) -> torch.Tensor:
    """A linear layer's weight as a new dense tensor (dequantized when bitsandbytes holds it); never the
    layer's own storage, so callers may modify it."""
    weight = module.weight
    if type(weight).__name__ in ("Params4bit", "Int8Params"):
        from peft.utils.integrations import dequantize_bnb_weight

        state = getattr(weight, "quant_state", None) or getattr(module, "state", None)
        if getattr(state, "packing_format_for_cpu", False):
            # On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit weight into its own CPU layout at the
            # first eval-mode forward; dequantizing that layout as NF4 reads garbage. Unpack a copy first
            # (the module keeps its packed weight).
            import copy

            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse, dequantize_4bit

            data, state = _convert_weight_packed_for_cpu_inverse(weight.data.clone(), copy.deepcopy(state))
            return dequantize_4bit(data, state).to(dtype)
        return dequantize_bnb_weight(weight, state=state).to(dtype)
    return weight.detach().to(dtype, copy=True)


def _is_lora_layer(module: Any) -> bool:
    return hasattr(module, "base_layer") and hasattr(module, "lora_A") and hasattr(module, "get_delta_weight")


class MergedPolicyCopy:
    """A bf16 copy of a (quantized, LoRA-wrapped) causal LM that tracks the policy's LoRA weights."""

    def __init__(self, policy: Any, config: FastGenerationConfig | None = None) -> None:
        from transformers import AutoModelForCausalLM

        self.config = config or FastGenerationConfig()
        base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
        self._base = base
        model_config = base.config.__class__.from_dict(base.config.to_dict())
        for attr in ("quantization_config", "_pre_quantization_dtype"):
            if hasattr(model_config, attr):
                delattr(model_config, attr)
        device = next(p.device for p in base.parameters())
        with torch.device(device):
            self.model = AutoModelForCausalLM.from_config(model_config, dtype=self.config.dtype)
        self.model.requires_grad_(False)
        self.model.eval()
        # The training policy's config has use_cache=False (gradient checkpointing), and from_config copied it
        # into the generation config too: without this, generate() re-reads the whole sequence every token.
        self.model.config.use_cache = True
        self.model.generation_config.use_cache = True
        self._lora: list[tuple[torch.Tensor, Any]] = []
        self._engine: Any = None
        self._calls = 0
        self._fill()

    @torch.no_grad()
    def _fill(self) -> None:
        source = dict(self._base.named_modules())
        covered: set[str] = set()
        for name, module in self.model.named_modules():
            if not isinstance(module, torch.nn.Linear):
                continue
            src = source.get(name)
            if src is None:
                raise ValueError(f"the policy has no module {name!r}; cannot build its bf16 copy")
            layer = src.base_layer if _is_lora_layer(src) else src
            if _is_lora_layer(src):
                if any(getattr(src, "use_dora", {}).get(a, False) for a in src.active_adapters):
                    raise ValueError("the merged bf16 policy copy does not support DoRA adapters")
                self._lora.append((module.weight, src))
            module.weight.copy_(_dense_weight(layer, self.config.dtype))
            if module.bias is not None and getattr(layer, "bias", None) is not None:
                module.bias.copy_(layer.bias.to(self.config.dtype))
            covered.update({f"{name}.weight", f"{name}.bias"})
        params = dict(self._base.named_parameters())
        buffers = dict(self._base.named_buffers())
        for name, param in self.model.named_parameters():
            if name in covered:
                continue
            if name not in params:
                raise ValueError(f"the policy has no parameter {name!r}; cannot build its bf16 copy")
            param.copy_(params[name].to(self.config.dtype))
        for name, buf in self.model.named_buffers():
            if name in buffers and buffers[name].shape == buf.shape:
                buf.copy_(buffers[name].to(buf.dtype))
        self.sync()

    @torch.no_grad()
    def sync(self) -> None:
        """Re-merge the policy's current LoRA weights into the copy's target layers."""
        for weight, lora in self._lora:
            merged = _dense_weight(lora.base_layer, torch.float32)
            if getattr(lora, "disable_adapters", False):  # inside PeftModel.disable_adapter(): the bare base
                weight.copy_(merged.to(weight.dtype))
                continue
            for adapter in lora.active_adapters:
                if adapter in lora.lora_A:
                    merged += lora.get_delta_weight(adapter).float()
            weight.copy_(merged.to(weight.dtype))

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: list[list[int]],
        generation_kwargs: dict[str, Any],
        pad_token_id: int,
        eos_token_ids: list[int],
    ) -> list[list[int]]:
        """Sample one completion per prompt (token ids, cut after the first EOS, EOS kept)."""
        from transformers import GenerationConfig

        if self.config.decoder == "fast":
            return self._generate_fast(prompt_ids, generation_kwargs, eos_token_ids)

        multiple = self.config.pad_to_multiple_of
        width = -(-max(len(p) for p in prompt_ids) // multiple) * multiple
        device = self.model.device
        ids = torch.full((len(prompt_ids), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
        for row, prompt in enumerate(prompt_ids):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
        kwargs = dict(generation_kwargs)
        kwargs["cache_implementation"] = "static" if self.config.static_cache else None
        kwargs["pad_token_id"] = pad_token_id
        kwargs["use_cache"] = True
        config = GenerationConfig(**kwargs, disable_compile=not self.config.static_cache)
        out = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config)
        completions = out[:, width:].tolist()
        eos = set(eos_token_ids)
        result = []
        for row in completions:
            cut = next((i for i, t in enumerate(row) if t in eos), None)
            result.append(row if cut is None else row[: cut + 1])
        return result

    def _generate_fast(
        self, prompt_ids: list[list[int]], generation_kwargs: dict[str, Any], eos_token_ids: list[int]
    ) -> list[list[int]]:
        from fastgen import EngineConfig, Request, build_engine

        unsupported = {
            k: v
            for k, v in generation_kwargs.items()
            if (k == "top_k" and v not in (None, 0))
            or (k == "min_p" and v not in (None, 0.0))
            or (k == "repetition_penalty" and v not in (None, 1.0))
        }
        if unsupported:
            log.warning("fastgen ignores these generation settings: %s", unsupported)
        if self._engine is None or self._engine.config.slots < len(prompt_ids):
            slots = max(len(prompt_ids), 8)
            self._engine = build_engine(self.model, EngineConfig(slots=slots, max_stop_ids=max(8, len(eos_token_ids))))
        do_sample = generation_kwargs.get("do_sample", True)
        temperature = float(generation_kwargs.get("temperature") or 1.0) if do_sample else 0.0
        top_p = float(generation_kwargs.get("top_p") or 1.0)
        max_new = int(generation_kwargs["max_new_tokens"])
        call = self._calls
        self._calls += 1
        requests = [
            Request(
                p,
                max_new,
                temperature=temperature,
                top_p=top_p,
                seed=sample_seed(self.config.seed, f"grpo-call-{call}", row),
                stop_ids=eos_token_ids,
            )
            for row, p in enumerate(prompt_ids)
        ]
        return [c.token_ids for c in self._engine.generate(requests)]
