"""The private Regime W configuration: the prompt arms and every constant of DESIGN §3.

One TOML file holds it all; the package ships ``default_config.toml``. Its sha256 is the
``config_fingerprint`` that every score response carries, so any change to a prompt or a constant
changes the fingerprint (and invalidates the arm cache, which keys on it).

Layout of the file::

    [scorer]      name, version, families
    [coherence]   lambda_end, lambda_path, lambda_cf        (s_wm weights), gold_only_support? (scorer 2.0)
    [reward]      alpha, beta, gamma, length_scale          (reward and length_penalty)
    [equations]   rel_tol                                   (v(t) tolerance)
    [path]        reference, question_numbers               (s_path; optional: absent = scorer 1.0)
    [progress]    continuations, max_prefixes, temperature, top_p, max_tokens, beta_progress, system?,
                  instruction                               (the process term s_prog; optional: absent = no
                                                             continuations, rewards as without it)
    [[arm]]       name, family, style, system?, instruction, temperature, top_p, max_tokens, weight, n?

Validation is strict: unknown or missing keys, wrong types and out-of-range values raise
``ConfigError`` with the file, the key and what was expected.
"""

from __future__ import annotations

import hashlib
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "ConfigError",
    "ArmSpec",
    "RegimeWConfig",
    "load_config",
    "default_config",
    "QUESTION_FIELD",
    "PATH_REFERENCES",
    "PROGRESS_VERSION_TAG",
    "ProgressSpec",
]

QUESTION_FIELD = "{question}"
_DEFAULT_RESOURCE = "default_config.toml"
#: Which arms ``s_path`` compares a trajectory with (DESIGN §3): every arm (scorer 1.0); the arms whose
#: answer is the gold ("gold"; every arm when scored label-free); or the arms whose answer is the gold when
#: given, else the consensus answer ("supporting").
PATH_REFERENCES = ("all", "gold", "supporting")
#: A config with a ``[progress]`` table names it in ``[scorer].version`` (e.g. ``"1.0.0+progress"``): the
#: version every response carries then tells a client that its rewards hold the process term.
PROGRESS_VERSION_TAG = "progress"
#: Bounds of the ``[progress]`` table: continuations per prefix and prefixes per trajectory.
MAX_CONTINUATIONS = 64
MAX_PREFIXES = 32


class ConfigError(ValueError):
    """The Regime W config file is unreadable or invalid; the message names the file and key."""


@dataclass(frozen=True, slots=True)
class ArmSpec:
    """One prompt arm: how the arm model is asked the question, and how much its answer counts."""

    name: str
    family: str  # "compute" | "reflective"
    style: str
    system: str | None  # system prompt, or None (then the instruction is in the user turn)
    instruction: str  # user-turn template that contains "{question}"
    temperature: float
    top_p: float
    max_tokens: int
    weight: float
    n: int = 1  # samples per arm; each sample counts weight / n

    def render_messages(self, question: str) -> list[dict[str, str]]:
        """Chat messages for ``question``: an optional system turn, then the user turn."""
        user = self.instruction.replace(QUESTION_FIELD, question)
        messages: list[dict[str, str]] = []
        if self.system is not None:
            messages.append({"role": "system", "content": self.system})
        messages.append({"role": "user", "content": user})
        return messages


@dataclass(frozen=True, slots=True)
class ProgressSpec:
    """The ``[progress]`` table: how a trajectory's prefixes are continued by the arm model
    (``reward_service.regime_w.progress`` has the formulas).

    The continuation prompt is ``system`` (optional) + ``instruction`` (the user turn, with ``{question}``),
    then the trajectory's prefix as the start of the assistant turn.
    """

    continuations: int  # K: continuations of each prefix
    max_prefixes: int  # at most this many prefixes of a trajectory are valued (spread over its steps)
    temperature: float
    top_p: float
    max_tokens: int
    beta_progress: float  # weight of s_prog in the reward
    instruction: str
    system: str | None = None

    def render_messages(self, question: str) -> list[dict[str, str]]:
        """Chat messages for ``question``: an optional system turn, then the user turn."""
        messages: list[dict[str, str]] = []
        if self.system is not None:
            messages.append({"role": "system", "content": self.system})
        messages.append({"role": "user", "content": self.instruction.replace(QUESTION_FIELD, question)})
        return messages


