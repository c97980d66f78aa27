"""Static checks of the Python sources: pyflakes' errors (unused or undefined names) and sorted
imports, with ruff at the version pyproject.toml pins (settings in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F,I", "--no-cache", "."],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr + "\n(fix: .venv/bin/ruff check --select F,I --fix .)"
