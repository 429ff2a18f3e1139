"""Regime W scorer (private): arm config, derived quantities and the s_end/s_path/s_cf/s_wm formulas (DESIGN §3)."""

from reward_service.regime_w.config import ArmSpec, ConfigError, RegimeWConfig, default_config, load_config
from reward_service.regime_w.scorer import (
    ArmText,
    GoldAnswerError,
    PreparedArms,
    TrajectoryScores,
    UnknownArmError,
    prepare_arms,
    score_trajectories,
    score_trajectory,
)

__all__ = [
    "ArmSpec",
    "ArmText",
    "ConfigError",
    "GoldAnswerError",
    "PreparedArms",
    "RegimeWConfig",
    "TrajectoryScores",
    "UnknownArmError",
    "default_config",
    "load_config",
    "prepare_arms",
    "score_trajectories",
    "score_trajectory",
]
