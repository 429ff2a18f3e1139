"""Redaction of the private arm prompts from text that came back from outside (an upstream's error
body, a third-party exception), before it may reach a debug log.

Every run of ``min_run`` (8) or more characters of ``text`` that also occurs in an arm prompt (the
system prompts and the instruction templates around ``{question}``, raw or JSON-escaped, as an
upstream echoing its input would write them) is replaced by ``[redacted]``, so neither a whole
prompt line nor a fragment of one survives, whatever cut or escaping the upstream applied.
"""

from __future__ import annotations

import json

from reward_service.regime_w.config import RegimeWConfig

REDACTED = "[redacted]"
#: the most characters of foreign text a debug log line carries
MAX_DETAIL_CHARS = 2000


def prompt_pieces(config: RegimeWConfig) -> list[str]:
    """The private text of every arm: system prompt and instruction template parts, line by line."""
    pieces: list[str] = []
    for spec in config.arms:
        for template in (spec.system or "", *spec.instruction.split("{question}")):
            pieces.extend(line.strip() for line in template.splitlines() if line.strip())
    return pieces


class Redactor:
    def __init__(self, config: RegimeWConfig, min_run: int = 8) -> None:
        self.min_run = min_run
        pieces = prompt_pieces(config)
        escaped = [json.dumps(p)[1:-1] for p in pieces] + [json.dumps(p, ensure_ascii=False)[1:-1] for p in pieces]
        self._corpus = "\n".join(pieces + escaped)

    def redact(self, text: str) -> str:
        text = text[:MAX_DETAIL_CHARS]
        n = self.min_run
        hidden = bytearray(len(text))
        for i in range(len(text) - n + 1):
            if text[i : i + n] in self._corpus:
                hidden[i : i + n] = b"\x01" * n
        out: list[str] = []
        i = 0
        while i < len(text):
            if hidden[i]:
                while i < len(text) and hidden[i]:
                    i += 1
                out.append(REDACTED)
            else:
                out.append(text[i])
                i += 1
        return "".join(out)