@dataclass(frozen=True)
class RegimeWConfig:
    """Every constant of DESIGN §3 and the arms, as loaded from one config file."""

    name: str
    version: str
    arms: tuple[ArmSpec, ...]
    lambda_end: float
    lambda_path: float
    lambda_cf: float
    alpha: float
    beta: float
    gamma: float
    length_scale: float
    equation_rel_tol: float
    fingerprint: str
    families: tuple[str, ...]
    path_reference: str = "all"  # one of PATH_REFERENCES
    path_question_numbers: float = 0.0  # μ: share of s_path given to question-number coverage
    gold_only_support: bool = False  # with gold: s_end / s_cf count arm support for the gold answer only
    progress: ProgressSpec | None = None  # the [progress] table: None = no process term (no continuations)

    @property
    def arm_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.arms)

    def arm(self, name: str) -> ArmSpec:
        for spec in self.arms:
            if spec.name == name:
                return spec
        raise KeyError(f"unknown arm {name!r}; known arms: {', '.join(self.arm_names)}")


# ---------------------------------------------------------------------------------------------
# Validation helpers: each names the file and the dotted key it complains about.


class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {where}: {problem}")

    def table(self, parent: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
        if key not in parent:
            raise self.fail(where, f"missing table [{key}]")
        value = parent[key]
        if not isinstance(value, Mapping):
            raise self.fail(where, f"[{key}] must be a table, got {type(value).__name__}")
        return value

    def keys(self, table: Mapping[str, Any], where: str, required: set[str], optional: set[str]) -> None:
        unknown = sorted(set(table) - required - optional)
        if unknown:
            allowed = ", ".join(sorted(required | optional))
            raise self.fail(where, f"unknown key(s) {', '.join(unknown)} (allowed: {allowed})")
        missing = sorted(required - set(table))
        if missing:
            raise self.fail(where, f"missing key(s) {', '.join(missing)}")

    def string(self, table: Mapping[str, Any], key: str, where: str) -> str:
        value = table[key]
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{where}.{key}", f"must be a non-empty string, got {value!r}")
        return value

    def number(
        self,
        table: Mapping[str, Any],
        key: str,
        where: str,
        *,
        low: float | None = None,
        low_open: bool = False,
        high: float | None = None,
    ) -> float:
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"{where}.{key}", f"must be a number, got {value!r}")
        x = float(value)
        if not math.isfinite(x):
            raise self.fail(f"{where}.{key}", f"must be finite, got {value!r}")
        if low is not None and (x <= low if low_open else x < low):
            op = ">" if low_open else ">="
            raise self.fail(f"{where}.{key}", f"must be {op} {low:g}, got {value!r}")
        if high is not None and x > high:
            raise self.fail(f"{where}.{key}", f"must be <= {high:g}, got {value!r}")
        return x

    def integer(self, table: Mapping[str, Any], key: str, where: str, *, low: int) -> int:
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{where}.{key}", f"must be an integer, got {value!r}")
        if value < low:
            raise self.fail(f"{where}.{key}", f"must be >= {low}, got {value!r}")
        return value


_PROGRESS_REQUIRED = {
    "continuations",
    "max_prefixes",
    "temperature",
    "top_p",
    "max_tokens",
    "beta_progress",
    "instruction",
}
_PROGRESS_OPTIONAL = {"system"}


