"""A copy of the packaged Regime W config with every arm's max_tokens cut down, so tiny-model arms are quick."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path


def small_service_config(tmp_path: Path, max_tokens: int = 12) -> Path:
    text = files("reward_service.regime_w").joinpath("default_config.toml").read_text()
    text = re.sub(r"(?m)^(\s*max_tokens\s*=\s*)\d+", rf"\g<1>{max_tokens}", text)
    path = Path(tmp_path) / "small_config.toml"
    path.write_text(text)
    return path
