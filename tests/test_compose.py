"""Deployment (DESIGN §6), checked statically (Docker cannot run here), plus examples/curl.sh live.

The compose file is parsed with PyYAML; the Dockerfiles are read line by line. curl.sh is run
against the real reward service (backend `provided`: the batch carries its arm outputs).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from reward_service.settings import Settings
from shared_schemas.wire import ScoreRequest, ScoreResponse
from tests.support.limits import HANG_GUARD_S
from tests.support.servers import running_service

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
SERVICE_DOCKERFILE = REPO / "docker" / "reward-service.Dockerfile"
TRAINER_DOCKERFILE = REPO / "docker" / "trainer.Dockerfile"
ENTRYPOINT = REPO / "docker" / "reward-service-entrypoint.sh"
CURL_SH = REPO / "examples" / "curl.sh"
BATCH = REPO / "examples" / "batch.json"
SECRET_TARGET = "/run/secrets/regime_w_api_keys"
# A value that looks like a credential: a known key prefix, or a long run of key characters.
KEY_LIKE = re.compile(r"^(?:sk-|hf_|ghp_|Bearer\s)|^[A-Za-z0-9_\-+/=]{24,}$")


def _looks_like_key(value: str) -> bool:
    if value.startswith(("/", "./", "${")) or "://" in value:  # a path, a URL or a substitution
        return False
    return KEY_LIKE.search(value) is not None


SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    return compose["services"][name]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["NAME=value", ...]
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _copy_sources(path: Path) -> list[str]:
    sources = []
    for instruction, args in _dockerfile_instructions(path):
        if instruction in {"COPY", "ADD"}:
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            sources += words[:-1]
    return sources


# ---------------------------------------------------------------- compose


def test_three_services_and_their_images(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"vllm", "reward-service", "trainer", "postgres", "reward-fleet", "lb"}
    vllm = _service(compose, "vllm")
    assert vllm["image"].startswith("vllm/vllm-openai:")
    assert any("${ARM_MODEL:-deepseek-ai/DeepSeek-R1-Distill-Llama-8B}" in arg for arg in vllm["command"])
    assert _service(compose, "reward-service")["build"]["dockerfile"] == "docker/reward-service.Dockerfile"
    assert _service(compose, "trainer")["build"]["dockerfile"] == "docker/trainer.Dockerfile"


def test_gpu_reservations(compose: dict[str, Any]) -> None:
    for name in ("vllm", "trainer"):
        devices = _service(compose, name)["deploy"]["resources"]["reservations"]["devices"]
        assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices), name


@pytest.mark.parametrize(("name", "path"), [("vllm", "/health"), ("reward-service", "/readyz")])
def test_health_checks(compose: dict[str, Any], name: str, path: str) -> None:
    check = _service(compose, name)["healthcheck"]
    assert check["test"][0] in {"CMD", "CMD-SHELL"}
    assert any(f"127.0.0.1:8000{path}'" in part or f"localhost:8000{path}'" in part for part in check["test"])
    assert check["retries"] >= 1 and "interval" in check


def test_reward_service_wiring(compose: dict[str, Any]) -> None:
    service = _service(compose, "reward-service")
    env = _env(service)
    assert env["REGIME_W_BACKEND"] == "openai"
    assert env["REGIME_W_OPENAI_BASE_URL"] == "http://vllm:8000/v1"
    assert env["REGIME_W_MODEL"] == "${ARM_MODEL:-deepseek-ai/DeepSeek-R1-Distill-Llama-8B}"
    assert env["REGIME_W_API_KEYS_FILE"] == SECRET_TARGET
    assert service["depends_on"]["vllm"]["condition"] == "service_healthy"
    assert any(str(port).endswith(":8000") for port in service["ports"])
    # every REGIME_W_* variable is a real setting of the service (a typo would be silently ignored)
    fields = set(Settings.model_fields)
    for name in env:
        assert name.startswith("REGIME_W_") and name.removeprefix("REGIME_W_").lower() in fields, name


def test_reward_service_cache_on_a_named_volume(compose: dict[str, Any]) -> None:
    service = _service(compose, "reward-service")
    cache_path = _env(service)["REGIME_W_CACHE_PATH"]
    assert cache_path == "/cache/arms.sqlite3"
    mounts = {}
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[target] = source
    cache_dir = str(Path(cache_path).parent)
    assert cache_dir in mounts, f"{cache_dir} is not a mount of reward-service"
    assert mounts[cache_dir] in compose["volumes"], "the arm cache must live on a named volume"


def test_trainer_profile_and_wiring(compose: dict[str, Any]) -> None:
    trainer = _service(compose, "trainer")
    assert trainer["profiles"] == ["train"]
    env = _env(trainer)
    assert env["REGIME_W_URL"] == "http://reward-service:8000"
    assert env["REGIME_W_API_KEY_FILE"] == SECRET_TARGET
    assert trainer["depends_on"]["reward-service"]["condition"] == "service_healthy"
    for name in ("vllm", "reward-service"):
        assert "profiles" not in _service(compose, name), f"{name} must start without a profile"


# ---------------------------------------------------------------- profile `fleet` (docs/scaling.md)

HAPROXY_CFG = REPO / "docker" / "haproxy-fleet.cfg"
PG_SECRET_TARGET = "/run/secrets/regime_w_pg_password"


def test_fleet_profile_postgres_replicas_and_a_load_balancer(compose: dict[str, Any]) -> None:
    for name in ("postgres", "reward-fleet", "lb"):
        assert _service(compose, name)["profiles"] == ["fleet"], name
    pg = _service(compose, "postgres")
    assert pg["image"].startswith("postgres:")
    assert _env(pg)["POSTGRES_PASSWORD_FILE"] == PG_SECRET_TARGET and "POSTGRES_PASSWORD" not in _env(pg)
    assert "pg_isready" in pg["healthcheck"]["test"]
    assert any(v.split(":")[0] in compose["volumes"] for v in pg["volumes"]), "the database lives on a named volume"
    fleet = _service(compose, "reward-fleet")
    env = _env(fleet)
    cache_url = env["REGIME_W_CACHE_URL"]
    assert cache_url.startswith("postgresql://") and "@postgres:5432/" in cache_url
    userinfo = cache_url.removeprefix("postgresql://").split("@")[0]
    assert ":" not in userinfo, "no password in the cache URL: it comes from the secret file"
    assert env["REGIME_W_CACHE_PASSWORD_FILE"] == PG_SECRET_TARGET
    assert env["REGIME_W_API_KEYS_FILE"] == SECRET_TARGET
    assert {"regime_w_api_keys", "regime_w_pg_password"} <= set(fleet["secrets"])
    assert "ports" not in fleet, "replicas publish nothing (a fixed host port would break --scale)"
    assert fleet["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert any("127.0.0.1:8000/readyz'" in part for part in fleet["healthcheck"]["test"])
    fields = set(Settings.model_fields)
    for name in env:
        assert name.removeprefix("REGIME_W_").lower() in fields, name
    secret = compose["secrets"]["regime_w_pg_password"]
    assert set(secret) == {"file"} and "./secrets/pg_password.txt" in secret["file"]
    lb = _service(compose, "lb")
    assert lb["image"].startswith("haproxy:")
    assert any(v.startswith("./docker/haproxy-fleet.cfg:") and v.endswith(":ro") for v in lb["volumes"])
    assert lb["depends_on"]["reward-fleet"]["condition"] == "service_healthy"


def test_haproxy_config_checks_readyz_and_finds_every_replica() -> None:
    cfg = HAPROXY_CFG.read_text(encoding="utf-8")
    assert "option httpchk GET /readyz" in cfg and "http-check expect status 200" in cfg
    assert re.search(r"server-template \w+ 1-\d+ reward-fleet:8000", cfg)
    assert "resolvers docker" in cfg and "127.0.0.11:53" in cfg
    timeouts = {m.group(1): int(m.group(2)) for m in re.finditer(r"timeout (client|server) (\d+)s", cfg)}
    assert min(timeouts.values()) > Settings.model_fields["generation_timeout_s"].default + 30
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy is not installed here (apt-get install haproxy): the syntax check needs it")
    done = subprocess.run([haproxy, "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stdout + done.stderr


def test_keys_only_through_secrets(compose: dict[str, Any]) -> None:
    secret = compose["secrets"]["regime_w_api_keys"]
    assert set(secret) == {"file"}, "the keys come from a file, not from an environment value"
    assert secret["file"].endswith("./secrets/api_keys.txt}") or secret["file"] == "./secrets/api_keys.txt"
    for name in ("reward-service", "trainer"):
        assert "regime_w_api_keys" in _service(compose, name)["secrets"]
    for name, service in compose["services"].items():
        assert "env_file" not in service, f"{name}: env files can carry keys; use secrets"
        for var, value in _env(service).items():
            assert not _looks_like_key(value), f"{name}: {var} looks like an inline credential"
            if SECRET_NAME.search(var):
                assert var.endswith("_FILE") and value.startswith("/run/secrets/"), (
                    f"{name}: {var} must point at a compose secret, not hold a value"
                )


def test_key_like_values_would_be_caught() -> None:
    # the detector itself: real-looking keys match, ordinary settings do not
    for value in (
        "sk-live-1234",
        "hf_abcdefghijklmnopqrstuvwxyz",
        "Zx8uQw3_rT5yU7iO9pA1sD2fG4hJ6kL8",
        "q1w2e3r4t5y6u7i8o9p0/+aSdFgHjKl=",
    ):
        assert _looks_like_key(value), value
    for value in (
        "openai",
        "http://vllm:8000/v1",
        "/cache/arms.sqlite3",
        "8388608",
        SECRET_TARGET,
        "${ARM_MODEL:-deepseek-ai/DeepSeek-R1-Distill-Llama-8B}",
    ):
        assert not _looks_like_key(value), value


def test_secrets_file_is_ignored_by_git_and_docker() -> None:
    git = shutil.which("git")
    assert git is not None, "git is needed to check .gitignore"
    result = subprocess.run([git, "check-ignore", "--no-index", "-q", "secrets/api_keys.txt"], cwd=REPO, check=False)
    assert result.returncode == 0, "secrets/api_keys.txt must be git-ignored: add `/secrets/*` to .gitignore"
    readme = subprocess.run([git, "check-ignore", "--no-index", "-q", "secrets/README.md"], cwd=REPO, check=False)
    assert readme.returncode == 1, "secrets/README.md must stay in git: add `!/secrets/README.md` to .gitignore"
    ignored = _ignored_by_docker()
    assert {"secrets", ".git", "*.sqlite3"} <= ignored


def _ignored_by_docker() -> set[str]:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


# ---------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("path", [SERVICE_DOCKERFILE, TRAINER_DOCKERFILE], ids=["service", "trainer"])
def test_dockerfiles_base_torch_arg_and_non_root(path: Path) -> None:
    instructions = _dockerfile_instructions(path)
    args = [a for i, a in instructions if i == "ARG"]
    assert "PYTHON_IMAGE=python:3.11-slim" in args
    assert any(a.startswith("TORCH_INDEX=") for a in args)
    assert ("FROM", "${PYTHON_IMAGE}") in instructions
    runs = " ".join(a for i, a in instructions if i == "RUN")
    assert "download.pytorch.org/whl/${TORCH_INDEX}" in runs
    users = [a for i, a in instructions if i == "USER"]
    assert users and users[-1] not in {"root", "0"}, "the image must run as a non-root user"
    assert [i for i, _ in instructions].index("USER") > max(n for n, (i, _) in enumerate(instructions) if i == "RUN"), (
        "USER comes after the last RUN"
    )


def test_service_dockerfile_installs_the_service_extra() -> None:
    runs = " ".join(a for i, a in _dockerfile_instructions(SERVICE_DOCKERFILE) if i == "RUN")
    assert '".[service]"' in runs
    sources = _copy_sources(SERVICE_DOCKERFILE)
    assert "reward_service/" in sources and "shared_schemas/" in sources


def test_trainer_dockerfile_never_copies_reward_service() -> None:
    sources = _copy_sources(TRAINER_DOCKERFILE)
    assert sources, "no COPY found"
    for source in sources:
        assert "reward_service" not in source, source
        assert source not in {".", "./", "*", "/"}, f"COPY {source} would bring reward_service in"
    allowed = {"trainer/", "shared_schemas/", "recipes/", "pyproject.toml", "README.md", "constraints.txt"}
    assert set(sources) <= allowed, set(sources) - allowed
    runs = " ".join(a for i, a in _dockerfile_instructions(TRAINER_DOCKERFILE) if i == "RUN")
    assert '".[trainer]"' in runs
    assert "find_spec('reward_service') is not None" in runs, "the build must prove reward_service is absent"
    assert "reward_service" not in " ".join(
        a for i, a in _dockerfile_instructions(TRAINER_DOCKERFILE) if i not in {"RUN"}
    )


def test_copied_paths_exist() -> None:
    for path in (SERVICE_DOCKERFILE, TRAINER_DOCKERFILE):
        for source in _copy_sources(path):
            if source != "README.md":  # written by the lead with the repository README
                assert (REPO / source).exists(), f"{path.name}: COPY {source} does not exist"


# ---------------------------------------------------------------- scripts


@pytest.mark.parametrize("script", [ENTRYPOINT, CURL_SH], ids=["entrypoint", "curl"])
def test_scripts_parse_and_are_executable(script: Path) -> None:
    assert os.access(script, os.X_OK), f"{script.name} is not executable"
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_entrypoint_refuses_an_unreadable_keys_file(tmp_path: Path) -> None:
    env = {**os.environ, "REGIME_W_API_KEYS_FILE": str(tmp_path / "missing.txt")}
    result = subprocess.run(["sh", str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 2
    assert "cannot read REGIME_W_API_KEYS_FILE" in result.stderr and "secrets/README.md" in result.stderr


def test_entrypoint_starts_regime_w_serve(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# comment\nk-one\n", encoding="utf-8")
    env = {**os.environ, "REGIME_W_API_KEYS_FILE": str(keys)}
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), "--help"], env=env, capture_output=True, text=True, timeout=HANG_GUARD_S
    )
    assert result.returncode == 0, result.stderr
    assert "regime-w-serve" in result.stdout and "--host" in result.stdout


def _curl(url: str, key: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIME_W_")}
    env["REGIME_W_URL"] = url
    if key is not None:
        env["REGIME_W_API_KEY"] = key
    return subprocess.run(["bash", str(CURL_SH)], env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)


def test_curl_sh_scores_the_example_batch_against_the_real_service(tmp_path: Path) -> None:
    assert shutil.which("curl"), "curl is needed by examples/curl.sh"
    key = "k-curl-test-0123456789"
    env = {"REGIME_W_API_KEYS": key, "REGIME_W_BACKEND": "provided", "REGIME_W_CACHE_PATH": "none"}
    batch = ScoreRequest.model_validate_json(BATCH.read_text(encoding="utf-8"))
    with running_service(env=env, cwd=tmp_path) as server:
        ok = _curl(server.url, key)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.startswith("{\n    "), "the response is pretty-printed by json.tool"
        response = ScoreResponse.model_validate(json.loads(ok.stdout))
        assert [r.id for r in response.results] == [item.id for item in batch.items]
        for item, result in zip(batch.items, response.results, strict=True):
            assert len(result.scores) == len(item.trajectories)
            assert result.label_free == (item.gold_answer is None)
        natalia = response.results[0]
        assert natalia.consensus_answer == "72"
        assert natalia.scores[0].reward > natalia.scores[1].reward  # right beats the slip 48 + 24 = 62

        denied = _curl(server.url, "not-the-key")
        assert denied.returncode == 22, denied.stderr
        assert json.loads(denied.stdout)["error"]["code"]

    missing = _curl("http://127.0.0.1:9", None)
    assert missing.returncode == 2 and "REGIME_W_API_KEY" in missing.stderr
