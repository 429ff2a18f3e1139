"""Resuming a training stage (sft, dpo, grpo) from its last checkpoint.

``regime-w-train STAGE --resume`` (or ``resume_from_checkpoint: last`` in the recipe, or a
checkpoint directory) continues a run that was stopped: the model/adapter weights, optimizer,
scheduler, RNG states and step counter of the newest ``checkpoint-N`` under ``output_dir`` are
restored by TRL/transformers (``Trainer.train(resume_from_checkpoint=...)``), and the data order
skips the batches already seen. The run must save full checkpoints for that: ``save_strategy``
other than ``"no"`` and ``save_only_model: false``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["RESUME_FLAG", "LAST", "last_checkpoint", "resume_path", "apply_resume", "training_config"]

RESUME_FLAG = "--resume"
#: The value of ``resume_from_checkpoint`` that means "the newest checkpoint under output_dir".
LAST = "last"
_LAST_WORDS = {LAST, "true", "yes", "1"}
_OFF_WORDS = {"", "false", "no", "0", "none"}


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete ``checkpoint-N`` directory under ``output_dir`` (None when there is none).

    transformers' ``get_last_checkpoint`` picks the highest N; a checkpoint without its
    ``trainer_state.json`` (the last file the Trainer writes, so the process died while saving) is
    skipped in favour of the one before it.
    """
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = []
    for child in root.iterdir():
        name = child.name
        step = name.removeprefix("checkpoint-")
        if name.startswith("checkpoint-") and step.isdigit() and (child / "trainer_state.json").is_file():
            found.append((int(step), child))
    return max(found)[1] if found else None


def training_config(parsed: tuple[Any, ...]) -> Any | None:
    """The ``transformers.TrainingArguments`` among a stage's parsed argument objects, if any."""
    from transformers import TrainingArguments

    return next((obj for obj in parsed if isinstance(obj, TrainingArguments)), None)


def resume_path(config: Any) -> str | None:
    """The checkpoint ``config.resume_from_checkpoint`` asks for, as a directory (None: a fresh run).

    ``last`` / ``true`` -> the newest checkpoint under ``config.output_dir``; a path -> that
    directory. A ``ValueError`` says what is missing (no checkpoint yet, a model-only checkpoint).
    """
    value = getattr(config, "resume_from_checkpoint", None)
    if value is None or value is False or str(value).strip().lower() in _OFF_WORDS:
        return None
    if getattr(config, "save_only_model", False):
        raise ValueError("resuming needs full checkpoints (optimizer, scheduler, RNG): set save_only_model: false")
    if value is True or str(value).strip().lower() in _LAST_WORDS:
        found = last_checkpoint(config.output_dir)
        if found is None:
            raise ValueError(
                f"--resume: no checkpoint-N with trainer_state.json under {config.output_dir!r} "
                "(the run stopped before its first save; start it again without --resume)"
            )
        return str(found)
    path = Path(str(value))
    if not (path / "trainer_state.json").is_file():
        raise ValueError(f"resume_from_checkpoint {str(value)!r} is not a checkpoint directory (no trainer_state.json)")
    return str(path)


def apply_resume(parsed: tuple[Any, ...], *, resume: bool) -> str | None:
    """For the CLI: with ``--resume``, ask the stage's training config for the last checkpoint;
    then resolve ``resume_from_checkpoint`` to a directory (stored back) and return it."""
    config = training_config(parsed)
    if config is None:
        if resume:
            raise ValueError(f"{RESUME_FLAG} applies to the stages that train (sft, dpo, grpo)")
        return None
    if resume:
        config.resume_from_checkpoint = LAST
    path = resume_path(config)
    config.resume_from_checkpoint = path
    return path
