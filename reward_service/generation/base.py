"""The generation protocol every arm backend implements (DESIGN §4).

A backend turns a batch of :class:`ArmPrompt` into one text per prompt, in the same order. The
service calls :meth:`GenerationBackend.generate` from a worker thread, so implementations must be
thread-safe. Failures surface as :class:`GenerationError` (or :class:`GenerationTimeout` when the
call's deadline passed) with a message that says what failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, get_args, runtime_checkable

#: ``GENERATION_ENGINE``: how the in-process backends decode, with the trainer's ``generation_engine``
#: meaning: ``hf`` transformers ``generate``, ``fast`` fastgen, ``vllm`` vLLM (the ``vllm`` backend),
#: ``auto`` the backend's own (``hf``: fast on CUDA, hf elsewhere; ``vllm``: vLLM)
GenerationEngine = Literal["auto", "hf", "fast", "vllm"]
GENERATION_ENGINES: tuple[str, ...] = get_args(GenerationEngine)
DEFAULT_GENERATION_ENGINE: GenerationEngine = "auto"
#: the hf backend's prompt rows decoded together (the service's GENERATION_BATCH_ROWS)
DEFAULT_BATCH_ROWS = 32

#: Seeds sent to engines are folded into [0, 2**31) so 32-bit engines (llama.cpp) accept them.
SEED_MODULUS = 2**31


@dataclass(frozen=True, slots=True)
class ArmPrompt:
    """One arm to generate for one question.

    ``messages`` is a tuple of ``(role, content)`` pairs so the prompt is hashable (the service
    de-duplicates and caches on it). ``temperature == 0`` means greedy decoding.
    ``assistant_prefix``: text the assistant turn starts with, which the model continues (the
    rendered prompt with its generation prompt, then this text); the returned text is what follows
    it. Empty for arms; the ``[progress]`` scorer continues trajectory prefixes with it, on a backend
    that supports it (``hf``; the others refuse a prompt that has one).
    """

    arm: str
    messages: tuple[tuple[str, str], ...]
    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    assistant_prefix: str = ""

    def __post_init__(self) -> None:
        if not self.messages:
            raise ValueError(f"arm {self.arm!r}: messages must not be empty")
        if self.temperature < 0:
            raise ValueError(f"arm {self.arm!r}: temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"arm {self.arm!r}: top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"arm {self.arm!r}: max_tokens must be >= 1, got {self.max_tokens}")

    @property
    def sampling_key(self) -> tuple[tuple[tuple[str, str], ...], str, float, float, int]:
        """Everything but the seed: prompts equal on this key differ only by their sample."""
        return (self.messages, self.assistant_prefix, self.temperature, self.top_p, self.max_tokens)

    def message_dicts(self) -> list[dict[str, str]]:
        """The messages in the OpenAI / chat-template shape ``[{"role", "content"}, ...]``."""
        return [{"role": role, "content": content} for role, content in self.messages]


@dataclass(frozen=True)
class BackendConfig:
    """Everything a backend is built from, as one object (the service maps its settings onto it).

    ``kind`` is ``hf | openai | vllm | provided``; ``timeout_s`` is the deadline of one ``generate``
    call; ``batch_size`` applies to ``hf``, ``max_concurrency`` and ``openai_*`` to ``openai``;
    ``concurrent_calls`` is how many ``generate`` calls the service makes at once (``openai`` gives
    each call its share of ``max_concurrency``, so a hung call cannot hold the others' connections).
    """

    kind: str
    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = DEFAULT_BATCH_ROWS
    generation_engine: str = DEFAULT_GENERATION_ENGINE  # GENERATION_ENGINES; hf backend: auto = fast on CUDA
    timeout_s: float = 120.0
    seed: int = 0
    openai_base_url: str | None = None
    openai_api_key: str | None = field(default=None, repr=False)
    max_concurrency: int = 64
    concurrent_calls: int = 1


class GenerationError(RuntimeError):
    """A backend failed to generate. The message says which backend and what failed and holds no
    foreign text; ``upstream_status`` is the HTTP status an upstream answered, ``detail`` what it
    (or a third-party library) said, which may echo the prompts: the service logs it at DEBUG
    only, redacted, and never returns it.

    ``transient`` marks an outage that a later try may not meet (the server unreachable, overloaded
    or restarting): the service answers 503 ``arm_model_unavailable`` with ``Retry-After`` instead of
    502 ``generation_failed``. A backend raising on a model load may set it too (the hook
    ``hf`` can use for, e.g., a device that is busy)."""

    transient_default = False

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        detail: str | None = None,
        transient: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status
        self.detail = detail
        self.transient = self.transient_default if transient is None else transient


class GenerationTimeout(GenerationError):
    """A generate call exceeded its deadline (transient: the server may be slow only for now)."""

    transient_default = True


def probe_backend(backend: object) -> None:
    """Run a backend's readiness probe, when it has one (``probe()``: raises ``GenerationError``
    while the model or its server is not usable). The service calls it once after building the
    backend, and retries the start while it fails; a backend without ``probe`` is ready when built."""
    probe = getattr(backend, "probe", None)
    if callable(probe):
        probe()


@runtime_checkable
class GenerationBackend(Protocol):
    """Batched text generation for arm prompts."""

    name: str
    model_id: str

    def generate(self, prompts: Sequence[ArmPrompt]) -> list[str]:
        """One text per prompt, in the same order."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        """Token counts of ``texts`` (no special tokens), or None when there is no tokenizer."""
        ...

    def close(self) -> None:
        """Release the model / connections; the backend is unusable afterwards."""
        ...


def effective_seed(base_seed: int, prompt_seed: int) -> int:
    """The seed actually used for a prompt: the backend's base seed plus the prompt's seed."""
    return (base_seed + prompt_seed) % SEED_MODULUS


def render_plain(messages: Sequence[tuple[str, str]]) -> str:
    """Prompt text for a tokenizer without a chat template: contents joined by blank lines."""
    return "".join(f"{content}\n\n" for _, content in messages)
