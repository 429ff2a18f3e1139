"""DESIGN §8: the published trainer (wheel + sdist of ``regime-w-trainer``) holds no ``reward_service``
file, no module that imports or names a path of it, no ``experiments/`` driver and no arm prompt, and runs
where ``reward_service`` cannot be imported."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.support.limits import HANG_GUARD_S

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "build-trainer-dist"
PRIVATE_CONFIG = ROOT / "reward_service" / "regime_w" / "default_config.toml"
STAGES = ("sft", "rollouts", "prefs", "dpo", "grpo", "eval", "export")
PUBLIC_ARM_KEYS = {"name", "family", "style"}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out)], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, f"build-trainer-dist failed:\n{proc.stdout}\n{proc.stderr}"
    wheels = list(out.glob("regime_w_trainer-*.whl"))
    sdists = list(out.glob("regime_w_trainer-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def members(path: Path) -> dict[str, bytes]:
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as zf:
            return {name: zf.read(name) for name in zf.namelist()}
    with tarfile.open(path) as tf:
        out = {}
        for member in tf.getmembers():
            if member.isfile():
                fh = tf.extractfile(member)
                assert fh is not None
                out[member.name] = fh.read()
        return out


def arm_prompts() -> list[str]:
    """Every prompt string of the private default config (the test may read it; artifacts may not)."""
    config = tomllib.loads(PRIVATE_CONFIG.read_text(encoding="utf-8"))
    prompts = [
        value
        for arm in config["arm"]
        for key, value in arm.items()
        if key not in PUBLIC_ARM_KEYS and isinstance(value, str) and len(value.strip()) >= 20
    ]
    assert len(config["arm"]) == 8 and len(prompts) >= 8, "expected the 8 default arms and their prompts"
    return prompts


def prompt_fragments(prompts: list[str]) -> set[str]:
    """Whole prompts, plus each distinctive line of them (catches partial copies)."""
    fragments = set(prompts)
    for prompt in prompts:
        fragments.update(line.strip() for line in prompt.splitlines() if len(line.strip()) >= 40)
    return fragments


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_archive_holds_trainer_shared_schemas_and_fastgen_only(dist: dict[str, Path], kind: str) -> None:
    names = list(members(dist[kind]))
    private = [n for n in names if "reward_service" in n]
    assert not private, f"{kind} contains private files: {private}"
    strip = (lambda n: n) if kind == "wheel" else (lambda n: n.split("/", 1)[1] if "/" in n else n)
    packages = {strip(n).split("/")[0] for n in names if strip(n).endswith(".py")}
    assert packages == {"trainer", "shared_schemas", "fastgen"}, packages
    assert any(strip(n) == "trainer/reward_client/clients.py" for n in names)
    assert any(strip(n).startswith("trainer/recipes/") and n.endswith(".yaml") for n in names)
    # the toy world's data and model code ships (the toy-base stage); its experiment drivers do not
    toy = {strip(n) for n in names if strip(n).startswith("trainer/toy/") and n.endswith(".py")}
    assert {"trainer/toy/problems.py", "trainer/toy/base.py", "trainer/toy/determinism.py"} <= toy, toy
    assert not toy & {"trainer/toy/loop.py", "trainer/toy/ablation.py"}, toy
    assert not [n for n in names if strip(n).startswith("experiments/")]


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_archive_has_no_module_that_names_reward_service(dist: dict[str, Path], kind: str) -> None:
    """No import and no string path of ``reward_service`` in any module shipped (``scripts/private_refs.py``)."""
    script = _load_build_script()
    modules = {n: data.decode("utf-8") for n, data in members(dist[kind]).items() if n.endswith(".py")}
    assert len(modules) > 50, sorted(modules)
    offenders = [f"{name}:{ref}" for name, text in modules.items() for ref in script.private_refs(text)]
    assert not offenders, f"{kind} names reward_service:\n" + "\n".join(offenders)


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_archive_holds_no_arm_prompt(dist: dict[str, Path], kind: str) -> None:
    fragments = prompt_fragments(arm_prompts())
    leaks = []
    for name, data in members(dist[kind]).items():
        text = data.decode("utf-8", errors="replace")
        leaks.extend(f"{name}: {frag[:60]!r}" for frag in fragments if frag in text)
    assert not leaks, f"{kind} leaks arm prompts:\n" + "\n".join(leaks)


def test_wheel_metadata(dist: dict[str, Path]) -> None:
    files = members(dist["wheel"])
    metadata = next(v for k, v in files.items() if k.endswith(".dist-info/METADATA")).decode()
    entry_points = next(v for k, v in files.items() if k.endswith(".dist-info/entry_points.txt")).decode()
    assert "Name: regime-w-trainer" in metadata
    root = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]

    def name(requirement: str) -> str:
        return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip()

    # the core is the light client (httpx + pydantic), installable beside verl / OpenRLHF pins
    core = {name(r) for r in requires if "extra ==" not in r}
    assert core == {name(r) for r in root["dependencies"] + root["optional-dependencies"]["client"]}, requires
    assert not core & {"torch", "transformers", "trl", "peft", "bitsandbytes", "datasets", "accelerate"}
    # the training stack comes with the `trainer` extra
    in_extra = {name(r) for r in requires if 'extra == "trainer"' in r}
    for requirement in root["optional-dependencies"]["trainer"]:
        assert name(requirement) in in_extra, f"{name(requirement)} missing from the wheel's trainer extra"
    assert "Provides-Extra: trainer" in metadata
    assert "regime-w-train = trainer.cli:main" in entry_points
    assert "regime-w-serve" not in entry_points and "regime-w-score" not in entry_points


# Runs in a fresh interpreter: the wheel's directory first on sys.path, reward_service blocked.
PROBE = r"""
import contextlib, importlib, importlib.abc, importlib.metadata, io, json, pkgutil, sys

