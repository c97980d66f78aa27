"""OPA's decision log as OPA writes it to its console (one JSON object per line)."""

from __future__ import annotations

import json
from collections.abc import Iterable


def decisions(lines: Iterable[str]) -> dict[str, dict]:
    """The "Decision Log" entries among `lines`, by decision id."""
    entries = {}
    for raw in list(lines):
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("msg") == "Decision Log":
            entries[entry["decision_id"]] = entry
    return entries
