"""The ``[progress]`` scorer variant end to end: ``regime-w-serve`` on the shipped toy base with
``toy_variants/progress.toml`` continues trajectory prefixes live, prices them in its metrics and caches
them; a ``provided`` service with ``toy_variants/gold_path.toml`` (the same config without the table)
scores the same inputs as today's scorer does, so the difference of the two rewards is ``β_progress·s_prog``.

The trajectories are a toy problem's right solution, one wrong from its first step and one wrong only at
its last step; the arm texts come with the request, so ``v_0`` = 3/8 (three of the eight arms answer 64).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reward_service.regime_w.config import load_config
from reward_service.regime_w.scorer import ArmText, prepare_arms, score_trajectories
from tests.support.limits import HANG_GUARD_S
from tests.support.servers import ServerProcess, running_service

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ROOT / "reward_service" / "regime_w" / "toy_variants"
TOY_BASE = ROOT / "assets" / "toy_base"
KEY = "progress-test-key-0123456789"
HEADERS = {"Authorization": f"Bearer {KEY}"}

Q = "Ben saves $11 every week for 4 weeks. Then his aunt gives him $20. How much money does he have?"
L1 = "He saves 11*4 = 44 dollars.\n"
RIGHT = L1 + "Now he has 44+20 = 64 dollars.\n#### 64"
WRONG_FIRST = "He saves 11*4 = 48 dollars.\nNow he has 48+20 = 68 dollars.\n#### 68"
WRONG_LAST = L1 + "Now he has 44+20 = 62 dollars.\n#### 62"
TRAJECTORIES = [RIGHT, WRONG_FIRST, WRONG_LAST]
TOKENS = [20, 20, 20]
#: 3 arms answer 64 (v_0 = 3/8, and the consensus), 2 answer 68, 2 answer 62, 1 gives no answer
ARM_TEXTS = [RIGHT] * 3 + [WRONG_FIRST] * 2 + [WRONG_LAST] * 2 + ["I am not sure."]
V0 = 3 / 8
K = 4  # continuations of each prefix (progress.toml)
BETA_PROGRESS = 0.5
#: distinct prefixes: L1 (shared by RIGHT and WRONG_LAST), RIGHT's two lines, WRONG_FIRST's first line and
#: its two lines, WRONG_LAST's two lines = 5 prefixes, 4 continuations each
GENERATED = [2 * K, 2 * K, K]  # WRONG_LAST reuses L1's continuations, generated for RIGHT


def arm_outputs() -> list[dict[str, str]]:
    names = load_config(VARIANTS / "gold_path.toml").arm_names
    return [{"arm": a, "text": t} for a, t in zip(names, ARM_TEXTS)]


def body(gold: str | None = "64", details: bool = True) -> dict:
    item = {
        "id": "ben",
        "question": Q,
        "trajectories": TRAJECTORIES,
        "num_tokens": TOKENS,
        "arm_outputs": arm_outputs(),
    }
    if gold is not None:
        item["gold_answer"] = gold
    return {"items": [item], "return_details": details}


def score(server: ServerProcess, payload: dict) -> list[float]:
    r = httpx.post(server.url + "/v1/score", json=payload, headers=HEADERS, timeout=HANG_GUARD_S)
    assert r.status_code == 200, r.text
    return [s["reward"] for s in r.json()["results"][0]["scores"]]


def metric(server: ServerProcess, series: str) -> float:
    """The value of one exact series (``name{labels}``) of ``/metrics``; 0 before its first sample."""
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def costs(server: ServerProcess) -> tuple[float, float, float]:
    return (
        metric(server, 'regime_w_progress_continuations_total{cached="false"}'),
        metric(server, 'regime_w_progress_continuations_total{cached="true"}'),
        metric(server, "regime_w_progress_seconds_count"),
    )


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """(the toy base with progress.toml, a provided service with gold_path.toml)."""
    tmp = tmp_path_factory.mktemp("progress")
    common = {"REGIME_W_API_KEYS": KEY, "REGIME_W_CACHE_PATH": "none"}
    progress_env = {
        **common,
        "REGIME_W_BACKEND": "hf",
        "REGIME_W_MODEL": str(TOY_BASE),
        "REGIME_W_DEVICE": "cpu",
        "REGIME_W_CONFIG_PATH": str(VARIANTS / "progress.toml"),
    }
    plain_env = {**common, "REGIME_W_BACKEND": "provided", "REGIME_W_CONFIG_PATH": str(VARIANTS / "gold_path.toml")}
    with contextlib.ExitStack() as stack:
        progress = stack.enter_context(running_service(env=progress_env, cwd=tmp))
        plain = stack.enter_context(running_service(env=plain_env, cwd=tmp))
        yield progress, plain


def s_progs(with_progress: list[float], without: list[float]) -> list[float]:
    return [(a - b) / BETA_PROGRESS for a, b in zip(with_progress, without)]


def test_without_the_table_the_service_scores_as_today(services) -> None:
    _, plain = services
    config = load_config(VARIANTS / "gold_path.toml")
    arms = prepare_arms(Q, [ArmText(a["arm"], a["text"]) for a in arm_outputs()], config)
    for gold in ("64", None):
        today = [s.reward for s in score_trajectories(TRAJECTORIES, TOKENS, arms, config, gold)]
        assert score(plain, body(gold)) == today  # bit for bit


def test_continuations_are_priced_cached_and_add_beta_progress_times_s_prog(services) -> None:
    progress, plain = services
    before = costs(progress)
    first = score(progress, body())
    after = costs(progress)
    generated, reused, trajectories = (a - b for a, b in zip(after, before))
    assert generated == sum(GENERATED) == 20
    assert reused == 3 * 2 * K - 20 == 4  # L1's continuations, reused by WRONG_LAST
    assert trajectories == 3  # one seconds observation a scored trajectory
    assert metric(progress, "regime_w_progress_seconds_sum") > 0.0

    s = s_progs(first, score(plain, body()))
    for value in s:  # s_prog = (v_0 + v_1 + v_2) / 3 with each v_i a multiple of 1/K
        steps = (3 * value - V0) * K
        assert 0.0 <= value <= 1.0 and steps == pytest.approx(round(steps), abs=1e-6) and 0 <= round(steps) <= 2 * K
    right, wrong_first, wrong_last = s
    # the toy base finishes a right path (64) and never turns 48 into 64
    assert right > wrong_first and wrong_last >= wrong_first
    assert right > wrong_last  # they share the first step's value; the second step decides

    # the same trajectories again: every continuation from the cache, the same rewards
    assert score(progress, body()) == first
    generated, reused, trajectories = (a - b for a, b in zip(costs(progress), after))
    assert (generated, reused, trajectories) == (0, 3 * 2 * K, 3)

    # label-free: the target is the arms' consensus (64, as the gold): the same prefixes, all cached
    mark = costs(progress)
    label_free = s_progs(score(progress, body(gold=None)), score(plain, body(gold=None)))
    assert label_free == pytest.approx(s)
    assert costs(progress)[0] - mark[0] == 0

    # without details the reward holds the process term too
    assert score(progress, body(details=False)) == first


def test_a_question_without_a_target_generates_nothing(services) -> None:
    progress, plain = services
    payload = body(gold=None)
    for arm in payload["items"][0]["arm_outputs"]:
        arm["text"] = "I am not sure."  # no arm answers: no consensus, label-free has nothing to reach
    mark = costs(progress)
    assert score(progress, payload) == score(plain, payload)  # s_prog = 0
    generated, reused, trajectories = (a - b for a, b in zip(costs(progress), mark))
    assert (generated, reused, trajectories) == (0, 0, 3)