target = sys.argv[1]
attempts = []

class BlockPrivate(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "reward_service" or name.startswith("reward_service."):
            attempts.append(name)
            raise ModuleNotFoundError(f"{name} is blocked: the published trainer must not need it")
        return None

sys.meta_path.insert(0, BlockPrivate())
sys.path.insert(0, target)

import shared_schemas, trainer
(entry,) = [
    ep for dist in importlib.metadata.distributions(path=[target])
    for ep in dist.entry_points if ep.name == "regime-w-train" and ep.group == "console_scripts"
]
main = entry.load()
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(["--help"])
    except SystemExit as exc:
        code = exc.code
failed = {}
for info in pkgutil.walk_packages(trainer.__path__, "trainer."):
    try:
        importlib.import_module(info.name)
    except Exception as exc:
        failed[info.name] = f"{type(exc).__name__}: {exc}"
try:
    import reward_service
    blocked = False
except ImportError:
    blocked = True
print(json.dumps({
    "trainer": trainer.__file__, "shared_schemas": shared_schemas.__file__,
    "help_code": code, "help": out.getvalue(), "failed": failed,
    "attempts": attempts, "blocked": blocked,
    "loaded_private": sorted(m for m in sys.modules if m.startswith("reward_service")),
}))
"""


def install_wheel(wheel: Path, target: Path) -> Path:
    """``pip install --no-deps`` the wheel alone into ``target`` (no index, no dependencies)."""
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert pip.returncode == 0, pip.stderr
    return target


def test_wheel_runs_without_reward_service(dist: dict[str, Path], tmp_path: Path) -> None:
    target = install_wheel(dist["wheel"], tmp_path / "site")
    assert not (target / "reward_service").exists()
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(target)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        cwd=tmp_path,
        env={
            "PATH": os.environ.get("PATH", ""),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HOME": str(tmp_path),
        },  # no PYTHONPATH: the wheel only
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(report["trainer"]).is_relative_to(target), report["trainer"]
    assert Path(report["shared_schemas"]).is_relative_to(target), report["shared_schemas"]
    assert report["help_code"] == 0
    for stage in STAGES:
        assert stage in report["help"], f"--help does not list {stage!r}:\n{report['help']}"
    assert report["blocked"] and report["loaded_private"] == []
    assert report["attempts"] == ["reward_service"], "only the probe itself may try reward_service"
    assert report["failed"] == {}, f"trainer modules that do not import from the wheel: {report['failed']}"


# The light install: the wheel's client and framework reward files with the training stack absent.
LIGHT_PROBE = r"""
import importlib, importlib.abc, json, sys

HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes", "reward_service")

class BlockHeavy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, BlockHeavy())
sys.path.insert(0, sys.argv[1])
loaded = {}
for name in ("trainer.reward_client", "trainer.integrations.openrlhf_reward", "trainer.integrations.verl_reward"):
    loaded[name] = importlib.import_module(name).__file__
import contextlib, io
from trainer.cli import main
err = io.StringIO()
with contextlib.redirect_stderr(err):
    code = main(["sft", "--dry-run"])
print(json.dumps({"loaded": loaded, "heavy": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY),
                  "sft_code": code, "sft_err": err.getvalue()}))
