"""The compose file against the Compose specification's schema, the manifests against Kubernetes'
schemas (strict: unknown fields fail). Both tools work offline (see shared/NOTES.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from . import files

# The oldest Kubernetes the manifests claim (native sidecars and the preStop sleep action are
# on by default from 1.30) and the newest schema the validator bundles.
KUBERNETES_VERSIONS = ["1.30.0", "1.31.0", "1.37.0"]


def tool(name: str) -> str:
    """A console script of the test extras, installed beside this interpreter."""
    candidate = Path(sys.executable).parent / name
    path = str(candidate) if os.access(candidate, os.X_OK) else shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found: install the test extras (pip install -e '.[test]', scripts/bootstrap does it)",
                    pytrace=False)
    return path


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_compose_file_matches_the_compose_spec():
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(files.COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_validator_rejects_an_unknown_service_key(tmp_path):
    # The check above can fail: a misspelt key in a copy of the file is refused.
    broken = tmp_path / "compose.yaml"
    broken.write_text(files.COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_periods:"))
    assert broken.read_text() != files.COMPOSE.read_text()
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken))
    assert result.returncode != 0
    assert "stop_grace_periods" in result.stdout


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version):
    paths = [str(p) for p in files.k8s_files()]
    assert len(paths) >= 4, paths
    result = run(tool("kubernetes-validate"), "--strict", "--kubernetes-version", version, *paths)
    assert result.returncode == 0, result.stdout + result.stderr
    # Every document was checked (the tool names each one it passed).
    assert result.stdout.count("passed for resource") + result.stderr.count("passed for resource") == len(files.k8s_objects())


def test_kubernetes_validator_rejects_unknown_fields_and_wrong_types(tmp_path):
    source = (files.K8S_DIR / "30-enforcer.yaml").read_text()
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(source.replace("imagePullPolicy: IfNotPresent", "imagePullPolicy: IfNotPresent\n          pullPolicy: Always", 1))
    wrong_type = tmp_path / "wrong-type.yaml"
    wrong_type.write_text(source.replace("containerPort: 4000", 'containerPort: "4000"'))
    for path in (unknown, wrong_type):
        assert path.read_text() != source
        result = run(tool("kubernetes-validate"), "--strict", "--kubernetes-version", "1.31.0", str(path))
        assert result.returncode != 0, path.name