def _parse_progress(check: _Checker, data: Mapping[str, Any], version: str) -> ProgressSpec:
    where = "[progress]"
    table = check.table(data, "progress", "top level")
    check.keys(table, where, _PROGRESS_REQUIRED, _PROGRESS_OPTIONAL)
    if PROGRESS_VERSION_TAG not in version:
        raise check.fail(
            "[scorer].version",
            f"a config with [progress] must name it in its version (e.g. '1.0.0+{PROGRESS_VERSION_TAG}'), "
            f"got {version!r}",
        )
    continuations = check.integer(table, "continuations", where, low=1)
    if continuations > MAX_CONTINUATIONS:
        raise check.fail(f"{where}.continuations", f"must be <= {MAX_CONTINUATIONS}, got {continuations!r}")
    max_prefixes = check.integer(table, "max_prefixes", where, low=1)
    if max_prefixes > MAX_PREFIXES:
        raise check.fail(f"{where}.max_prefixes", f"must be <= {MAX_PREFIXES}, got {max_prefixes!r}")
    temperature = check.number(table, "temperature", where, low=0.0)
    if temperature == 0.0 and continuations > 1:
        raise check.fail(
            f"{where}.temperature",
            f"0 (greedy) gives {continuations} identical continuations: set continuations = 1 or a temperature > 0",
        )
    system, instruction = _prompt(check, table, where)
    return ProgressSpec(
        continuations=continuations,
        max_prefixes=max_prefixes,
        temperature=temperature,
        top_p=check.number(table, "top_p", where, low=0.0, low_open=True, high=1.0),
        max_tokens=check.integer(table, "max_tokens", where, low=1),
        beta_progress=check.number(table, "beta_progress", where, low=0.0),
        instruction=instruction,
        system=system,
    )


def _prompt(check: _Checker, table: Mapping[str, Any], where: str) -> tuple[str | None, str]:
    """The optional ``system`` text and the ``instruction`` (which must hold the question placeholder)."""
    system = check.string(table, "system", where) if "system" in table else None
    instruction = check.string(table, "instruction", where)
    if QUESTION_FIELD not in instruction:
        raise check.fail(f"{where}.instruction", f"must contain the placeholder {QUESTION_FIELD}")
    return system, instruction


_ARM_REQUIRED = {"name", "family", "style", "instruction", "temperature", "top_p", "max_tokens", "weight"}
_ARM_OPTIONAL = {"system", "n"}


def _parse_arm(check: _Checker, raw: Any, index: int, families: tuple[str, ...]) -> ArmSpec:
    where = f"arm[{index}]"
    if not isinstance(raw, Mapping):
        raise check.fail(where, f"must be a table, got {type(raw).__name__}")
    if isinstance(raw.get("name"), str):
        where = f"arm[{index}] ({raw['name']!r})"
    check.keys(raw, where, _ARM_REQUIRED, _ARM_OPTIONAL)
    name = check.string(raw, "name", where)
    family = check.string(raw, "family", where)
    if family not in families:
        raise check.fail(f"{where}.family", f"{family!r} is not one of the families {list(families)}")
    system, instruction = _prompt(check, raw, where)
    return ArmSpec(
        name=name,
        family=family,
        style=check.string(raw, "style", where),
        system=system,
        instruction=instruction,
        temperature=check.number(raw, "temperature", where, low=0.0),
        top_p=check.number(raw, "top_p", where, low=0.0, low_open=True, high=1.0),
        max_tokens=check.integer(raw, "max_tokens", where, low=1),
        weight=check.number(raw, "weight", where, low=0.0, low_open=True),
        n=check.integer(raw, "n", where, low=1) if "n" in raw else 1,
    )


