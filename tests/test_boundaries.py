"""DESIGN §8: ``trainer`` and ``shared_schemas`` never import ``reward_service`` nor name a path, module or
command of it in a string (the toy loop that started the service by path now lives in ``experiments/``,
outside the published wheel), and ``shared_schemas`` depends on the standard library and pydantic only.
Checked on the source (AST) with ``scripts/private_refs.py``, the rule the wheel's build applies too.

No file is exempt: a reference to ``reward_service`` in either package fails, whatever its reason."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.limits import HANG_GUARD_S

ROOT = Path(__file__).resolve().parent.parent
SHARED_ALLOWED = {"pydantic", "shared_schemas"}
#: the last revision before the toy loop and the ablation left ``trainer/`` (issue 24)
BEFORE_MOVE = "52eba1c"


def _load_rule() -> ModuleType:
    spec = importlib.util.spec_from_file_location("private_refs", ROOT / "scripts" / "private_refs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rule = _load_rule()
imported_modules = rule.imported_modules
is_private = rule.is_private


def python_files(root: Path, package: str) -> list[Path]:
    files = sorted(p for p in (root / package).rglob("*.py") if "__pycache__" not in p.parts)
    assert files, f"no .py files under {package}/"
    return files


def private_references(root: Path, package: str) -> list[str]:
    """``path:line: kind 'text'`` for every import or string path of ``reward_service`` in ``root/package``."""
    return [
        f"{path.relative_to(root).as_posix()}:{ref}"
        for path in python_files(root, package)
        for ref in rule.private_refs(path.read_text(encoding="utf-8"))
    ]


def test_scanner_sees_every_import_form() -> None:
    source = (
        "import os, reward_service.app as app\n"
        "from reward_service.regime_w import scorer\n"
        "import importlib\n"
        "mod = importlib.import_module('reward_service.regime_w.config')\n"
        "other = __import__('reward_service')\n"
        "from . import sibling\n"
        "table = {'reward_service': 1}\n"  # a mere string is not an import
    )
    found = imported_modules(source)
    private = sorted((line, m) for line, m in found if is_private(m))
    assert private == [
        (1, "reward_service.app"),
        (2, "reward_service.regime_w"),
        (4, "reward_service.regime_w.config"),
        (5, "reward_service"),
    ]
    assert (1, "os") in found and (3, "importlib") in found


def test_fastgen_imports_neither_side() -> None:
    """fastgen (the generation engine both sides use) depends on torch and transformers, never on the
    trainer, the service or the shared schemas."""
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in python_files(ROOT, "fastgen")
        for line, module in imported_modules(path.read_text(encoding="utf-8"))
        if module.split(".")[0] in ("trainer", "reward_service", "shared_schemas")
    ]
    assert not offenders, "fastgen must stay independent of both sides:\n" + "\n".join(offenders)


@pytest.mark.parametrize("package", ["trainer", "shared_schemas"])
def test_never_imports_nor_names_reward_service(package: str) -> None:
    offenders = private_references(ROOT, package)
    assert not offenders, f"{package} must reach reward_service over HTTP only:\n" + "\n".join(offenders)


def test_scanner_sees_every_string_path_form() -> None:
    source = (
        '"""Reaches the service over HTTP; never imports ``reward_service``."""\n'  # prose: not a path
        "from pathlib import Path\n"
        "import os, sys\n"
        "ROOT = Path('.')\n"
        "config = ROOT / 'reward_service' / 'regime_w' / 'toy_config.toml'\n"
        "variants = 'reward_service/regime_w/toy_variants'\n"
        "cmd = [sys.executable, '-m', 'reward_service.cli', '--port', '1']\n"
        "bare = (sys.executable, '-m', 'reward_service')\n"
        "shell = f'python -m reward_service --port {1}'\n"
        "app = 'reward_service.app:create_app'\n"
        "joined = os.path.join('src', 'reward_service')\n"
        "made = Path('reward_service')\n"
        "windows = 'reward_service\\\\settings.py'\n"
        "table = {'reward_service': 'http://x'}\n"  # a key that merely names the service
        "other = ['my_reward_service/x', 'a.reward_service.b', 'reward_services', '-m', 'trainer.cli']\n"
        "flag = 'reward_service' in table\n"
        "import importlib; mod = importlib.import_module('reward_service.arms')\n"  # an import, once
    )
    found = [(ref.line, ref.kind, ref.text) for ref in rule.private_refs(source)]
    assert found == [
        (5, "string", "reward_service"),
        (6, "string", "reward_service/regime_w/toy_variants"),
        (7, "string", "reward_service.cli"),
        (8, "string", "reward_service"),
        (9, "string", "python -m reward_service --port "),
        (10, "string", "reward_service.app:create_app"),
        (11, "string", "reward_service"),
        (12, "string", "reward_service"),
        (13, "string", "reward_service\\settings.py"),
        (17, "import", "reward_service.arms"),
    ]


def test_a_reference_in_a_long_docstring_is_shown_where_it_is() -> None:
    words = " ".join(f"word{i}" for i in range(40))
    source = f'def f() -> None:\n    """{words}\n\n    the scorer lives in reward_service/regime_w/scorer.py\n    {words}"""\n'
    [ref] = rule.private_refs(source)
    assert (ref.line, ref.kind) == (4, "string")
    # 30 characters either side of the match, newlines as spaces
    assert ref.text == "...rd39      the scorer lives in reward_service/regime_w/scorer.py     word0 w..."


def test_the_check_fails_on_the_toy_loop_as_it_was_in_trainer(tmp_path: Path) -> None:
    """``trainer/toy/loop.py`` and ``ablation.py`` as they were before the move (from git), checked as a
    ``trainer/`` of their own: the check names their string paths, where the import check found nothing."""
    if not (ROOT / ".git").exists():
        pytest.skip("needs the repository's git history (a clone, not an export)")
    (tmp_path / "trainer" / "toy").mkdir(parents=True)
    for name in ("loop.py", "ablation.py"):
        shown = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{BEFORE_MOVE}:trainer/toy/{name}"],
            capture_output=True,
            text=True,
            timeout=HANG_GUARD_S,
            check=True,
        )
        (tmp_path / "trainer" / "toy" / name).write_text(shown.stdout, encoding="utf-8")
    assert private_references(tmp_path, "trainer") == [
        "trainer/toy/ablation.py:80: string 'reward_service/regime_w/toy_variants'",
        "trainer/toy/ablation.py:238: string 'reward_service'",
        "trainer/toy/loop.py:51: string 'reward_service'",
        "trainer/toy/loop.py:113: string 'reward_service.cli'",
    ]
    imports = [
        m for p in python_files(tmp_path, "trainer") for _, m in imported_modules(p.read_text()) if is_private(m)
    ]
    assert imports == []  # what the import-only check of before let through


def test_shared_schemas_needs_only_stdlib_and_pydantic() -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    offenders = []
    for path in python_files(ROOT, "shared_schemas"):
        for line, module in imported_modules(path.read_text(encoding="utf-8")):
            top = module.split(".")[0]
            if top not in stdlib and top not in SHARED_ALLOWED:
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    assert not offenders, "shared_schemas may import only the standard library and pydantic:\n" + "\n".join(offenders)
