"""The module map of the repository's packages, generated from the code into docs/architecture.md.

    python scripts/module_map.py                  # the working tree -> the `after` section
    python scripts/module_map.py --rev 52eba1c    # a git revision (git ls-tree / git show, no checkout) -> `before`
    python scripts/module_map.py --check          # exit 1 when the `after` section differs from the code
    python scripts/module_map.py --rev 52eba1c --check

Per package (``PACKAGES``; one absent at a revision is left out): every module with its lines of code
(non-blank, not comment-only; docstrings count) and the first sentence of its docstring; and the import
edges between packages and their subpackages (a module at a package's top level belongs to the package,
one in ``pkg/sub/...`` to ``pkg.sub``): every absolute and relative import, also inside a function, and
``importlib.import_module("...")`` with a literal name. An edge counts the modules that import.

The map goes between ``<!-- module-map:after -->`` and ``<!-- /module-map:after -->`` (``--rev``: the
``before`` markers) of the document; the rest of it is kept.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("trainer", "reward_service", "shared_schemas", "fastgen", "experiments")
#: the longest docstring summary shown (characters); a longer one is cut at a word and ends in "…"
SUMMARY_CHARS = 110


class MapError(RuntimeError):
    """The document has no markers for the section, or git cannot read the revision."""


@dataclass(frozen=True)
class Module:
    path: str  # repository-relative, posix
    lines: int
    summary: str
    imports: frozenset[str]  # absolute module names, relative imports resolved

    @property
    def package(self) -> str:
        return self.path.split("/")[0]


@dataclass
class ModuleMap:
    modules: list[Module]
    #: every importable package of the map (``trainer``, ``trainer.stages``, ...): the folders with .py files
    packages: set[str] = field(default_factory=set)

    def unit_of_path(self, path: str) -> str:
        """``pkg`` for a module at the package's top level, ``pkg.sub`` for one under ``pkg/sub/``."""
        parts = path.split("/")
        return parts[0] if len(parts) == 2 else f"{parts[0]}.{parts[1]}"

    def unit_of_name(self, name: str) -> str | None:
        """The unit a module name imports from, or None when it is not one of the map's packages."""
        parts = name.split(".")
        if parts[0] not in {m.package for m in self.modules}:
            return None
        if len(parts) > 1 and f"{parts[0]}.{parts[1]}" in self.packages:
            return f"{parts[0]}.{parts[1]}"
        return parts[0]

    def edges(self) -> dict[tuple[str, str], int]:
        """{(from unit, to unit): how many modules of ``from`` import from ``to``}, self-edges left out."""
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for module in self.modules:
            source = self.unit_of_path(module.path)
            targets = {self.unit_of_name(name) for name in module.imports}
            for target in sorted(t for t in targets if t is not None and t != source):
                counts[(source, target)] += 1
        return dict(counts)


def lines_of_code(source: str) -> int:
    """Non-blank lines that are not only a comment (docstrings count)."""
    return sum(1 for line in source.splitlines() if line.strip() and not line.strip().startswith("#"))


def summary(tree: ast.Module) -> str:
    """The first sentence of the module docstring's first paragraph, at most ``SUMMARY_CHARS`` long."""
    doc = ast.get_docstring(tree)
    if not doc:
        return ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    sentence = re.split(r"(?<=[.!?])\s", paragraph, maxsplit=1)[0]
    if len(sentence) > SUMMARY_CHARS:
        head = sentence[: SUMMARY_CHARS - 1]
        if sentence[SUMMARY_CHARS - 1] != " ":  # the last word is cut: drop it
            head = head.rsplit(" ", 1)[0]
        sentence = head.rstrip() + "…"
    return sentence


