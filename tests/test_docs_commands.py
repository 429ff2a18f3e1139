"""The commands in README.md's and docs/*.md's ```bash / ```sh blocks that run our own programs still parse.

Every documented command line of ours is taken apart (continuations joined, ``for`` loops over literal words
expanded, ``$(...)`` substitutions checked as commands of their own, ``VAR=value`` prefixes dropped, ``docker
compose run SERVICE`` unwrapped, ``<placeholders>`` and ``$VARS`` given a value, each ``[--optional flag]`` tried alone) and
handed to the program's own parser, all in one subprocess (imports shared, nothing run past the parse):

- ``regime-w-serve``, ``-score``, ``-precompute``, ``-cache`` (the console scripts of pyproject.toml),
  ``python scripts/...``, ``python bench/...``, ``scripts/build-trainer-dist``, ``python -m tests.support...``:
  argparse's outermost ``parse_args`` / ``parse_known_args`` runs on the documented argv, then the program is
  stopped; an unknown flag, a missing argument or a bad choice is argparse's exit 2 with its message, and a
  ``parse_known_args`` left-over is a failure too;
- ``regime-w-train <stage> ...``: ``trainer.cli.main(argv + ["--dry-run"])`` (TrlParser and the recipe's keys,
  then the stage's plan; no weights, no data), exit 0 expected;
- ``python -m trainer.integrations NAME``: run (it prints a file path);
- ``bash scripts/demo.sh ARGS``: checked as ``python scripts/demo.py ARGS`` (demo.sh execs it with "$@");
- ``bash bench/*.sh WORDS``: each word must be one the script's ``case`` arms or ``[ ... != WORD ]`` tests know;
- ``bash .ci/run``, ``examples/curl.sh``: the file exists;
- ``python -m pytest ...``: every ``tests/...`` path exists and every ``-m`` marker is registered.

Skipped (not our programs): docker/docker compose themselves, curl, pip, git, cd, vllm, the frameworks' own
launchers (``python3 -m verl...``, ``deepspeed``/``openrlhf``), and anything else whose first word is not listed
above. ``test_the_skipped_commands_are_not_ours`` names what was skipped so a new entry point is not missed.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.limits import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: the value a documented placeholder (``<arm model>``, ``$VAR``, ``$(...)``) gets: parses as a string, a path and an int
PLACEHOLDER = "1"
#: programs of ours that use no argparse and are cheap to run outright (they print a path and exit)
RUN_OUTRIGHT = {"trainer.integrations"}
#: first words of commands that are not our programs (skipped, see the module docstring)
NOT_OURS = {"docker", "curl", "pip", "git", "cd", "vllm", "export", "source", ".", "deepspeed", "ray", "kill", "wait"}
_SEPARATORS = {";", "&", "&&", "|", "||", "(", ")"}
_REDIRECTS = {">", ">>", "<", "2>", "&>", ">&"}
#: the options of ``docker compose run`` / ``exec`` that take a value
_COMPOSE_RUN_VALUED = {"-v", "--volume", "-e", "--env", "--entrypoint", "-w", "--workdir", "-u", "--user", "-p"}
_COMPOSE_RUN_VALUED |= {"--publish", "--name", "-l", "--label", "--env-from-file", "--pull"}


@dataclass(frozen=True)
class Command:
    """One documented command line of ours: where it is, the program kind, the program and its argv."""

    where: str
    kind: str  # console | path | module | train | demo_sh | bench_sh | ci_run | pytest
    program: str
    argv: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        return f"{self.where} {self.program} {' '.join(self.argv)}"[:120]


def bash_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, body) of every ```bash (or ```sh, ```shell) fenced block."""
    out = []
    for m in re.finditer(r"^```(?:bash|sh|shell)[ \t]*\n(.*?)^```", text, re.S | re.M):
        out.append((text.count("\n", 0, m.start(1)) + 1, m.group(1)))
    return out


def logical_lines(start: int, body: str) -> list[tuple[int, str]]:
    """The block's lines with backslash continuations joined, each with its first line number."""
    out: list[tuple[int, str]] = []
    pending, first = "", start
    for n, line in enumerate(body.splitlines(), start):
        if not pending:
            first = n
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((first, pending + line))
        pending = ""
    if pending:
        out.append((first, pending))
    return out


