"""Batched text generation for the rollouts and eval stages.

``generate_texts`` runs many prompts through one ``model.generate`` call per batch. Each row has its
own :class:`SamplingSpec` (temperature, top-p, seed): sampling is done by :class:`SpecSampler`, a logits
processor that draws every row's next token from that row's own ``torch.Generator`` and hands
``generate`` a one-hot choice, so a row's sample depends on its seed, not on which other prompts share
its batch. ``temperature == 0`` means greedy decoding for that row.

``engine="fast"`` (or ``"auto"`` on a CUDA model) decodes with :mod:`fastgen` instead: a bf16 copy of
the policy (:func:`fast_engine_for`; a quantized or LoRA policy is dequantized and merged by
``trainer.grpo_generation.MergedPolicyCopy``), a static KV cache, CUDA-graph decode, refill of
finished rows, and per-row sampling from ``hash(seed, step)``: each row still depends on its own
``SamplingSpec`` only, but not with the same draws as :class:`SpecSampler` (``engine="hf"``, the CPU
default, keeps today's exact samples).

When vLLM is installed and a GPU is present, ``backend="auto"`` uses it instead
(:class:`VLLMGenerator`: per-request seeds, LoRA adapters through ``LoRARequest``).
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "SamplingSpec",
    "Generation",
    "SpecSampler",
    "sample_seed",
    "stop_token_ids",
    "strip_duplicate_bos",
    "generate_texts",
    "fast_engine_for",
    "release_fast_engine",
    "vllm_available",
    "VLLMGenerator",
]

GREEDY_TEMPERATURE = 0.0


@dataclass(frozen=True, slots=True)
class SamplingSpec:
    """How one row is decoded: ``temperature`` 0 is greedy; otherwise nucleus sampling."""

    temperature: float = GREEDY_TEMPERATURE
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True, slots=True)
class Generation:
    """One completion: its text, how many tokens it used, and whether it ended with EOS."""

    text: str
    num_tokens: int
    finished: bool


def sample_seed(seed: int, question_id: str, k: int) -> int:
    """The per-sample seed ``hash(seed, question id, k)``: stable across runs and machines."""
    digest = hashlib.sha256(f"{seed}\x1f{question_id}\x1f{k}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**31 - 1)


def strip_duplicate_bos(prompt: str, tokenizer: Any) -> str:
    """Drop a leading BOS *text* when the tokenizer adds its own BOS token on encoding.

    Chat templates such as DeepSeek-R1's start with ``bos_token``; encoding that string with the
    default ``add_special_tokens=True`` would put BOS in twice.
    """
    bos = getattr(tokenizer, "bos_token", None)
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if not bos or bos_id is None or not prompt.startswith(bos):
        return prompt
    probe = tokenizer("x")["input_ids"]
    if probe and probe[0] == bos_id:
        return prompt[len(bos) :]
    return prompt


class SpecSampler:
    """A ``generate`` logits processor that samples each row with its own seed, temperature, top-p.

    (Not the reward service's ``RowSampler``: that one draws hash-based uniforms for batched arm
    generation on any device; this one keeps a ``torch.Generator`` per row so a trajectory depends on
    its ``SamplingSpec`` only. The trainer never imports the service, so each owns its sampler.)

    It returns scores that are ``-inf`` everywhere except the chosen token, so greedy decoding inside
    ``generate`` picks exactly that token. Rows with temperature 0 take the argmax.
    """

    def __init__(self, specs: Sequence[SamplingSpec]) -> None:
        if not specs:
            raise ValueError("SpecSampler needs at least one SamplingSpec")
        self.specs = list(specs)
        self._generators = [torch.Generator(device="cpu").manual_seed(s.seed) for s in self.specs]
        self._temperature = torch.tensor([s.temperature for s in self.specs], dtype=torch.float32)
        self._top_p = torch.tensor([s.top_p for s in self.specs], dtype=torch.float32)
        self._greedy = self._temperature <= 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch = scores.shape[0]
        if batch != len(self.specs):
            raise ValueError(f"SpecSampler has {len(self.specs)} specs but the batch has {batch} rows")
        device = scores.device
        logits = scores.float()
        chosen = logits.argmax(dim=-1)
        if not bool(self._greedy.all()):
            temperature = self._temperature.to(device).clamp_min(1e-5).unsqueeze(1)
            top_p = self._top_p.to(device).unsqueeze(1)
            probs = torch.softmax(logits / temperature, dim=-1)
            sorted_probs, sorted_idx = self._nucleus_candidates(probs, top_p)
            mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
            sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
            cdf = sorted_probs.cumsum(dim=-1)
            # One uniform draw per row from that row's own generator (CPU: cheap and deterministic).
            u = torch.stack([torch.rand((), generator=g) for g in self._generators]).to(device)
            target = (u * cdf[:, -1]).unsqueeze(1).contiguous()
            pos = torch.searchsorted(cdf.contiguous(), target).clamp_max(cdf.shape[-1] - 1)
            sampled = sorted_idx.gather(1, pos).squeeze(1)
            chosen = torch.where(self._greedy.to(device), chosen, sampled)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, chosen.unsqueeze(1), 0.0)
        return out  # type: ignore[return-value]  # a float tensor: transformers annotates FloatTensor

    #: Nucleus sampling looks at the top ``CANDIDATES`` tokens first; a full sort of a 128k vocabulary
    #: every step is slow, and with top_p < 1 the nucleus is almost always far smaller.
    CANDIDATES = 1024

    def _nucleus_candidates(self, probs: torch.Tensor, top_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities sorted descending with their token ids: the top ``CANDIDATES`` when that
        set holds every row's nucleus (same result as a full sort), else the full vocabulary."""
        if probs.shape[-1] > self.CANDIDATES and bool((top_p < 1.0).all()):
            values, idx = probs.topk(self.CANDIDATES, dim=-1)
            if bool((values.sum(dim=-1, keepdim=True) >= top_p).all()):
                return values, idx
        return probs.sort(dim=-1, descending=True)


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The token id of the chat template's end-of-turn text (``trainer.prompts.end_of_turn``) when it
    is one token, else None."""
    from trainer.prompts import end_of_turn

    text = end_of_turn(tokenizer)
    if not text:
        return None
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return int(ids[0]) if len(ids) == 1 else None


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id generation stops on: the model's generation-config EOS ids, the tokenizer's EOS and
    the chat template's end-of-turn token (Llama 3's ``<|eot_id|>``, ChatML's ``<|im_end|>``: a chat
    model closes its turn with it, which is not always its EOS)."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (configured, tokenizer.eos_token_id, end_of_turn_id(tokenizer)):
        if value is None:
            continue
        for i in value if isinstance(value, (list, tuple)) else [value]:
            if i not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError("the tokenizer has no eos_token_id: generation could not stop")
    return ids


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
    """Generate one completion per prompt, ``batch_size`` rows per ``generate`` call.

    ``specs`` gives each row its sampling (default: greedy). Prompts are grouped by length to waste
    little padding; results come back in the order of ``prompts``. ``on_batch(n)`` is called after
    each batch with the number of rows it finished (for progress bars). ``engine``: ``"hf"``
    (transformers ``generate``), ``"fast"`` (:mod:`fastgen`, ``batch_size`` slots, refilled as rows
    finish; ``on_batch`` is then called as each row finishes) or ``"auto"`` (fast on CUDA).
    """
    from transformers import GenerationConfig, LogitsProcessorList

    from fastgen import resolve_engine

    if specs is None:
        specs = [SamplingSpec()] * len(prompts)
    if len(specs) != len(prompts):
        raise ValueError(f"got {len(prompts)} prompts but {len(specs)} sampling specs")
    if max_new_tokens <= 0 or batch_size <= 0:
        raise ValueError("max_new_tokens and batch_size must be positive")
    if not prompts:
        return []
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    eos_ids = stop_token_ids(model, tokenizer)
    if resolve_engine(engine, next(model.parameters()).device) == "fast":
        return _generate_fast(model, tokenizer, prompts, specs, max_new_tokens, batch_size, on_batch, eos_ids)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos_ids,
    )
    texts = [strip_duplicate_bos(p, tokenizer) for p in prompts]
    lengths = [len(t) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    results: list[Generation | None] = [None] * len(texts)
    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            enc = tokenizer([texts[i] for i in rows], return_tensors="pt", padding=True)
            enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            sampler = SpecSampler([specs[i] for i in rows])
            out = model.generate(**enc, generation_config=config, logits_processor=LogitsProcessorList([sampler]))
            new_tokens = out[:, enc["input_ids"].shape[1] :].tolist()
            for row, ids in zip(rows, new_tokens, strict=True):
                results[row] = _to_generation(ids, tokenizer, eos_ids)
            if on_batch is not None:
                on_batch(len(rows))
    finally:
        tokenizer.padding_side = old_side
    return [r for r in results if r is not None]


def _generate_fast(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    specs: Sequence[SamplingSpec],
    max_new_tokens: int,
    batch_size: int,
    on_batch: Callable[[int], None] | None,
    eos_ids: list[int],
) -> list[Generation]:
    from fastgen import Request

    engine = fast_engine_for(model, slots=batch_size, max_stop_ids=max(8, len(eos_ids)))
    texts = [strip_duplicate_bos(p, tokenizer) for p in prompts]
    encoded = tokenizer(texts)["input_ids"]
    requests = [
        Request(ids, max_new_tokens, temperature=s.temperature, top_p=s.top_p, seed=s.seed, stop_ids=eos_ids)
        for ids, s in zip(encoded, specs, strict=True)
    ]
    done = None if on_batch is None else (lambda _i, _c: on_batch(1))
    completions = engine.generate(requests, on_complete=done)
    return [_to_generation(c.token_ids, tokenizer, eos_ids) for c in completions]


#: The one fast engine kept between calls: (the model it was built for, what the copy merged, engine).
_FAST: dict[str, Any] = {}


def _adapter_state(model: Any) -> tuple[Any, ...]:
    """What a merged copy of ``model`` depends on besides its base weights: the active, enabled adapters."""
    for module in model.modules():
        if hasattr(module, "lora_A") and hasattr(module, "base_layer"):
            return (tuple(module.active_adapters), bool(getattr(module, "disable_adapters", False)))
    return ()


def _needs_merged_copy(model: Any) -> bool:
    """True for a LoRA-wrapped or bitsandbytes-quantized policy (the engine reads plain float weights)."""
    if _adapter_state(model):
        return True
    return any(type(p).__name__ in ("Params4bit", "Int8Params") for p in model.parameters())


def fast_engine_for(model: Any, *, slots: int, max_stop_ids: int = 8) -> Any:
    """The :mod:`fastgen` engine for ``model``, built once and reused while the model, its active
    adapters and ``slots`` stay the same. A quantized or LoRA-wrapped policy is decoded from a merged
    bf16 copy (``MergedPolicyCopy``: 4-bit base dequantized once, LoRA delta merged); a plain model
    directly. The previous engine (and copy) is freed before a new one is built."""
    import weakref

    from fastgen import EngineConfig, build_engine

    key = (_adapter_state(model), slots, max_stop_ids)
    held = _FAST.get("entry")
    if held is not None and held[0]() is model and held[1] == key:
        return held[2]
    release_fast_engine()
    target = model
    if _needs_merged_copy(model):
        from trainer.grpo_generation import MergedPolicyCopy

        target = MergedPolicyCopy(model).model
    engine = build_engine(target, EngineConfig(slots=slots, max_stop_ids=max_stop_ids))
    _FAST["entry"] = (weakref.ref(model), key, engine)
    return engine


def release_fast_engine() -> None:
    """Drop the kept engine (its KV cache, graphs and merged copy)."""
    held = _FAST.pop("entry", None)
    if held is not None:
        held[2].release()
        del held
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _to_generation(ids: list[int], tokenizer: Any, eos_ids: list[int]) -> Generation:
    """Cut a generated row at its first EOS (kept in the count) and decode it.

    Rows that stop early are padded after their EOS; a row without EOS ran the whole budget.
    """
    finished = False
    kept: list[int] = []
    for t in ids:
        if t in eos_ids:
            finished = True
            kept.append(t)
            break
        kept.append(t)
    text = tokenizer.decode(kept, skip_special_tokens=True)
    return Generation(text=text, num_tokens=len(kept), finished=finished)


def vllm_available() -> bool:
    """True when vLLM is importable and a CUDA device is present."""
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


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
            raise RuntimeError("vLLM is not installed or no GPU is present; use backend='transformers'")
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