def imports_of(tree: ast.Module, path: str) -> frozenset[str]:
    """Absolute names of everything ``path`` imports; ``from a import b`` gives ``a.b`` (``b`` may be a
    module or a subpackage); relative imports are resolved against the module's package."""
    parts = path.removesuffix(".py").split("/")
    package = parts if parts[-1] == "__init__" else parts[:-1]
    package = [p for p in package if p != "__init__"]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:  # the name itself: it may be a module or a subpackage of ``module``
                names.add(module if alias.name == "*" else f"{module}.{alias.name}".lstrip("."))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if (
                called in ("import_module", "__import__")
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                names.add(first.value)
    return frozenset(names)


def build_map(files: dict[str, str]) -> ModuleMap:
    """The map of ``{repository-relative .py path: source}``."""
    modules = []
    for path in sorted(files):
        tree = ast.parse(files[path], filename=path)
        modules.append(Module(path, lines_of_code(files[path]), summary(tree), imports_of(tree, path)))
    packages = {".".join(path.split("/")[:-1]) for path in files}
    return ModuleMap(modules, packages)


def worktree_files(root: Path = ROOT) -> dict[str, str]:
    files = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                files[path.relative_to(root).as_posix()] = path.read_text(encoding="utf-8")
    return files


def _git(*args: str, root: Path = ROOT) -> str:
    proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise MapError(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def revision_files(rev: str, root: Path = ROOT) -> dict[str, str]:
    listed = _git("ls-tree", "-r", "--name-only", rev, "--", *PACKAGES, root=root).splitlines()
    return {path: _git("show", f"{rev}:{path}", root=root) for path in listed if path.endswith(".py")}


def _cell(text: str) -> str:
    return text.replace("|", "\\|") or "—"


def render(module_map: ModuleMap, source: str) -> str:
    """The markdown of the map; ``source`` names what it was generated from (a command line)."""
    by_package: dict[str, list[Module]] = defaultdict(list)
    for module in module_map.modules:
        by_package[module.package].append(module)
    present = [p for p in PACKAGES if p in by_package]
    edges = module_map.edges()
    out = [
        f"_Generated by `{source}`; do not edit by hand. Lines: lines of code (non-blank, not comment-only)._",
        "",
        "| package | modules | lines | imports from |",
        "| --- | ---: | ---: | --- |",
    ]
    for package in present:
        targets = sorted({t.split(".")[0] for (s, t) in edges if s.split(".")[0] == package} - {package})
        lines = sum(m.lines for m in by_package[package])
        out.append(
            f"| `{package}/` | {len(by_package[package])} | {lines:,} | {', '.join(f'`{t}`' for t in targets) or '—'} |"
        )
    out += [
        "",
        "Import edges (a module at a package's top level belongs to the package; `modules`: how many import):",
        "",
    ]
    out += ["| from | to | modules |", "| --- | --- | ---: |"]
    crossing = sorted(edges, key=lambda e: (e[0].split(".")[0] == e[1].split(".")[0], e))
    out += [f"| `{s}` | `{t}` | {edges[(s, t)]} |" for s, t in crossing]
    for package in present:
        modules = by_package[package]
        out += [
            "",
            f"<details><summary><code>{package}/</code>: {len(modules)} modules, "
            f"{sum(m.lines for m in modules):,} lines</summary>",
            "",
            "| module | lines | summary |",
            "| --- | ---: | --- |",
        ]
        out += [f"| `{m.path}` | {m.lines:,} | {_cell(m.summary)} |" for m in modules]
        out += ["", "</details>"]
    return "\n".join(out) + "\n"


def markers(section: str) -> tuple[str, str]:
    return f"<!-- module-map:{section} -->", f"<!-- /module-map:{section} -->"


def section_of(doc: str, section: str) -> str:
    start, end = markers(section)
    if doc.count(start) != 1 or doc.count(end) != 1 or doc.index(start) > doc.index(end):
        raise MapError(f"the document needs exactly one {start} ... {end}")
    return doc[doc.index(start) + len(start) : doc.index(end)].strip("\n") + "\n"


def with_section(doc: str, section: str, body: str) -> str:
    section_of(doc, section)  # the markers are there, once
    start, end = markers(section)
    return doc[: doc.index(start) + len(start)] + "\n" + body + doc[doc.index(end) :]


def generate(rev: str | None, root: Path = ROOT) -> tuple[str, str]:
    """(section, rendered map) of the working tree (``after``) or of a git revision (``before``)."""
    if rev is None:
        return "after", render(build_map(worktree_files(root)), "python scripts/module_map.py")
    short = _git("rev-parse", "--short", f"{rev}^{{commit}}", root=root).strip()
    return "before", render(build_map(revision_files(short, root)), f"python scripts/module_map.py --rev {short}")


def main(argv: list[str] | None = None, say: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(prog="module_map.py", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rev", help="map this git revision into the `before` section (default: the working tree)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when the section is out of date")
    parser.add_argument("--doc", type=Path, default=DOC, help="the document with the markers (docs/architecture.md)")
    args = parser.parse_args(argv)
    try:
        section, body = generate(args.rev)
        doc = args.doc.read_text(encoding="utf-8")
        if args.check:
            if section_of(doc, section) != body:
                say(
                    f"{args.doc.name}: the `{section}` module map differs from the code; run: python scripts/module_map.py"
                    + (f" --rev {args.rev}" if args.rev else "")
                )
                return 1
            say(f"{args.doc.name}: the `{section}` module map is up to date")
            return 0
        updated = with_section(doc, section, body)
        if updated != doc:
            args.doc.write_text(updated, encoding="utf-8")
        say(f"{args.doc.name}: `{section}` module map written ({body.count(chr(10))} lines)")
        return 0
    except MapError as exc:
        print(f"module_map.py: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