def _fill_placeholders(line: str) -> str:
    line = re.sub(r"<[A-Za-z_][^<>\n]*>", PLACEHOLDER, line)  # <arm model>, <reward_dev>
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", PLACEHOLDER, line)


def _expand_optional(line: str) -> list[str]:
    """``cmd [--a x] [--b y]`` -> ``cmd``, ``cmd --a x``, ``cmd --b y``: each documented option on its own
    (options in brackets may be alternatives: ``[--reward majority] [--label_free true]``)."""
    pattern = r"\[(--?[^\[\]]*)\]"
    found = list(re.finditer(pattern, line))
    if not found:
        return [line]
    variants = [re.sub(pattern, " ", line)]
    for keep in found:  # the line with only this option's brackets opened, the others dropped
        head, tail = re.sub(pattern, " ", line[: keep.start()]), re.sub(pattern, " ", line[keep.end() :])
        variants.append(head + keep.group(1) + tail)
    return variants


def _expand_for(line: str) -> list[str]:
    """``for v in a b; do BODY; done`` over literal words -> BODY once per word ($v filled in)."""
    m = re.fullmatch(r"\s*for (\w+) in ([^;$`]+); do (.*); done\s*(#.*)?", line)
    if m is None:
        return [line]
    var, words, body = m.group(1), m.group(2).split(), m.group(3)
    return [re.sub(r"\$\{?" + var + r"\b\}?", w, body) for w in words]


