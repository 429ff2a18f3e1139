"""Regime W as a reward in the RL frameworks people already run (docs/integrations.md).

- ``trainer.integrations.openrlhf_reward`` — a reward-function file OpenRLHF loads by path
  (``--reward.remote_url /path/to/openrlhf_reward.py``): ``reward_func(queries, prompts, labels)``.
- ``trainer.integrations.verl_reward`` — verl's ``custom_reward_function``: ``compute_score`` and
  ``compute_score_async`` (verl 0.9.1's reward loop; its managers call the function per sample).
- TRL: ``trainer.rewards.RegimeWReward`` / ``AsyncRegimeWReward``.

``python -m trainer.integrations`` prints the file paths to give each framework. Every integration
takes the service URL and API key from ``REGIME_W_URL`` / ``REGIME_W_API_KEY`` and never imports
the reward service.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["integration_files"]


def integration_files() -> dict[str, str]:
    """The absolute path of each framework's file (what OpenRLHF / verl are pointed at)."""
    here = Path(__file__).resolve().parent
    return {"openrlhf": str(here / "openrlhf_reward.py"), "verl": str(here / "verl_reward.py")}
