"""The light client (the published trainer wheel's core, ``pip install dist/regime_w_trainer-*.whl``:
httpx + pydantic; tests/test_publish.py installs the wheel itself) works without torch,
transformers or trl: a child Python in which importing them fails imports ``trainer.reward_client``
and the OpenRLHF / verl reward files, and scores through each against a live keyed ``regime-w-serve``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "trl", "datasets", "peft", "accelerate", "bitsandbytes", "vllm")

CHILD = """
import importlib.abc, json, sys

HEAVY = set(sys.argv[1].split(","))

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{name} is not installed (blocked by the test)")
        return None

sys.meta_path.insert(0, Refuse())

from trainer.reward_client import RewardClient
from trainer.integrations import openrlhf_reward, verl_reward

question = "Mia has 6 shells and finds 3 more. How many shells does she have?"
with RewardClient() as client:  # REGIME_W_URL / REGIME_W_API_KEY
    ready = client.ready()
out = openrlhf_reward.reward_func(
    [f"<|user|>{question}<|end|>\\n<|assistant|>6+3 = 9. #### 9"], [f"<|user|>{question}<|end|>\\n<|assistant|>"], ["9"]
)
verl = verl_reward.compute_score("openai/gsm8k", "6+3 = 9. #### 9", "9", {"question": question})
print(json.dumps({
    "ready": ready,
    "openrlhf_scores": out["scores"],
    "verl_correctness": verl["correctness"],
    "loaded": sorted(m for m in HEAVY if m in sys.modules),
}))
"""


def test_client_extra_is_httpx_only() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [d.split(">")[0].split("=")[0] for d in extras["client"]] == ["httpx"]
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert [d.split(">")[0] for d in core] == ["pydantic"]


def test_client_modules_run_without_torch_transformers_trl(live_service) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REGIME_W_URL": live_service.url,
        "REGIME_W_API_KEY": live_service.api_key,
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, ",".join(HEAVY)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"ready": True, "openrlhf_scores": [1.0], "verl_correctness": 1.0, "loaded": []}
