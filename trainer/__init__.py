"""Regime W trainer: the open training client (QLoRA SFT, rollouts, preference pairs, DPO, GRPO,
evaluation, export). It reaches the Regime W reward service only over HTTP and never imports
``reward_service``. Entry point: ``regime-w-train <stage> --config RECIPE.yaml``.
"""

__version__ = "1.0.0"
