"""The trainer's stages, imported lazily by name so one missing or broken stage never breaks
``regime-w-train --help`` or the others.

Each stage module defines ``ARG_CLASSES`` (dataclasses parsed from the recipe YAML + CLI flags),
``plan(*args) -> dict`` (``--dry-run``: the resolved plan, no weights or data loaded) and
``run(*args) -> dict`` (does the work, returns a JSON-able summary).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["STAGES", "STAGE_HELP", "load_stage"]

STAGES: dict[str, str] = {
    "sft": "trainer.stages.sft",
    "rollouts": "trainer.stages.rollouts",
    "prefs": "trainer.stages.prefs",
    "dpo": "trainer.stages.dpo",
    "grpo": "trainer.stages.grpo",
    "eval": "trainer.stages.eval",
    "export": "trainer.stages.export",
    "toy-base": "trainer.stages.toy_base",
}

STAGE_HELP: dict[str, str] = {
    "sft": "QLoRA SFT on the GSM8K train split -> checkpoints/lora_sft/",
    "rollouts": "sample trajectories with the SFT policy, score them over HTTP -> data/rl_rollouts.jsonl",
    "prefs": "best/worst trajectory pairs per question -> data/preferences.jsonl",
    "dpo": "DPO of the SFT adapter against its frozen copy -> checkpoints/lora_rl/",
    "grpo": "online GRPO with the Regime W reward over HTTP -> checkpoints/lora_grpo/",
    "eval": "base / SFT / RL on GSM8K dev + GSM8K-Platinum -> results JSON, table, chart",
    "export": "merge an adapter into the base (optionally quantize) -> checkpoints/merged/",
    "toy-base": "offline toy world: toy problems + a tiny base model -> data/toy/, checkpoints/toy_base/",
}

_REQUIRED = ("ARG_CLASSES", "plan", "run")


def load_stage(name: str) -> ModuleType:
    """Import the module of stage ``name`` and check it follows the stage contract."""
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    module = importlib.import_module(STAGES[name])
    missing = [attr for attr in _REQUIRED if not hasattr(module, attr)]
    if missing:
        raise AttributeError(f"stage module {STAGES[name]} lacks {', '.join(missing)}")
    return module