def simple_commands(line: str) -> list[list[str]]:
    """The simple commands of one logical line (``$(...)`` substitutions among them), as argv lists."""
    substitutions = re.findall(r"\$\(([^()]*)\)", line)
    line = re.sub(r"\$\(([^()]*)\)", PLACEHOLDER, line)
    out: list[list[str]] = []
    texts = [*substitutions, *(v for body in _expand_for(line) for v in _expand_optional(body))]
    for text in texts:
        lexer = shlex.shlex(_fill_placeholders(text), posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        tokens = list(lexer)
        i = 0
        while i < len(tokens):
            token = tokens[i]
            if token in _SEPARATORS:
                out.append(current)
                current = []
            elif token in _REDIRECTS:
                i += 1  # and its target
            else:
                current.append(token)
            i += 1
        out.append(current)
    return [c for c in out if c]


def _strip_prefix(argv: list[str]) -> list[str]:
    """Drop ``VAR=value`` assignments, ``time``/``exec``, and unwrap ``docker compose ... run|exec SERVICE``."""
    while argv and (re.match(r"[A-Za-z_][A-Za-z0-9_]*=", argv[0]) or argv[0] in {"time", "exec"}):
        argv = argv[1:]
    if argv[:2] == ["docker", "compose"] and ("run" in argv or "exec" in argv):
        rest = argv[argv.index("run" if "run" in argv else "exec") + 1 :]
        entrypoint: list[str] = []
        while rest and rest[0].startswith("-"):
            option, rest = rest[0], rest[1:]
            if option in _COMPOSE_RUN_VALUED and rest:
                if option == "--entrypoint":
                    entrypoint = [rest[0]]
                rest = rest[1:]
        argv = entrypoint + rest[1:]  # past the service name
    return argv


def _console_scripts() -> dict[str, str]:
    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"])


def classify(where: str, argv: list[str]) -> Command | None:
    """Our program's ``Command`` for a simple command, or None when it is not one of ours."""
    argv = _strip_prefix(argv)
    if not argv:
        return None
    head, rest = argv[0], argv[1:]
    if head == "regime-w-train":
        return Command(where, "train", head, tuple(rest))
    if head in _console_scripts():
        return Command(where, "console", head, tuple(rest))
    if head in {"python", "python3"} and rest:
        if rest[0] == "-m" and len(rest) > 1:
            module = rest[1]
            if module == "pytest":
                return Command(where, "pytest", module, tuple(rest[2:]))
            if module.split(".")[0] in {
                "trainer",
                "tests",
                "reward_service",
                "fastgen",
                "shared_schemas",
                "experiments",
            }:
                return Command(where, "module", module, tuple(rest[2:]))
            return None
        if re.match(r"(scripts|bench)/", rest[0]):
            return Command(where, "path", rest[0], tuple(rest[1:]))
        return None
    if head == "scripts/build-trainer-dist" or re.fullmatch(r"\./scripts/[\w.-]+", head):
        return Command(where, "path", head.removeprefix("./"), tuple(rest))
    if re.fullmatch(r"(\./)?examples/[\w.-]+\.sh", head):
        return Command(where, "ci_run", head.removeprefix("./"), tuple(rest))
    if head == "bash" and rest:
        script = rest[0].removeprefix("./")
        if script == "scripts/demo.sh":
            return Command(where, "demo_sh", script, tuple(rest[1:]))
        if re.fullmatch(r"bench/[\w.-]+\.sh", script):
            return Command(where, "bench_sh", script, tuple(rest[1:]))
        if script == ".ci/run":
            return Command(where, "ci_run", script, tuple(rest[1:]))
        if script.startswith("scripts/"):
            return Command(where, "bench_sh", script, tuple(rest[1:]))
    return None


def documented(paths: list[Path] = DOCS) -> tuple[list[Command], list[str]]:
    """Every command of ours in the docs' ```bash blocks, and the first words of those skipped."""
    ours: list[Command] = []
    skipped: list[str] = []
    for path in paths:
        for start, body in bash_blocks(path.read_text(encoding="utf-8")):
            for n, line in logical_lines(start, body):
                for argv in simple_commands(line):
                    command = classify(f"{path.name}:{n}", argv)
                    if command is not None:
                        ours.append(command)
                    elif _strip_prefix(argv):
                        skipped.append(_strip_prefix(argv)[0])
    return ours, skipped


# The runner: one subprocess, every argparse-parsed command through its own parser, stopped right after it.
RUNNER = r"""
import argparse, contextlib, io, json, runpy, sys, importlib

class Parsed(BaseException):
    pass

state = {"depth": 0, "intercept": True}

def wrap(orig, known):
    def inner(self, args=None, namespace=None):
        state["depth"] += 1
        try:
            result = orig(self, args, namespace)
        finally:
            state["depth"] -= 1
        if state["depth"] == 0 and state["intercept"]:
            extras = list(result[1]) if known else []
            raise Parsed(extras)
        return result
    return inner

argparse.ArgumentParser.parse_args = wrap(argparse.ArgumentParser.parse_args, False)
argparse.ArgumentParser.parse_known_args = wrap(argparse.ArgumentParser.parse_known_args, True)

def run(job):
    kind, program, argv = job["kind"], job["program"], list(job["argv"])
    state["intercept"] = kind != "train"
    saved = list(sys.argv)
    try:
        if kind == "train":
            from trainer.cli import main
            return {"status": "returned", "code": main([*argv, "--dry-run"])}
        if kind == "console":
            module, func = job["entry"].split(":")
            return {"status": "returned", "code": getattr(importlib.import_module(module), func)(argv)}
        if kind == "path":
            sys.argv = [program, *argv]
            runpy.run_path(program, run_name="__main__")
        else:
            sys.argv = [program, *argv]
            runpy.run_module(program, run_name="__main__", alter_sys=True)
        return {"status": "returned", "code": 0}
    except Parsed as p:
        return {"status": "parsed", "extras": p.args[0]}
    except SystemExit as e:
        return {"status": "returned", "code": e.code if isinstance(e.code, int) else (0 if e.code is None else 1)}
    finally:
        sys.argv = saved

results = []
for job in json.load(sys.stdin):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            result = run(job)
        except Exception as exc:
            result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    result["stderr"] = err.getvalue()[-2000:]
    results.append(result)
print(json.dumps(results))
"""


def run_parsers(commands: list[Command]) -> list[dict[str, object]]:
    """Each command through its own parser (``RUNNER``), in one subprocess at the repository root."""
    scripts = _console_scripts()
    jobs = [
        {"kind": c.kind, "program": c.program, "argv": list(c.argv), "entry": scripts.get(c.program, "")}
        for c in commands
    ]
    done = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=HANG_GUARD_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results: list[dict[str, object]] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def parser_problem(command: Command, result: dict[str, object]) -> str | None:
    """What is wrong with a parser run's result, or None when the documented argv parsed."""
    if result["status"] == "parsed":
        extras = result.get("extras") or []
        return f"not arguments of {command.program}: {extras}" if extras else None
    if result["status"] == "returned":
        allowed = command.kind == "train" or command.program in RUN_OUTRIGHT
        if result["code"] == 0 and allowed:
            return None
        why = "exit status" if result["code"] != 0 else "ran without parsing any argv, status"
        return f"{why} {result['code']}: {str(result.get('stderr', '')).strip()[-800:]}"
    return f"{result.get('error')}: {str(result.get('stderr', '')).strip()[-800:]}"


def _markers() -> set[str]:
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["pytest"]["ini_options"]
    return {m.split(":")[0].strip() for m in ini["markers"]}


def static_problem(command: Command) -> str | None:
    """Checks of the commands that are not an argparse program: shell scripts and pytest runs."""
    if command.kind == "ci_run":
        return None if (ROOT / command.program).is_file() else f"{command.program} does not exist"
    if command.kind == "bench_sh":
        path = ROOT / command.program
        if not path.is_file():
            return f"{command.program} does not exist"
        text = path.read_text(encoding="utf-8")
        known = set(re.findall(r"(?:^|[\s|(])([A-Za-z_][\w-]*)(?=\s*(?:\||\)))", text, re.M))
        known |= set(re.findall(r"!?=\s*\"?([A-Za-z_][\w-]*)\"?\s*\]", text))
        unknown = [w for w in command.argv if not w.startswith("-") and w not in known]
        return f"{command.program} knows no {unknown}" if unknown else None
    if command.kind == "pytest":
        problems = []
        argv = list(command.argv)
        for i, arg in enumerate(argv):
            if arg.startswith("tests/") and not (ROOT / arg.split("::")[0]).exists():
                problems.append(f"no {arg.split('::')[0]}")
            if arg == "-m" and i + 1 < len(argv):
                words = set(re.findall(r"[A-Za-z_]\w*", argv[i + 1])) - {"and", "or", "not"}
                problems += [f"marker {w!r} is not registered" for w in sorted(words - _markers())]
        return "; ".join(problems) or None
    return None


COMMANDS, SKIPPED = documented()
PARSED_KINDS = {"console", "path", "module", "train", "demo_sh"}


def _as_parsed(command: Command) -> Command:
    if command.kind == "demo_sh":  # demo.sh: exec python scripts/demo.py "$@"
        return Command(command.where, "path", "scripts/demo.py", command.argv)
    return command


@pytest.fixture(scope="module")
def parser_results() -> dict[Command, dict[str, object]]:
    """The documented commands and the controls below, through one runner (one import of the training stack)."""
    commands = [c for c in COMMANDS if c.kind in PARSED_KINDS] + [*REFUSED, *ACCEPTED]
    return dict(zip(commands, run_parsers([_as_parsed(c) for c in commands])))


def test_demo_sh_hands_its_arguments_to_demo_py() -> None:
    # what lets ``bash scripts/demo.sh ARGS`` be checked as ``python scripts/demo.py ARGS``
    assert 'exec python scripts/demo.py "$@"' in (ROOT / "scripts/demo.sh").read_text(encoding="utf-8")


def test_the_docs_document_commands_of_every_kind() -> None:
    kinds = {c.kind for c in COMMANDS}
    assert {"console", "path", "module", "train", "pytest", "bench_sh"} <= kinds, kinds
    assert {"regime-w-serve", "regime-w-score", "regime-w-precompute"} <= {c.program for c in COMMANDS}


def test_the_skipped_commands_are_not_ours() -> None:
    ours = {"regime-w-train", *_console_scripts()}
    assert not ours & set(SKIPPED), "a command of ours was not classified"
    assert not [s for s in SKIPPED if s.startswith(("scripts/", "bench/", "examples/", "./"))], SKIPPED


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.kind in PARSED_KINDS], ids=lambda c: c.id)
def test_documented_command_parses(command: Command, parser_results: dict[Command, dict[str, object]]) -> None:
    problem = parser_problem(command, parser_results[command])
    assert problem is None, f"{command.where}: `{command.program} {' '.join(command.argv)}`: {problem}"


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.kind not in PARSED_KINDS], ids=lambda c: c.id)
def test_documented_script_or_test_run_exists(command: Command) -> None:
    problem = static_problem(command)
    assert problem is None, f"{command.where}: `{command.program} {' '.join(command.argv)}`: {problem}"


