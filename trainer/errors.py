"""Errors a stage raises to stop with a message for the user (the CLI prints it, exit status 1)."""

from __future__ import annotations


class StageError(RuntimeError):
    """A stage stopped early; the message says why and what to do (artifacts already written stay valid)."""
