"""Where the compiler's data files live: schemas/ and templates/ at the project root."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def schema_path(name: str) -> Path:
    return ROOT / "schemas" / name


def templates_dir() -> Path:
    return ROOT / "templates"
