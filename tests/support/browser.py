"""Headless chromium for static pages: a screenshot, or the DOM after the page's scripts ran.

The binary comes from REGATE_CHROMIUM_BIN (scripts/ensure-chromium, which scripts/test runs),
else `chromium` on PATH; without one the test fails with the command that installs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = ("--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--hide-scrollbars")


def chromium_bin() -> str:
    path = os.environ.get("REGATE_CHROMIUM_BIN") or shutil.which("chromium")
    if not path:
        pytest.fail("chromium is not installed: run scripts/ensure-chromium (scripts/test does it for you)",
                    pytrace=False)
    return path


def _run(url: str, *args: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="regate-chromium-")
    try:
        sandbox = ("--no-sandbox",) if os.geteuid() == 0 else ()  # chromium refuses to sandbox as root
        return subprocess.run([chromium_bin(), *FLAGS, *sandbox, f"--user-data-dir={profile}", *args, url],
                              capture_output=True, timeout=120, check=True)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(page: Path, out: Path, *, fragment: str = "", size: str = "1400,1000") -> bytes:
    _run(page.resolve().as_uri() + fragment, f"--window-size={size}", f"--screenshot={out}")
    return out.read_bytes()


def dom(page: Path, *, fragment: str = "") -> str:
    """The document after its scripts ran (chromium --dump-dom)."""
    return _run(page.resolve().as_uri() + fragment, "--virtual-time-budget=5000", "--dump-dom").stdout.decode()
