"""The ``provided`` backend: no model at all; every request must carry its arm texts."""

from __future__ import annotations

from collections.abc import Sequence

from reward_service.generation.base import ArmPrompt, GenerationError


class ProvidedBackend:
    """A backend without a model, for deployments where clients always send ``arm_outputs``."""

    name = "provided"
    model_id = "provided"

    def generate(self, prompts: Sequence[ArmPrompt]) -> list[str]:
        if not prompts:
            return []
        arms = sorted({p.arm for p in prompts})
        raise GenerationError(
            "backend 'provided' has no model: every request must carry arm_outputs "
            f"(missing texts for arms {arms})"
        )

    def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        return None

    def close(self) -> None:
        return None
