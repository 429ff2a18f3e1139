"""Claims of README.md and docs/DESIGN.md about the service's defaults, checked against ``Settings``."""

from __future__ import annotations

import re
from pathlib import Path

from reward_service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
#: a configuration-table row: | `NAME` (/ `NAME2`) | flag | default | meaning |
_ROW = re.compile(r"^\| `([A-Z_]+)`(?: / `[A-Z_]+`)? \|[^|]*\| ([^|]*) \|", re.M)


def _as_documented(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_the_configuration_table_states_the_settings_defaults() -> None:
    fields = Settings.model_fields
    compared = 0
    for name, cell in _ROW.findall((ROOT / "README.md").read_text(encoding="utf-8")):
        field = fields.get(name.lower())
        documented = cell.strip().strip("`")
        if field is None or not re.fullmatch(r"—|true|false|-?[\d.]+|[\w./-]+", documented):
            continue  # a default in words ("4 for `openai`, else 1"): the row's own test says it
        assert documented == _as_documented(field.default), f"README row {name}: {cell.strip()!r}"
        compared += 1
    assert compared >= 30, compared


def test_design_names_the_default_backend() -> None:
    text = (ROOT / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    section = text[text.index("## 4. Generation backends") :]
    section = section[: section.index("\n## ")]
    backends = re.findall(r"^- `(\w+)` — (.*)$", section, re.M)
    assert {name for name, _ in backends} == {"hf", "openai", "vllm", "provided"}
    said_default = [name for name, line in backends if "default" in line]
    assert said_default == [Settings.model_fields["backend"].default], said_default
