"""The trainer's one error root.

``TrainerError`` is the base of every error the trainer raises on purpose: ``StageError`` (a stage
stopped early with a message for the user) and ``trainer.reward_client.RewardServiceError`` (the
reward service could not give scores). The CLI prints any ``TrainerError`` and exits with status 1.
"""

from __future__ import annotations

__all__ = ["TrainerError", "StageError"]


class TrainerError(RuntimeError):
    """Base of every error the trainer raises on purpose; the message says what failed and what to do."""


class StageError(TrainerError):
    """A stage stopped early; the message says why and what to do (artifacts already written stay valid)."""
