"""The ``hf`` backend: transformers in process, on CPU or GPU (the in-process model backend).

Batches across arms and questions: prompts are sorted by (max_tokens, prompt length), cut into
chunks of ``batch_size``, left-padded, and decoded together with per-row temperature / top_p /
seed (:mod:`reward_service.generation.sampling`) and a per-row token budget, so arms with mixed
sampling parameters share one forward pass per step. Seeded: a prompt's text depends only on the
prompt, its seed and the backend's base seed.

``generation_engine="fast"`` (or ``"auto"`` on a GPU) decodes with :mod:`fastgen` instead (the open
engine the trainer uses too): ``batch_size`` slots with a static KV cache, CUDA-graph decode, finished
rows refilled from the queue. Both engines choose tokens with fastgen's one sampler (per-row
``hash(seed, step)`` draws), so they differ only by the floating-point differences of their forwards,
which can flip a near-tie.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from reward_service.generation.base import (
    DEFAULT_BATCH_ROWS,
    DEFAULT_GENERATION_ENGINE,
    ArmPrompt,
    GenerationError,
    GenerationTimeout,
    effective_seed,
    render_plain,
)
from reward_service.generation.sampling import RowSampler

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) asks for local files only."""
    return any(
        os.environ.get(v, "").lower() in {"1", "true", "yes", "on"} for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def resolve_device(device: str) -> torch.device:
    """``auto`` -> the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise GenerationError(f"device {device!r} requested but CUDA is not available on this machine")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bfloat16 on a GPU that supports it (else float16), float32 on the CPU."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use 'auto' or one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


@dataclass(frozen=True, slots=True)
class GenerationStats:
    """What the last ``generate`` call did (for metrics and benchmarks)."""

    prompts: int
    batches: int
    generated_tokens: int
    seconds: float
    tokens_per_prompt: tuple[int, ...]  # new tokens of each prompt (eos excluded), input order


class _Deadline(Exception):
    """Raised inside ``model.generate`` when the call's deadline passed."""


class _RowBudget(StoppingCriteria):
    """Stops each row at its own max_tokens; raises when the call's deadline passed."""

    def __init__(self, max_tokens: torch.Tensor, prompt_len: int, deadline: float) -> None:
        self.max_tokens = max_tokens
        self.prompt_len = prompt_len
        self.deadline = deadline

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        if time.monotonic() > self.deadline:
            raise _Deadline
        return cast(torch.BoolTensor, (input_ids.shape[1] - self.prompt_len) >= self.max_tokens)


class HFBackend:
    """transformers ``generate`` over a local path or hub id, batched across arms and questions."""

    name = "hf"

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = DEFAULT_BATCH_ROWS,
        timeout_s: float = 120.0,
        seed: int = 0,
        compile: bool = False,
        ignore_eos: bool = False,
        preloaded: tuple[Any, Any] | None = None,
        generation_engine: str = DEFAULT_GENERATION_ENGINE,
    ) -> None:
        """Load ``model`` (local path or hub id; local files only when HF_HUB_OFFLINE is set).

        ``compile`` switches on the static KV cache (transformers then compiles the forward on
        GPU); ``ignore_eos`` decodes every row to its max_tokens (benchmarks); ``preloaded`` is a
        ``(model, tokenizer)`` pair already in memory (benchmarks of random-weight models), in
        which case ``model`` is only the id. ``generation_engine``: ``hf`` (transformers ``generate``),
        ``fast`` (:mod:`fastgen`) or ``auto`` (the default: fast on a GPU, hf elsewhere); ``vllm`` is
        backend ``vllm``, an error here.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if generation_engine == "vllm":
            raise ValueError(
                "backend 'hf' decodes with transformers or fastgen (hf | fast | auto); vllm is backend 'vllm'"
            )
        self.model_id = model.rstrip("/") or model
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.seed = seed
        self.compile = compile
        self.ignore_eos = ignore_eos
        self.last_stats: GenerationStats | None = None
        self._lock = threading.Lock()
        self._tok_lock = threading.Lock()
        if preloaded is not None:
            self.model, self.tokenizer = preloaded
            self.device = self.model.device
            self.dtype = self.model.dtype
        else:
            self.model, self.tokenizer = self._load(model)
        self.model.eval()
        self.eos_ids = self._eos_ids()
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]
        # A clean generation config: sampling is ours, nothing from the hub config may leak in.
        self.model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
            bos_token_id=self.tokenizer.bos_token_id,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
        )
        self.has_chat_template = bool(getattr(self.tokenizer, "chat_template", None))
        from fastgen import resolve_engine

        self.generation_engine = resolve_engine(generation_engine, self.device)
        self._engine: Any = None

    def _load(self, model: str) -> tuple[Any, Any]:
        offline = hub_offline()
        try:
            tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=offline)
            load_kwargs: dict[str, Any] = {"dtype": self.dtype, "local_files_only": offline}
            if self.device.type != "cpu":
                load_kwargs["device_map"] = str(self.device)
            return AutoModelForCausalLM.from_pretrained(model, **load_kwargs), tokenizer
        except (OSError, ValueError) as exc:
            raise GenerationError(f"backend 'hf' could not load model {model!r}: {exc}") from exc

    # -- prompts -------------------------------------------------------------------------------

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        for value in (configured if isinstance(configured, list) else [configured]) + [self.tokenizer.eos_token_id]:
            if value is not None and value not in ids:
                ids.append(int(value))
        if not ids:
            raise GenerationError(
                f"backend 'hf': model {self.model_id!r} has no eos token (tokenizer or generation config)"
            )
        return ids

    def render(self, prompt: ArmPrompt) -> str:
        """The prompt text: the chat template (with its generation prompt) when the tokenizer has one, else
        plain text; then ``assistant_prefix``, the start of the assistant turn that the model continues."""
        return self._render_turns(prompt) + prompt.assistant_prefix

    def _render_turns(self, prompt: ArmPrompt) -> str:
        if not self.has_chat_template:
            return render_plain(prompt.messages)
        messages = prompt.message_dicts()
        try:
            return str(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        except Exception as exc:  # jinja raises TemplateError, e.g. "System role not supported"
            merged = _merge_system(messages)
            if merged == messages:
                raise GenerationError(
                    f"backend 'hf': chat template of {self.model_id!r} failed ({type(exc).__name__})", detail=str(exc)
                ) from exc
            return str(self.tokenizer.apply_chat_template(merged, add_generation_prompt=True, tokenize=False))

    def encode_prompts(self, prompts: Sequence[ArmPrompt]) -> list[list[int]]:
        """Token ids of each rendered prompt (the template carries its own special tokens)."""
        texts = [self.render(p) for p in prompts]
        with self._tok_lock:
            ids: list[list[int]] = self.tokenizer(texts, add_special_tokens=not self.has_chat_template)["input_ids"]
            return ids

    # -- generation ----------------------------------------------------------------------------

    def generate(self, prompts: Sequence[ArmPrompt]) -> list[str]:
        if self.model is None:
            raise GenerationError(f"backend 'hf' ({self.model_id}) is closed")
        if not prompts:
            return []
        started = time.monotonic()
        deadline = started + self.timeout_s
        encoded = self.encode_prompts(prompts)
        order = sorted(range(len(prompts)), key=lambda i: (prompts[i].max_tokens, len(encoded[i])), reverse=True)
        texts: list[str] = [""] * len(prompts)
        counts: list[int] = [0] * len(prompts)
        batches = 0
        with self._lock:
            if self.generation_engine == "fast":
                texts, counts = self._generate_fast(prompts, encoded, deadline)
                self.last_stats = GenerationStats(
                    len(prompts), 1, sum(counts), time.monotonic() - started, tuple(counts)
                )
                return texts
            for start in range(0, len(order), self.batch_size):
                if time.monotonic() > deadline:
                    raise self._timeout(len(prompts))
                chunk = order[start : start + self.batch_size]
                chunk_texts, chunk_counts = self._generate_chunk(
                    [prompts[i] for i in chunk], [encoded[i] for i in chunk], deadline, len(prompts)
                )
                for i, text, count in zip(chunk, chunk_texts, chunk_counts):
                    texts[i] = text
                    counts[i] = count
                batches += 1
        self.last_stats = GenerationStats(len(prompts), batches, sum(counts), time.monotonic() - started, tuple(counts))
        return texts

    def _timeout(self, n: int) -> GenerationTimeout:
        return GenerationTimeout(
            f"backend 'hf' ({self.model_id}): {n} prompts exceeded the {self.timeout_s:g} s deadline"
        )

    def _generate_chunk(
        self, prompts: list[ArmPrompt], encoded: list[list[int]], deadline: float, total: int
    ) -> tuple[list[str], list[int]]:
        device = self.device
        rows = len(prompts)
        prompt_len = max(len(ids) for ids in encoded)
        input_ids = torch.full((rows, prompt_len), self.pad_id, dtype=torch.long)
        attention = torch.zeros((rows, prompt_len), dtype=torch.long)
        for r, ids in enumerate(encoded):
            if ids:
                input_ids[r, prompt_len - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention[r, prompt_len - len(ids) :] = 1
        budgets = [p.max_tokens for p in prompts]
        sampler = RowSampler(
            [p.temperature for p in prompts],
            [p.top_p for p in prompts],
            [effective_seed(self.seed, p.seed) for p in prompts],
            banned=self.eos_ids if self.ignore_eos else (),
        )
        budget = _RowBudget(torch.tensor(budgets, dtype=torch.long, device=device), prompt_len, deadline)
        config = GenerationConfig(  # type: ignore[no-untyped-call]
            max_new_tokens=max(budgets),
            do_sample=False,
            bos_token_id=self.tokenizer.bos_token_id,
            eos_token_id=None if self.ignore_eos else self.eos_ids,
            pad_token_id=self.pad_id,
            cache_implementation="static" if self.compile else None,
        )
        try:
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    generation_config=config,
                    logits_processor=LogitsProcessorList([sampler]),
                    stopping_criteria=StoppingCriteriaList([budget]),
                )
        except _Deadline:
            raise self._timeout(total) from None
        except (RuntimeError, ValueError, IndexError) as exc:
            raise GenerationError(
                f"backend 'hf' ({self.model_id}) generation failed: {type(exc).__name__}", detail=str(exc)
            ) from exc
        new_tokens = out[:, prompt_len:].tolist()
        kept: list[list[int]] = []
        eos = set() if self.ignore_eos else set(self.eos_ids)
        for row, limit in zip(new_tokens, budgets):
            row = row[:limit]
            cut = next((k for k, t in enumerate(row) if t in eos), len(row))
            kept.append(row[:cut])
        with self._tok_lock:
            decoded = self.tokenizer.batch_decode(kept, skip_special_tokens=True)
        return decoded, [len(row) for row in kept]

    def _generate_fast(
        self, prompts: Sequence[ArmPrompt], encoded: list[list[int]], deadline: float
    ) -> tuple[list[str], list[int]]:
        from fastgen import EngineConfig, EngineTimeout, Request, build_engine

        if self._engine is None:
            self._engine = build_engine(
                self.model, EngineConfig(slots=self.batch_size, max_stop_ids=max(8, len(self.eos_ids)))
            )
        stops = [] if self.ignore_eos else self.eos_ids
        requests = [
            Request(
                ids or [self.pad_id],
                p.max_tokens,
                temperature=p.temperature,
                top_p=p.top_p,
                seed=effective_seed(self.seed, p.seed),
                stop_ids=stops,
            )
            for p, ids in zip(prompts, encoded, strict=True)
        ]
        try:
            completions = self._engine.generate(requests, deadline=deadline)
        except EngineTimeout:
            raise self._timeout(len(prompts)) from None
        except (RuntimeError, ValueError, IndexError) as exc:
            raise GenerationError(
                f"backend 'hf' ({self.model_id}) generation failed: {type(exc).__name__}", detail=str(exc)
            ) from exc
        kept = [c.token_ids[:-1] if c.finished else c.token_ids for c in completions]
        with self._tok_lock:
            decoded = self.tokenizer.batch_decode(kept, skip_special_tokens=True)
        return decoded, [len(row) for row in kept]

    def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        if not texts:
            return []
        with self._tok_lock:
            ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(x) for x in ids]

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.release()
            self._engine = None
            self.model = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


def _merge_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Fold system messages into the first user turn, for templates without a system role."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if not system or not rest:
        return messages
    rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    return rest
