"""Generated bundles match the committed golden files byte for byte.

Regenerate after an intended change with:
    REGATE_UPDATE_GOLDEN=1 scripts/test tests/compiler/test_golden.py
and review the diff of tests/golden/expected/ like any other code change.
"""

from __future__ import annotations

import difflib
import os
import shutil

import pytest

from .conftest import GOLDEN, SHIPPED

EXPECTED = GOLDEN / "expected"
REGENERATE = "REGATE_UPDATE_GOLDEN=1 scripts/test tests/compiler/test_golden.py"


def _read_tree(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_bundle_matches_golden(name, compiled):
    files = compiled[name]
    expected_dir = EXPECTED / name
    if os.environ.get("REGATE_UPDATE_GOLDEN") == "1":
        shutil.rmtree(expected_dir, ignore_errors=True)
        for path, data in files.items():
            (expected_dir / path).parent.mkdir(parents=True, exist_ok=True)
            (expected_dir / path).write_bytes(data)
    assert expected_dir.is_dir(), f"no golden files for {name}; create them with: {REGENERATE}"
    expected = _read_tree(expected_dir)
    problems = []
    for path in sorted(set(files) | set(expected)):
        if path not in expected:
            problems.append(f"unexpected new file {path}")
        elif path not in files:
            problems.append(f"missing file {path}")
        elif files[path] != expected[path]:
            diff = difflib.unified_diff(
                expected[path].decode().splitlines(), files[path].decode().splitlines(),
                f"golden/{name}/{path}", f"generated/{path}", lineterm="", n=2,
            )
            problems.append("\n".join(list(diff)[:80]))
    assert not problems, "\n\n".join(problems) + f"\n\nIf the change is intended, regenerate with:\n    {REGENERATE}"


def test_every_golden_dir_has_a_config():
    stale = sorted(
        p.relative_to(EXPECTED).as_posix()
        for p in EXPECTED.glob("*/*")
        if p.is_dir() and p.relative_to(EXPECTED).as_posix() not in SHIPPED
    )
    assert not stale, f"golden files without a config: {stale}"
