"""The ``[progress]`` scorer variant (issue 25, item 2): the pure parts, hand-worked, and its config checks.

Cutting a trajectory at its steps, spreading the cuts, a prefix's value, ``v_0`` from the arms,
``s_prog`` and the reward; the ``[progress]`` table's checker; the assistant prefix on the ``hf``
backend (and its refusal elsewhere); the continuation cache's bounds. The service end to end is
``tests/test_service_progress.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reward_service.generation import ArmPrompt, GenerationError
from reward_service.metrics import Metrics
from reward_service.progress import ContinuationCache, build_progress, continuation_seed
from reward_service.regime_w.config import ConfigError, load_config
from reward_service.regime_w.progress import (
    continuation_answer,
    prefix_cuts,
    prefix_value,
    progress_reward,
    progress_target,
    s_prog,
    spread_cuts,
    start_value,
    step_cuts,
)
from reward_service.regime_w.scorer import ArmText, prepare_arms, score_trajectories
from tests.support.limits import wait_for

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ROOT / "reward_service" / "regime_w" / "toy_variants"
PROGRESS = VARIANTS / "progress.toml"
GOLD_PATH = VARIANTS / "gold_path.toml"

L1 = "He saves 11*4 = 44 dollars.\n"
L2 = "Now he has 44+20 = 64 dollars.\n"
RIGHT = L1 + L2 + "#### 64"


# --- cutting -------------------------------------------------------------------------------------


def test_a_cut_follows_each_step_line_that_more_text_follows() -> None:
    assert step_cuts(RIGHT) == (len(L1), len(L1) + len(L2))
    assert [RIGHT[:c] for c in step_cuts(RIGHT)] == [L1, L1 + L2]


def test_lines_without_an_equation_are_no_steps_and_the_last_line_gives_no_cut() -> None:
    text = "Let me think.\n3*4 = 12\nSo the answer is 12."
    assert step_cuts(text) == (len("Let me think.\n3*4 = 12\n"),)
    assert step_cuts("3*4 = 12\n5+7 = 12") == (len("3*4 = 12\n"),)  # the second step is the text's end
    assert step_cuts("3*4 = 12\n  \n") == ()  # only white space follows
    assert step_cuts("#### 12") == () and step_cuts("") == ()


def test_a_calculator_result_or_a_wrong_equation_is_a_step_too() -> None:
    assert step_cuts("He saves <<11*4=44>>44.\n#### 44") == (len("He saves <<11*4=44>>44.\n"),)
    assert step_cuts("11*4 = 48\n#### 48") == (len("11*4 = 48\n"),)  # wrong, still a step


def test_cuts_are_spread_evenly_keeping_the_first_and_the_last() -> None:
    cuts = (10, 20, 30, 40, 50)
    assert spread_cuts(cuts, 4) == (10, 20, 40, 50)  # round(j*4/3): 0, 1.33->1, 2.67->3, 4
    assert spread_cuts(tuple(range(10)), 3) == (0, 5, 9)  # 4.5 rounds half up to 5
    assert spread_cuts(cuts, 1) == (50,)
    assert spread_cuts(cuts, 5) == cuts and spread_cuts(cuts, 9) == cuts
    with pytest.raises(ValueError):
        spread_cuts(cuts, 0)
    text = "".join(f"{i}+1 = {i + 1}\n" for i in range(6)) + "#### 6"
    assert len(prefix_cuts(text, 4)) == 4 and prefix_cuts(text, 4)[-1] == step_cuts(text)[-1]


# --- values, s_prog, reward ----------------------------------------------------------------------


def arms(right: int, wrong: int = 0, none: int = 0, config_path: Path = GOLD_PATH):
    """Prepared arms of the toy config: ``right`` arms answer 64, ``wrong`` 62, ``none`` no answer."""
    cfg = load_config(config_path)
    texts = ["#### 64"] * right + ["#### 62"] * wrong + ["I do not know"] * none
    return cfg, prepare_arms("Q", [ArmText(a.name, t) for a, t in zip(cfg.arms, texts)], cfg)


def test_a_prefix_value_is_the_share_of_continuations_that_reach_the_target() -> None:
    assert prefix_value(("64", "64.0", None, "65"), "64") == 0.5
    assert prefix_value(("64",), "64") == 1.0 and prefix_value((None, None), "64") == 0.0
    with pytest.raises(ValueError):
        prefix_value((), "64")
    assert continuation_answer(L1, "Now he has 44+20 = 64 dollars.\n#### 64") == "64"
    assert continuation_answer(L1 + "\\boxed{44}\n", "and more words") == "44"  # the prefix's answer stands


def test_v0_is_the_arms_share_and_the_target_is_the_gold_else_the_consensus() -> None:
    _, prepared = arms(right=3, wrong=4, none=1)
    assert start_value("64", prepared) == 3 / 8
    assert start_value("62", prepared) == 4 / 8
    assert progress_target("64", prepared) == "64"
    assert progress_target(None, prepared) == "62"  # label-free: the consensus answer
    _, silent = arms(right=0, none=8)
    assert progress_target(None, silent) is None


def test_s_prog_hand_worked() -> None:
    # v_0 = 0.5, three steps: right throughout, wrong only at the last step, wrong from step 1
    assert s_prog(0.5, [0.75, 1.0, 1.0]) == 0.8125
    assert s_prog(0.5, [0.75, 1.0, 0.0]) == 0.5625
    assert s_prog(0.5, [0.0, 0.0, 0.0]) == 0.125
    assert s_prog(0.25, []) == 0.25  # no step: the question's value
    # the same number as v_0 + position-weighted progress: sum_j (m-j+1)/(m+1) * (v_j - v_{j-1})
    v = [0.5, 0.75, 1.0, 0.0]
    weighted = v[0] + sum((3 - j + 1) / 4 * (v[j] - v[j - 1]) for j in range(1, 4))
    assert weighted == pytest.approx(s_prog(v[0], v[1:]))


def test_the_reward_adds_beta_progress_times_s_prog() -> None:
    assert progress_reward(1.2, 0.5, 0.5) == 1.45
    assert progress_reward(-0.01, 0.0, 0.5) == -0.01


def test_without_the_table_the_rewards_are_todays_bit_for_bit(tmp_path: Path) -> None:
    """progress.toml with its [progress] table removed scores exactly as gold_path.toml (same arms, same constants)."""
    text = PROGRESS.read_text(encoding="utf-8")
    stripped = re.sub(r"(?ms)^\[progress\]\n.*?(?=^# -{20,})", "", text)
    assert "\n[progress]\n" not in stripped and "\nbeta_progress" not in stripped and "[[arm]]" in stripped
    copy = tmp_path / "no_progress.toml"
    copy.write_text(stripped.replace("+progress", ""), encoding="utf-8")
    plain = load_config(copy)
    gold_path = load_config(GOLD_PATH)
    assert plain.progress is None and load_config(PROGRESS).progress is not None
    texts = [RIGHT, L1 + "Now he has 44+20 = 62 dollars.\n#### 62", "11*4 = 48\n48+20 = 68\n#### 68"]
    arm_texts = [ArmText(a.name, t) for a, t in zip(gold_path.arms, [RIGHT, "#### 62", "#### 64", "x"] * 2)]
    for gold in ("64", None):
        a = score_trajectories(texts, [20, 21, 9], prepare_arms("Q", arm_texts, plain), plain, gold)
        b = score_trajectories(texts, [20, 21, 9], prepare_arms("Q", arm_texts, gold_path), gold_path, gold)
        assert [s.reward for s in a] == [s.reward for s in b]


# --- the config checker --------------------------------------------------------------------------


def test_the_toy_variant_loads_with_its_documented_settings() -> None:
    cfg = load_config(PROGRESS)
    p = cfg.progress
    assert p is not None
    assert (p.continuations, p.max_prefixes, p.temperature, p.max_tokens, p.beta_progress) == (4, 4, 0.7, 120, 0.5)
    assert "progress" in cfg.version and cfg.fingerprint != load_config(GOLD_PATH).fingerprint
    assert p.render_messages("Q?") == [{"role": "user", "content": cfg.arms[0].instruction.replace("{question}", "Q?")}]


def variant(tmp_path: Path, table: str, version: str = "1.0.0+progress") -> Path:
    text = GOLD_PATH.read_text(encoding="utf-8").replace('version = "1.0.0+gold_path"', f'version = "{version}"')
    path = tmp_path / "variant.toml"
    path.write_text(text + "\n[progress]\n" + table, encoding="utf-8")
    return path


GOOD = (
    "continuations = 4\nmax_prefixes = 4\ntemperature = 0.7\ntop_p = 0.95\nmax_tokens = 120\n"
    "beta_progress = 0.5\ninstruction = '''{question}\nPlease.'''\n"
)


def test_the_checker_accepts_a_good_table_and_an_optional_system(tmp_path: Path) -> None:
    p = load_config(variant(tmp_path, GOOD)).progress
    assert p is not None and p.system is None
    p = load_config(variant(tmp_path, GOOD + "system = 'Be brief.'\n")).progress
    assert p is not None and p.render_messages("Q")[0] == {"role": "system", "content": "Be brief."}
    greedy = GOOD.replace("continuations = 4", "continuations = 1").replace("temperature = 0.7", "temperature = 0.0")
    assert load_config(variant(tmp_path, greedy)).progress is not None


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("continuations = 4", "continuations = 4\nk = 4", r"unknown key\(s\) k"),
        ("max_tokens = 120\n", "", r"missing key\(s\) max_tokens"),
        ("continuations = 4", "continuations = 0", "continuations: must be >= 1"),
        ("continuations = 4", "continuations = 65", "continuations: must be <= 64"),
        ("continuations = 4", "continuations = 2.5", "continuations: must be an integer"),
        ("max_prefixes = 4", "max_prefixes = 0", "max_prefixes: must be >= 1"),
        ("max_prefixes = 4", "max_prefixes = 33", "max_prefixes: must be <= 32"),
        ("temperature = 0.7", "temperature = -0.1", "temperature: must be >= 0"),
        ("temperature = 0.7", "temperature = 0.0", "identical continuations"),
        ("top_p = 0.95", "top_p = 0", "top_p: must be > 0"),
        ("top_p = 0.95", "top_p = 1.5", "top_p: must be <= 1"),
        ("max_tokens = 120", "max_tokens = 0", "max_tokens: must be >= 1"),
        ("beta_progress = 0.5", "beta_progress = -1", "beta_progress: must be >= 0"),
        ("beta_progress = 0.5", "beta_progress = 'high'", "beta_progress: must be a number"),
        ("{question}\nPlease.", "Please.", "must contain the placeholder"),
    ],
)
def test_the_checker_names_the_bad_key(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError, match=message):
        load_config(variant(tmp_path, GOOD.replace(old, new)))


def test_a_progress_config_must_say_so_in_its_version(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[scorer\]\.version: a config with \[progress\] must name it"):
        load_config(variant(tmp_path, GOOD, version="1.0.0+gold_path"))
    path = tmp_path / "not_a_table.toml"
    path.write_text("progress = 1\n" + GOLD_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[progress\] must be a table"):
        load_config(path)


# --- the backend and the service side ------------------------------------------------------------


def prompt(prefix: str = "") -> ArmPrompt:
    return ArmPrompt("progress", (("user", "Q?\nPlease."),), 0.7, 0.95, 8, 1, assistant_prefix=prefix)


def test_the_hf_backend_continues_the_assistant_prefix(tiny_model_dir: Path) -> None:
    from reward_service.generation.hf import HFBackend

    backend = HFBackend(str(tiny_model_dir), device="cpu", dtype="float32")
    try:
        plain = backend.render(prompt())
        assert plain.endswith("<|assistant|>")  # the generation prompt, then the prefix
        assert backend.render(prompt("3*4 = 12\n")) == plain + "3*4 = 12\n"
        texts = backend.generate([prompt("3*4 = 12\n"), prompt("3*4 = 12\n"), prompt()])
        assert len(texts) == 3 and texts[0] == texts[1]  # same prompt and seed: same text
    finally:
        backend.close()
    assert prompt("a").sampling_key != prompt("b").sampling_key  # the openai backend groups by it


def test_other_backends_refuse_a_prefix_and_the_service_refuses_them_at_start() -> None:
    from reward_service.generation.openai import OpenAIBackend

    backend = OpenAIBackend("http://127.0.0.1:9/v1", model="m", timeout_s=1.0)
    try:
        with pytest.raises(GenerationError, match="cannot continue an assistant prefix"):
            backend.generate([prompt("3*4 = 12\n")])
        config = load_config(PROGRESS)
        with pytest.raises(ValueError, match="backend 'openai' does not"):
            build_progress(config, backend, Metrics(), model_id="m")
        with pytest.raises(ValueError, match="backend 'provided' does not"):
            build_progress(config, None, Metrics(), model_id="provided")
        assert build_progress(load_config(GOLD_PATH), None, Metrics(), model_id="provided") is None
    finally:
        backend.close()


def test_continuation_seeds_and_cache_keys_depend_on_every_part() -> None:
    seeds = {continuation_seed(0, "Q", p, k) for p in ("a\n", "b\n") for k in range(4)}
    assert len(seeds) == 8 and continuation_seed(0, "Q", "a\n", 0) == continuation_seed(0, "Q", "a\n", 0)
    assert continuation_seed(1, "Q", "a\n", 0) != continuation_seed(0, "Q", "a\n", 0)
    keys = {ContinuationCache.key(m, f, q, p) for m in "mn" for f in "fg" for q in "qr" for p in "pz"}
    assert len(keys) == 16


def test_the_continuation_cache_is_bounded_and_least_recently_used_goes_first() -> None:
    cache = ContinuationCache(max_entries=2, max_bytes=1 << 20)
    a, b, c = (ContinuationCache.key("m", "f", "q", p) for p in ("a", "b", "c"))
    assert cache.get(a) is None
    cache.put(a, ("1", None))
    cache.put(b, ("2", "2"))
    assert cache.get(a) == ("1", None)  # a is now the most recently used
    cache.put(c, ("3",))
    assert cache.get(b) is None and cache.get(a) == ("1", None) and cache.get(c) == ("3",)
    assert len(cache) == 2
    tiny = ContinuationCache(max_entries=100, max_bytes=1000)  # an entry over max_bytes // 8 is not kept
    tiny.put(a, tuple("9" * 50 for _ in range(8)))
    assert tiny.get(a) is None and len(tiny) == 0


def test_past_its_deadline_a_request_gets_504_and_the_generation_still_fills_the_cache(tiny_model_dir: Path) -> None:
    import asyncio

    from reward_service.errors import GenerationDeadline
    from reward_service.generation.hf import HFBackend
    from reward_service.progress import ProgressItem, ProgressScorer

    config = load_config(PROGRESS)
    assert config.progress is not None
    _, prepared = arms(right=3, wrong=5, config_path=PROGRESS)
    items = [ProgressItem("Q", [RIGHT, L1 + "Now he has 44+20 = 62 dollars.\n#### 62"], "#### 64", prepared)]
    backend = HFBackend(str(tiny_model_dir), device="cpu", dtype="float32")
    try:
        hurried = ProgressScorer(
            config.progress, backend, Metrics(), model_id="tiny", fingerprint="f", rel_tol=1e-4, timeout_s=1e-4
        )

        async def run() -> None:
            with pytest.raises(GenerationDeadline, match="continues in the background"):
                await hurried.value(items)
            # the generation goes on in its thread and fills the cache (3 distinct prefixes)
            await asyncio.to_thread(wait_for, lambda: len(hurried.cache) == 3, "the cache filled after the deadline")
            hurried.timeout_s = 60.0
            [[right, wrong_last]] = await hurried.value(items)
            assert (right.generated, right.reused, wrong_last.generated, wrong_last.reused) == (0, 8, 0, 8)
            assert right.prefixes == wrong_last.prefixes == 2 and right.seconds == 0.0
            assert hurried.totals.trajectories == 2 and hurried.totals.generated == 0

        asyncio.run(run())
    finally:
        backend.close()
