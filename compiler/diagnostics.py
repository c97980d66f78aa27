"""Located diagnostics: `file:line:col: message (at path) [code]`."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

Path = tuple  # a config path: keys (str) and list indexes (int)


def format_path(path: Path) -> str:
    """`("general_settings", "litellm_jwtauth", "team_allowed_routes", 2)` → `general_settings.litellm_jwtauth.team_allowed_routes[2]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem (or warning) in a config, with its position and a stable code."""

    line: int
    col: int
    message: str
    code: str
    file: str = ""
    path: Path = ()
    severity: str = "error"

    def __str__(self) -> str:
        where = f" (at {format_path(self.path)})" if self.path else ""
        kind = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}:{self.col}: {kind}{self.message}{where} [{self.code}]"


def closest(word: str, candidates, cutoff: float = 0.6) -> str | None:
    """The candidate most like `word`, if any is at least `cutoff` alike."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=cutoff)
    return matches[0] if matches else None


def did_you_mean(word: str, candidates) -> str:
    """` (did you mean 'x'?)` for the closest candidate, or an empty string."""
    match = closest(word, candidates)
    return f" (did you mean '{match}'?)" if match else ""
