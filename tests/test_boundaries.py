"""DESIGN §8: ``trainer`` and ``shared_schemas`` never import ``reward_service``, and
``shared_schemas`` depends on the standard library and pydantic only. Checked on the source (AST)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRIVATE = "reward_service"
SHARED_ALLOWED = {"pydantic", "shared_schemas"}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) for every absolute import, ``importlib.import_module("...")`` and
    ``__import__("...")`` with a literal name in ``source``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if (
                name in ("import_module", "__import__")
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                found.append((node.lineno, first.value))
    return found


def python_files(package: str) -> list[Path]:
    files = sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)
    assert files, f"no .py files under {package}/"
    return files


def is_private(module: str) -> bool:
    return module == PRIVATE or module.startswith(PRIVATE + ".")


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
        for path in python_files("fastgen")
        for line, module in imported_modules(path.read_text(encoding="utf-8"))
        if module.split(".")[0] in ("trainer", "reward_service", "shared_schemas")
    ]
    assert not offenders, "fastgen must stay independent of both sides:\n" + "\n".join(offenders)


@pytest.mark.parametrize("package", ["trainer", "shared_schemas"])
def test_never_imports_reward_service(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in python_files(package)
        for line, module in imported_modules(path.read_text(encoding="utf-8"))
        if is_private(module)
    ]
    assert not offenders, f"{package} must reach reward_service over HTTP only:\n" + "\n".join(offenders)


def test_shared_schemas_needs_only_stdlib_and_pydantic() -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    offenders = []
    for path in python_files("shared_schemas"):
        for line, module in imported_modules(path.read_text(encoding="utf-8")):
            top = module.split(".")[0]
            if top not in stdlib and top not in SHARED_ALLOWED:
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    assert not offenders, "shared_schemas may import only the standard library and pydantic:\n" + "\n".join(offenders)
