"""Every generated bundle passes OPA's own tools: fmt, check --strict (with the input
schema), test, and loads into `opa run --server`."""

from __future__ import annotations

import subprocess

import pytest

from regate import compiler
from tests.support.opa import OpaServer

from .conftest import ROOT, SHIPPED

INPUT_SCHEMA = str(ROOT / "schemas" / "input.schema.json")


def _opa(opa_bin, *args) -> subprocess.CompletedProcess:
    return subprocess.run([opa_bin, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_opa_fmt_check_and_test(name, opa_bin, bundle_dirs, compiled):
    bundle = str(bundle_dirs[name])
    fmt = _opa(opa_bin, "fmt", "--fail", "--list", bundle)
    assert fmt.returncode == 0, f"not opa-fmt clean: {fmt.stdout}{fmt.stderr}"
    check = _opa(opa_bin, "check", "--strict", "--schema", INPUT_SCHEMA, "--bundle", bundle)
    assert check.returncode == 0, check.stdout + check.stderr
    test = _opa(opa_bin, "test", "--bundle", bundle, "--format", "json")
    assert test.returncode == 0, test.stdout + test.stderr
    results = [r for r in __import__("json").loads(test.stdout)]
    # The generated tests, and those of custom policies (regate/custom/*_test.rego).
    generated = sum(data.decode().count("\ntest_") for path, data in compiled[name].items() if path.endswith("_test.rego"))
    assert len(results) == generated > 0
    assert all(r.get("fail") is not True and "error" not in r for r in results)


def test_check_with_schema_rejects_unknown_input_field(opa_bin, bundle_dirs, tmp_path):
    """The input schema really constrains the policy: a typo'd input ref fails the check."""
    bundle = bundle_dirs["examples/regate"]
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(bundle), str(broken)], check=True)
    with open(broken / "regate" / "routes.rego", "a") as f:
        f.write("\n_typo if input.request.pathh == \"/\"\n")
    check = _opa(opa_bin, "check", "--strict", "--schema", INPUT_SCHEMA, "--bundle", str(broken))
    assert check.returncode != 0
    assert "undefined ref: input.request.pathh" in check.stdout + check.stderr


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_opa_server_loads_tarball(name, opa_bin, compiled, tmp_path):
    tarball = compiler.bundle.write(compiled[name], tmp_path / "bundle.tar.gz")
    with OpaServer(opa_bin, bundle=str(tarball)) as opa:
        decision = opa.decide({"request": {"method": "GET", "path": "/v1/models"}, "credential": {"type": "none"}})
        assert decision["allow"] is False
        assert decision["status"] == 401
        assert decision["reasons"] == ["missing_credential"]
        # Runtime state lives outside the bundle's roots, so OPA accepts the write.
        opa.put_state({"blocked_teams": {"t1": True}})
        status, body = opa.request("GET", "/v1/data/regate_state/blocked_teams")
        assert status == 200 and body["result"] == {"t1": True}
        # ...while writes inside the bundle's roots are refused.
        status, _ = opa.request("PUT", "/v1/data/regate/tables", {})
        assert status >= 400