"""


def test_wheel_client_imports_without_the_training_stack(dist: dict[str, Path], tmp_path: Path) -> None:
    target = install_wheel(dist["wheel"], tmp_path / "site")
    proc = subprocess.run(
        [sys.executable, "-c", LIGHT_PROBE, str(target)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(Path(f).is_relative_to(target) for f in report["loaded"].values()), report
    assert report["heavy"] == []
    # a stage needs the training stack: one line saying which extra to install
    assert report["sft_code"] == 2 and 'regime_w_trainer-<version>-py3-none-any.whl[trainer]"' in report["sft_err"], (
        report
    )


def _load_build_script():
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("build_trainer_dist", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_build_script_refuses_leaks(tmp_path: Path) -> None:
    """The script's own guards: a private import or string path in staging, or an arm prompt, a module naming
    ``reward_service`` or an ``experiments/`` driver in an archive, fail the build."""
    script = _load_build_script()
    staging = tmp_path / "stage"
    (staging / "trainer").mkdir(parents=True)
    (staging / "trainer" / "ok.py").write_text("table = {'reward_service': 'http://x'}\n")
    script.check_staging(staging)  # a string that merely names the service is fine
    (staging / "trainer" / "bad.py").write_text(
        "import importlib\nscorer = importlib.import_module('reward_service.regime_w.scorer')\n"
    )
    with pytest.raises(
        script.BuildError, match=r"bad.py names reward_service \(2: import 'reward_service.regime_w.scorer'\)"
    ):
        script.check_staging(staging)
    by_path = tmp_path / "stage-by-path"
    (by_path / "trainer").mkdir(parents=True)
    (by_path / "trainer" / "loop.py").write_text(
        "import sys\nfrom pathlib import Path\nROOT = Path('.')\nCONFIG = ROOT / 'reward_service' / 'x.toml'\n"
        "CMD = [sys.executable, '-m', 'reward_service.cli']\n"
    )
    with pytest.raises(
        script.BuildError, match=r"loop.py names reward_service \(4: string 'reward_service'; 5: string"
    ):
        script.check_staging(by_path)

    prompts = script.arm_prompts(PRIVATE_CONFIG)
    assert set(arm_prompts()) <= set(prompts)  # the script guards at least what this test checks
    leaky = tmp_path / "leaky-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(leaky, "w") as zf:
        zf.writestr("trainer/prompts.py", 'ARM = """' + prompts[0] + '"""\n')
        zf.writestr("trainer/__init__.py", "")
    clean = tmp_path / "clean-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(clean, "w") as zf:
        zf.writestr("trainer/__init__.py", "")
    script.check_archive(clean, prompts)
    with pytest.raises(script.BuildError, match="contains an arm prompt"):
        script.check_archive(leaky, prompts)
    starts = tmp_path / "starts-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(starts, "w") as zf:
        zf.writestr("trainer/serve.py", "import subprocess\nsubprocess.run(['python', '-m', 'reward_service'])\n")
    with pytest.raises(script.BuildError, match="trainer/serve.py names reward_service"):
        script.check_archive(starts, prompts)
    driver = tmp_path / "regime_w_trainer-0.0.0.tar.gz"
    with tarfile.open(driver, "w:gz") as tf:
        info = tarfile.TarInfo("regime_w_trainer-0.0.0/experiments/__init__.py")
        tf.addfile(info, io.BytesIO(b""))
    with pytest.raises(script.BuildError, match="never published: regime_w_trainer-0.0.0/experiments/__init__.py"):
        script.check_archive(driver, prompts)


# Every install command of the docs for the framework side must work as written: neither distribution
# is on the public index, so `pip install "regime-w[client]"` / `pip install regime-w-trainer` cannot.
DOCS = ("README.md", "docs/integrations.md", "packaging/trainer/README.md")


def doc_install_commands() -> list[tuple[str, str]]:
    """(doc, command) for every ``pip install`` line of the docs that names one of our distributions."""
    found = []
    for doc in DOCS:
        for line in (ROOT / doc).read_text(encoding="utf-8").splitlines():
            command = line.strip().strip("`")
            at = command.find("pip install")
            if at >= 0 and re.search(r"regime[-_]w", command[at:].split("#")[0]):
                found.append((doc, command[at:].split("#")[0].split("`")[0].strip()))
    return found


def test_docs_install_our_code_from_a_built_wheel_never_by_name() -> None:
    commands = doc_install_commands()
    assert len(commands) >= 4, commands  # README, integrations (verl, OpenRLHF), the package README
    for doc, command in commands:
        for word in command.split()[2:]:
            if re.search(r"regime[-_]w", word):
                assert "dist/regime_w_trainer-*.whl" in word, f"{doc}: {command!r} names {word!r}, not on any index"
        assert "[client]" not in command, f"{doc}: {command!r}: regime-w[client] brings reward_service"


def test_the_documented_wheel_commands_work_as_written(dist: dict[str, Path], tmp_path: Path) -> None:
    """The docs' commands, run by a shell in a directory whose dist/ is what build-trainer-dist wrote
    (installed with --no-deps --no-index --target: the dependencies are public, the wheel is ours)."""
    (tmp_path / "dist").mkdir()
    shutil.copy2(dist["wheel"], tmp_path / "dist" / dist["wheel"].name)
    for i, command in enumerate(sorted({c for _, c in doc_install_commands()})):
        target = tmp_path / f"site{i}"
        flags = f"--no-deps --no-index --quiet --disable-pip-version-check --target {target}"
        line = command.replace("pip install", f"{sys.executable} -m pip install {flags}", 1)
        proc = subprocess.run(["bash", "-c", line], cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD_S)
        assert proc.returncode == 0, f"{command!r}: {proc.stderr}"
        files = [p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()]
        assert "trainer/integrations/verl_reward.py" in files and "trainer/reward_client/clients.py" in files
        assert not [f for f in files if f.startswith("reward_service/") or f.endswith(".toml")], command