# --- the checker itself, on hand-written documents: it finds what it must and fails what it must


def test_the_extraction_of_a_hand_written_block(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n```bash\nREGIME_W_API_KEYS=k regime-w-serve --backend hf \\\n  --model <arm model> --port $PORT &\n"
        "for s in sft eval; do regime-w-train $s --config recipes/toy/$s.yaml; done   # both\n"
        'curl -s http://x | python -m json.tool\nx="$(python -m trainer.integrations verl)"\n'
        "docker compose --profile train run trainer regime-w-train sft [--dry-run]\n```\n"
        "```sh\ndocker compose run --rm -v a:/b:ro --entrypoint regime-w-cache svc --password-file f check u\n```\n"
        "```\nregime-w-serve --not-bash\n```\n",
        encoding="utf-8",
    )
    commands, skipped = documented([doc])
    assert [(c.where, c.kind, c.program, c.argv) for c in commands] == [
        ("doc.md:3", "console", "regime-w-serve", ("--backend", "hf", "--model", "1", "--port", "1")),
        ("doc.md:5", "train", "regime-w-train", ("sft", "--config", "recipes/toy/sft.yaml")),
        ("doc.md:5", "train", "regime-w-train", ("eval", "--config", "recipes/toy/eval.yaml")),
        ("doc.md:7", "module", "trainer.integrations", ("verl",)),
        ("doc.md:8", "train", "regime-w-train", ("sft",)),
        ("doc.md:8", "train", "regime-w-train", ("sft", "--dry-run")),
        ("doc.md:11", "console", "regime-w-cache", ("--password-file", "f", "check", "u")),
    ]
    assert skipped == ["curl", "python"]


