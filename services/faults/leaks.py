"""Secrets that must never reach a log line: card tokens, passwords, private keys (PEM,
device and till keys, the scheme's keys), session tokens. `find_leaks` names the file,
the line and the kind of secret, never the secret itself."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

CARD_TOKEN_LIKE = re.compile(r"(?:sc|tok|bk)_[A-Za-z0-9_\-]{6,}")
PEM_MARKER = re.compile(r"-----(?:BEGIN|END) [A-Z0-9 ]*-----")


@dataclass(frozen=True, slots=True)
class Leak:
    """A secret of kind `kind` on line `line_no` (1-based) of `path`."""

    path: Path
    line_no: int
    kind: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line_no}: {self.kind}"


@dataclass
class Secrets:
    """What to look for: card tokens (exact tokens, found by their shape), and literal
    strings by kind (passwords, session tokens, key material)."""

    card_tokens: set[str] = field(default_factory=set)
    literals: dict[str, str] = field(default_factory=dict)  # secret -> kind

    def add(self, kind: str, values: Iterable[str]) -> None:
        """Literal secrets of one kind (empty strings and very short ones are ignored)."""
        for value in values:
            if len(value) >= 8:
                self.literals[value] = kind

    def add_key_files(self, kind: str, paths: Iterable[Path]) -> None:
        """The base64 body lines of PEM private key files."""
        for path in paths:
            body = [ln for ln in path.read_text().splitlines() if ln and "-----" not in ln]
            self.add(kind, body)

    def kinds_in(self, line: str, literal: re.Pattern[str] | None) -> list[str]:
        """The kinds of secret found on one line."""
        found = []
        if any(m in self.card_tokens for m in CARD_TOKEN_LIKE.findall(line)):
            found.append("card token")
        if PEM_MARKER.search(line):
            found.append("PEM block")
        if literal is not None:
            found += sorted({self.literals[m] for m in literal.findall(line)})
        return found


def find_leaks(paths: Iterable[Path], secrets: Secrets) -> list[Leak]:
    """Every line of `paths` holding a secret, in file and line order."""
    literal = None
    if secrets.literals:
        ordered = sorted(secrets.literals, key=len, reverse=True)
        literal = re.compile("|".join(re.escape(s) for s in ordered))
    leaks = []
    for path in sorted(paths):
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line_no, line in enumerate(lines, 1):
                leaks += [Leak(path, line_no, kind) for kind in secrets.kinds_in(line, literal)]
    return leaks
