"""Shared fixtures for compiler tests: every config the project ships, compiled once."""

from __future__ import annotations

from pathlib import Path

import pytest

from regate import compiler
from tests.support.opa import OpaServer

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"


def shipped_configs() -> dict[str, Path]:
    """Every example and golden case, keyed by its golden name (group/stem)."""
    configs = {}
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        group = path.parent.relative_to(ROOT / "examples").as_posix()
        name = f"examples/{path.stem}" if group == "." else f"{group}/{path.stem}"
        configs[name] = path
    for path in sorted((GOLDEN / "cases").glob("*.yaml")):
        configs[f"cases/{path.stem}"] = path
    return configs


SHIPPED = shipped_configs()


@pytest.fixture(scope="session")
def compiled() -> dict[str, dict[str, bytes]]:
    """Bundle files per shipped config."""
    return {name: compiler.bundle_files(compiler.load_config(path)) for name, path in SHIPPED.items()}


@pytest.fixture(scope="session")
def bundle_dirs(compiled, tmp_path_factory) -> dict[str, Path]:
    """Each shipped config's bundle written as a directory, for OPA's command line."""
    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for name, files in compiled.items():
        out[name] = compiler.bundle.write(files, root / name.replace("/", "__"))
    return out


STATE = {"blocked_teams": {"blocked-team": True}, "sync_id": "test"}


@pytest.fixture(scope="module")
def opa_for(opa_bin, compiled, tmp_path_factory):
    """opa_for(name): a real OPA serving the shipped config's bundle, with STATE loaded (one per module)."""
    servers: dict[str, OpaServer] = {}

    def get(name: str) -> OpaServer:
        if name not in servers:
            out = tmp_path_factory.mktemp("decisions") / "bundle.tar.gz"
            compiler.bundle.write(compiled[name], out)
            servers[name] = OpaServer(opa_bin, bundle=str(out)).start()
            servers[name].put_state(STATE)
        return servers[name]

    yield get
    for server in servers.values():
        server.stop()