#: commands each parser must refuse (an unknown flag of each kind of program, a missing positional)
REFUSED = [
    Command("x:1", "console", "regime-w-score", ("examples/batch.json", "--no-such-flag")),
    Command("x:2", "path", "bench/score_inprocess.py", ("--no-such-flag", "1")),
    Command("x:3", "train", "regime-w-train", ("sft", "--config", "recipes/toy/sft.yaml", "--no_such_arg", "1")),
    Command("x:4", "console", "regime-w-cache", ("copy",)),
]
ACCEPTED = [Command("x:5", "console", "regime-w-score", ("examples/batch.json", "--backend", "provided"))]


def test_the_parsers_refuse_what_they_do_not_know(parser_results: dict[Command, dict[str, object]]) -> None:
    problems = [parser_problem(c, parser_results[c]) for c in REFUSED]
    assert all(p is not None for p in problems), problems
    assert "--no-such-flag" in str(problems[0]) and "--no_such_arg" in str(problems[2]), problems
    assert [parser_problem(c, parser_results[c]) for c in ACCEPTED] == [None]


def test_the_static_checks_refuse_what_is_not_there() -> None:
    assert static_problem(Command("x", "bench_sh", "bench/gpu_stages.sh", ("rollouts", "no_such_stage")))
    assert static_problem(Command("x", "bench_sh", "bench/gpu_stages.sh", ("rollouts", "eval"))) is None
    assert static_problem(Command("x", "pytest", "pytest", ("-m", "not_a_marker", "tests/test_wire.py")))
    assert static_problem(Command("x", "pytest", "pytest", ("tests/test_no_such_file.py",)))
    assert static_problem(Command("x", "pytest", "pytest", ("-m", "slow", "tests/test_wire.py"))) is None