def _parse(data: Mapping[str, Any], fingerprint: str, source: str) -> RegimeWConfig:
    check = _Checker(source)
    check.keys(data, "top level", {"scorer", "coherence", "reward", "equations", "arm"}, {"path", "progress"})

    scorer = check.table(data, "scorer", "top level")
    check.keys(scorer, "[scorer]", {"name", "version", "families"}, set())
    raw_families = scorer["families"]
    if (
        not isinstance(raw_families, list)
        or not raw_families
        or not all(isinstance(f, str) and f.strip() for f in raw_families)
    ):
        raise check.fail("[scorer].families", f"must be a non-empty list of names, got {raw_families!r}")
    if len(set(raw_families)) != len(raw_families):
        raise check.fail("[scorer].families", f"duplicate family names in {raw_families!r}")
    families = tuple(raw_families)

    coherence = check.table(data, "coherence", "top level")
    check.keys(coherence, "[coherence]", {"lambda_end", "lambda_path", "lambda_cf"}, {"gold_only_support"})
    gold_only_support = coherence.get("gold_only_support", False)
    if not isinstance(gold_only_support, bool):
        raise check.fail("[coherence].gold_only_support", f"must be true or false, got {gold_only_support!r}")
    lambdas = {
        k: check.number(coherence, k, "[coherence]", low=0.0) for k in ("lambda_end", "lambda_path", "lambda_cf")
    }
    if sum(lambdas.values()) <= 0.0:
        raise check.fail("[coherence]", "lambda_end + lambda_path + lambda_cf must be > 0")

    reward = check.table(data, "reward", "top level")
    check.keys(reward, "[reward]", {"alpha", "beta", "gamma", "length_scale"}, set())
    equations = check.table(data, "equations", "top level")
    check.keys(equations, "[equations]", {"rel_tol"}, set())
    path_reference, path_question_numbers = "all", 0.0
    if "path" in data:
        path = check.table(data, "path", "top level")
        check.keys(path, "[path]", set(), {"reference", "question_numbers"})
        if "reference" in path:
            path_reference = check.string(path, "reference", "[path]")
            if path_reference not in PATH_REFERENCES:
                raise check.fail("[path].reference", f"must be one of {list(PATH_REFERENCES)}, got {path_reference!r}")
        if "question_numbers" in path:
            path_question_numbers = check.number(path, "question_numbers", "[path]", low=0.0, high=1.0)

    raw_arms = data["arm"]
    if not isinstance(raw_arms, list) or not raw_arms:
        raise check.fail("[[arm]]", "at least one [[arm]] table is required")
    arms = tuple(_parse_arm(check, raw, i, families) for i, raw in enumerate(raw_arms))
    seen: set[str] = set()
    for spec in arms:
        if spec.name in seen:
            raise check.fail("[[arm]]", f"duplicate arm name {spec.name!r}")
        seen.add(spec.name)
    empty = [f for f in families if not any(a.family == f for a in arms)]
    if empty:
        raise check.fail("[scorer].families", f"family/families {empty} have no arm")

    version = check.string(scorer, "version", "[scorer]")
    progress = _parse_progress(check, data, version) if "progress" in data else None

    return RegimeWConfig(
        name=check.string(scorer, "name", "[scorer]"),
        version=version,
        arms=arms,
        lambda_end=lambdas["lambda_end"],
        lambda_path=lambdas["lambda_path"],
        lambda_cf=lambdas["lambda_cf"],
        alpha=check.number(reward, "alpha", "[reward]", low=0.0),
        beta=check.number(reward, "beta", "[reward]", low=0.0),
        gamma=check.number(reward, "gamma", "[reward]", low=0.0),
        length_scale=check.number(reward, "length_scale", "[reward]", low=0.0, low_open=True),
        equation_rel_tol=check.number(equations, "rel_tol", "[equations]", low=0.0, high=0.5),
        fingerprint=fingerprint,
        families=families,
        path_reference=path_reference,
        path_question_numbers=path_question_numbers,
        gold_only_support=gold_only_support,
        progress=progress,
    )


def load_config(path: str | os.PathLike[str] | None = None) -> RegimeWConfig:
    """Load and validate a Regime W config; ``None`` loads the packaged default."""
    if path is None:
        source = f"<package>/{_DEFAULT_RESOURCE}"
        raw = resources.files(__package__).joinpath(_DEFAULT_RESOURCE).read_bytes()
    else:
        source = os.fspath(path)
        try:
            with open(source, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read config file: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    fingerprint = "sha256:" + hashlib.sha256(raw).hexdigest()
    return _parse(data, fingerprint, source)


@cache
def default_config() -> RegimeWConfig:
    """The packaged default config, loaded once per process."""
    return load_config(None)
