"""The Regime W config: the packaged default, its fingerprint, and strict validation."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import pytest

from reward_service.regime_w.config import ArmSpec, ConfigError, RegimeWConfig, default_config, load_config
from tests.support.arms import DESIGN_ARMS  # DESIGN §3's table: arm -> (family, style, temperature)


def default_text() -> str:
    return resources.files("reward_service.regime_w").joinpath("default_config.toml").read_text("utf-8")


def write(tmp_path: Path, text: str, name: str = "cfg.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the default ---------------------------------------------------------------------------------


def test_default_has_the_eight_design_arms_four_per_family():
    cfg = default_config()
    assert cfg.arm_names == tuple(DESIGN_ARMS)
    assert cfg.families == ("compute", "reflective")
    for spec in cfg.arms:
        family, style, temperature = DESIGN_ARMS[spec.name]
        assert (spec.family, spec.style, spec.temperature) == (family, style, temperature)
        assert spec.weight > 0 and spec.n >= 1 and spec.max_tokens > 0 and 0 < spec.top_p <= 1
        assert "{question}" in spec.instruction and "####" in spec.instruction
    assert sum(a.family == "compute" for a in cfg.arms) == 4
    assert sum(a.family == "reflective" for a in cfg.arms) == 4


def test_default_constants_are_those_of_design():
    cfg = default_config()
    assert (cfg.name, cfg.version) == ("regime-w", "1.0.0")
    assert (cfg.lambda_end, cfg.lambda_path, cfg.lambda_cf) == (0.5, 0.25, 0.25)
    assert (cfg.alpha, cfg.beta, cfg.gamma) == (1.0, 0.5, 0.01)
    assert cfg.length_scale == 100.0
    assert cfg.equation_rel_tol == 1e-4
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", cfg.fingerprint)


def test_default_config_is_cached_and_equals_load_config_none():
    assert default_config() is default_config()
    assert load_config(None) == default_config()


def test_copy_of_default_has_the_same_fingerprint(tmp_path):
    assert load_config(write(tmp_path, default_text())).fingerprint == default_config().fingerprint


def test_arm_lookup_and_unknown_arm_message():
    cfg = default_config()
    assert cfg.arm("work_backwards").family == "reflective"
    with pytest.raises(KeyError, match="unknown arm 'nope'.*cot_greedy"):
        cfg.arm("nope")


def test_render_messages_with_and_without_system_prompt():
    q = "Tom has {3} apples. How many?"  # braces in the question must survive
    with_system = ArmSpec("a", "compute", "s", "SYS", "Solve: {question}\nEnd.", 0.0, 1.0, 10, 1.0)
    assert with_system.render_messages(q) == [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": f"Solve: {q}\nEnd."},
    ]
    no_system = ArmSpec("b", "compute", "s", None, "Q: {question}", 0.0, 1.0, 10, 1.0)
    assert no_system.render_messages("2+2?") == [{"role": "user", "content": "Q: 2+2?"}]
    for spec in default_config().arms:
        msgs = spec.render_messages("What is 6 times 7?")
        assert msgs[-1]["role"] == "user" and "What is 6 times 7?" in msgs[-1]["content"]
        assert (msgs[0]["role"] == "system") == (spec.system is not None)


# --- fingerprint ---------------------------------------------------------------------------------

CONSTANT_EDITS = [
    ("lambda_end = 0.5", "lambda_end = 0.6", "lambda_end", 0.6),
    ("lambda_path = 0.25", "lambda_path = 0.3", "lambda_path", 0.3),
    ("lambda_cf = 0.25", "lambda_cf = 0.2", "lambda_cf", 0.2),
    ("alpha = 1.0", "alpha = 2.0", "alpha", 2.0),
    ("beta = 0.5", "beta = 0.4", "beta", 0.4),
    ("gamma = 0.01", "gamma = 0.02", "gamma", 0.02),
    ("length_scale = 100.0", "length_scale = 200.0", "length_scale", 200.0),
    ("rel_tol = 1e-4", "rel_tol = 1e-3", "equation_rel_tol", 1e-3),
    ('version = "1.0.0"', 'version = "1.0.1"', "version", "1.0.1"),
]


@pytest.mark.parametrize(("old", "new", "field", "value"), CONSTANT_EDITS, ids=[e[2] for e in CONSTANT_EDITS])
def test_fingerprint_changes_with_every_constant(tmp_path, old, new, field, value):
    text = default_text()
    assert text.count(old) == 1
    cfg = load_config(write(tmp_path, text.replace(old, new)))
    assert getattr(cfg, field) == value
    assert cfg.fingerprint != default_config().fingerprint


@pytest.mark.parametrize("arm", list(DESIGN_ARMS))
def test_fingerprint_changes_with_every_prompt(tmp_path, arm):
    text = default_text()
    start = text.index(f'name = "{arm}"')
    at = text.index("instruction = ", start)
    edited = text[:at] + 'instruction = """Be brief. ' + text[at + len('instruction = """') :]
    cfg = load_config(write(tmp_path, edited))
    assert cfg.arm(arm).instruction.startswith("Be brief. ")
    assert cfg.fingerprint != default_config().fingerprint
    others = [a for a in cfg.arms if a.name != arm]
    assert others == [a for a in default_config().arms if a.name != arm]


def test_fingerprint_changes_with_arm_settings(tmp_path):
    text = default_text()
    edited = text.replace("temperature = 1.0", "temperature = 0.9")
    cfg = load_config(write(tmp_path, edited))
    assert cfg.arm("teach_and_check").temperature == 0.9
    assert cfg.fingerprint != default_config().fingerprint


# --- validation ----------------------------------------------------------------------------------


def _dump_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_dump_value(x) for x in v) + "]"
    raise TypeError(type(v))


def to_toml(data: dict) -> str:
    """A tiny TOML writer for the config layout: plain keys, [tables] and [[arrays of tables]]."""

    def is_tables(v: object) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)

    lines = [f"{k} = {_dump_value(v)}" for k, v in data.items() if not isinstance(v, dict) and not is_tables(v)]
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines.extend(f"{k} = {_dump_value(v)}" for k, v in value.items())
        elif is_tables(value):
            for item in value:
                lines.append(f"[[{key}]]")
                lines.extend(f"{k} = {_dump_value(v)}" for k, v in item.items())
    return "\n".join(lines) + "\n"


def base_data() -> dict:
    def arm(name: str, family: str) -> dict:
        return {
            "name": name, "family": family, "style": "step by step", "system": "You solve problems.",
            "instruction": "Solve: {question}\n#### <number>", "temperature": 0.5, "top_p": 0.9,
            "max_tokens": 64, "weight": 1.0, "n": 1,
        }  # fmt: skip

    return {
        "scorer": {"name": "regime-w", "version": "1.0.0", "families": ["compute", "reflective"]},
        "coherence": {"lambda_end": 0.5, "lambda_path": 0.25, "lambda_cf": 0.25},
        "reward": {"alpha": 1.0, "beta": 0.5, "gamma": 0.01, "length_scale": 100.0},
        "equations": {"rel_tol": 1e-4},
        "arm": [arm("a1", "compute"), arm("a2", "reflective")],
    }


def test_tiny_writer_round_trips_a_valid_config(tmp_path):
    cfg = load_config(write(tmp_path, to_toml(base_data())))
    assert isinstance(cfg, RegimeWConfig)
    assert cfg.arm_names == ("a1", "a2") and cfg.arm("a1").system == "You solve problems."


def _set(path: str, value):
    def edit(d: dict) -> None:
        *parents, last = path.split(".")
        node = d
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return edit


_DELETE = object()

INVALID = [
    ("unknown top-level key", _set("extra", {"x": 1}), r"unknown key\(s\) extra"),
    ("unknown scorer key", _set("scorer.colour", "red"), r"\[scorer\].*unknown key\(s\) colour"),
    ("unknown arm key", _set("arm.0.temprature", 0.3), r"arm\[0\].*unknown key\(s\) temprature"),
    ("missing arm key", _set("arm.1.weight", _DELETE), r"arm\[1\].*missing key\(s\) weight"),
    ("missing table", _set("reward", _DELETE), r"missing key\(s\) reward"),
    ("duplicate arm names", _set("arm.1.name", "a1"), r"duplicate arm name 'a1'"),
    ("unknown family", _set("arm.0.family", "creative"), r"arm\[0\].*family.*'creative' is not one of"),
    ("family without arm", _set("scorer.families", ["compute", "reflective", "oracle"]), r"\['oracle'\] have no arm"),
    ("duplicate families", _set("scorer.families", ["compute", "compute"]), r"duplicate family"),
    ("empty families", _set("scorer.families", []), r"families.*non-empty list"),
    ("zero weight", _set("arm.0.weight", 0.0), r"arm\[0\].*\.weight: must be > 0"),
    ("negative weight", _set("arm.1.weight", -1.0), r"\.weight: must be > 0"),
    ("negative temperature", _set("arm.0.temperature", -0.1), r"\.temperature: must be >= 0"),
    ("zero top_p", _set("arm.0.top_p", 0.0), r"\.top_p: must be > 0"),
    ("top_p above 1", _set("arm.0.top_p", 1.5), r"\.top_p: must be <= 1"),
    ("zero max_tokens", _set("arm.0.max_tokens", 0), r"\.max_tokens: must be >= 1"),
    ("float max_tokens", _set("arm.0.max_tokens", 12.5), r"\.max_tokens: must be an integer"),
    ("zero n", _set("arm.0.n", 0), r"\.n: must be >= 1"),
    ("no {question}", _set("arm.1.instruction", "Solve it."), r"arm\[1\].*instruction: must contain the placeholder \{question\}"),
    ("empty system", _set("arm.0.system", "  "), r"\.system: must be a non-empty string"),
    ("string weight", _set("arm.0.weight", "1"), r"\.weight: must be a number"),
    ("bool weight", _set("arm.0.weight", True), r"\.weight: must be a number"),
    ("all lambdas zero", lambda d: d["coherence"].update(lambda_end=0.0, lambda_path=0.0, lambda_cf=0.0), r"must be > 0"),
    ("negative lambda", _set("coherence.lambda_cf", -0.25), r"lambda_cf: must be >= 0"),
    ("zero length_scale", _set("reward.length_scale", 0.0), r"length_scale: must be > 0"),
    ("negative gamma", _set("reward.gamma", -0.01), r"gamma: must be >= 0"),
    ("infinite alpha", _set("reward.alpha", float("inf")), r"alpha: must be finite"),
    ("rel_tol too large", _set("equations.rel_tol", 0.9), r"rel_tol: must be <= 0.5"),
    ("no arms", _set("arm", []), r"missing key\(s\) arm|at least one \[\[arm\]\]"),
    ("empty name", _set("scorer.name", ""), r"\[scorer\]\.name: must be a non-empty string"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "edit", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_every_invalid_config_is_a_config_error_naming_the_problem(tmp_path, case, edit, message):
    data = base_data()
    edit(data)
    path = write(tmp_path, to_toml(data))
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)  # the message names the file


def test_invalid_toml_and_missing_file_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[scorer\nname = 1"))
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"name = '\xe9'")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)
