"""What in a Python source names the private package ``reward_service``: imports and string paths.

The one definition of the boundary rule, used by ``tests/test_boundaries.py`` (the repository's ``trainer/``
and ``shared_schemas/``) and by ``scripts/build-trainer-dist`` (the staged copy and both archives of the
published wheel); both load this file by its path (``scripts/`` is no package).

Two kinds of reference, read from the AST:

- ``import``: an absolute ``import`` / ``from ... import`` of the package or a submodule, and
  ``importlib.import_module("...")`` / ``__import__("...")`` with a literal name;
- ``string``: a string literal (docstrings and f-string parts included) that is a path into the package, a
  dotted module path or a ``-m`` command of it (``"reward_service/regime_w/x.toml"``, ``"reward_service.cli"``,
  ``"reward_service.app:create_app"``, ``"python -m reward_service"``), or the package's bare name where it
  builds a path or an argv: an operand of ``/``, an argument of ``Path(...)`` / ``joinpath(...)`` /
  ``os.path.join(...)``, the word after ``"-m"`` in a list or tuple. A string that merely mentions the
  service by name (a dict key, prose such as "never imports ``reward_service``") is not a reference.
"""

from __future__ import annotations

import ast
import re
from typing import NamedTuple

PRIVATE = "reward_service"
#: a path into the package, a dotted module path, or a ``-m`` command of it, inside a longer string
_PATH = re.compile(rf"(?<![\w.]){PRIVATE}(?:[/\\]|\.[A-Za-z_])|-m\s+{PRIVATE}\b")
#: calls whose string arguments are path segments
_PATH_CALLS = {"Path", "PurePath", "PosixPath", "PurePosixPath", "WindowsPath", "joinpath", "join"}


class Ref(NamedTuple):
    """One reference: its line, ``import`` or ``string``, and the module or the literal text."""

    line: int
    kind: str
    text: str

    def __str__(self) -> str:
        return f"{self.line}: {self.kind} {self.text!r}"


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) for every absolute import, ``importlib.import_module("...")`` and ``__import__("...")``
    with a literal name in ``source``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and _called_name(node) in ("import_module", "__import__"):
            name = _str_value(node.args[0])
            if name is not None:
                found.append((node.lineno, name))
    return found


def is_private(module: str) -> bool:
    return module == PRIVATE or module.startswith(PRIVATE + ".")


def string_paths(source: str) -> list[tuple[int, str]]:
    """(line, literal) for every string literal of ``source`` that is a path, module path or command of the
    private package (see the module docstring); of a long literal, the words around the reference."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        text = _str_value(node)
        if text is None:
            continue
        line = getattr(node, "lineno", 0)
        match = _PATH.search(text)
        if match is not None:
            if getattr(node, "end_lineno", line) > line:  # a multi-line literal: the line of the match
                line += text.count("\n", 0, match.start())
            found.append((line, _excerpt(text, match.start(), match.end())))
        elif text == PRIVATE and _builds_path_or_argv(node, parents):
            found.append((line, text))
    return sorted(found)


def private_refs(source: str) -> list[Ref]:
    """Every reference of ``source`` to the private package, imports and string paths, in line order."""
    refs = [Ref(line, "import", module) for line, module in imported_modules(source) if is_private(module)]
    imports = {(ref.line, ref.text) for ref in refs}  # ``import_module("...")``: an import, not also a string
    refs += [Ref(line, "string", text) for line, text in string_paths(source) if (line, text) not in imports]
    return sorted(refs)


def _excerpt(text: str, start: int, end: int, width: int = 30) -> str:
    """The literal, or where it is long (a docstring), the words around the match."""
    if len(text) <= 2 * width + (end - start):
        return text
    left, right = max(0, start - width), min(len(text), end + width)
    return ("..." if left else "") + text[left:right].replace("\n", " ") + ("..." if right < len(text) else "")


def _str_value(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _called_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _builds_path_or_argv(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Whether the bare package name is a path segment or the module of a ``-m`` argv."""
    parent = parents.get(node)
    if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div):
        return True
    if isinstance(parent, ast.Call) and node in parent.args and _called_name(parent) in _PATH_CALLS:
        return True
    if isinstance(parent, (ast.List, ast.Tuple)):
        index = next(i for i, elt in enumerate(parent.elts) if elt is node)
        return index > 0 and _str_value(parent.elts[index - 1]) == "-m"
    return False
