"""Fixtures every test layer shares. Required components are never skipped: a missing
OPA or PostgreSQL fails the run with the command that provides it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _find_opa() -> str:
    candidates = [os.environ.get("REGATE_OPA_BIN"), str(ROOT / ".cache/opa/1.22.3/opa"), shutil.which("opa")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("OPA 1.22.3 not found: run scripts/ensure-opa (scripts/test does it for you)", pytrace=False)


@pytest.fixture(scope="session")
def opa_bin() -> str:
    path = _find_opa()
    out = subprocess.run([path, "version"], capture_output=True, text=True, check=True).stdout
    if "Version: 1.22.3" not in out:
        pytest.fail(f"{path} is not OPA 1.22.3: {out.splitlines()[0]}", pytrace=False)
    return path
