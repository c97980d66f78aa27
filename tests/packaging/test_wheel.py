"""regate as its users install it: the wheel, pip-installed into a fresh virtualenv outside the
checkout, run from another directory (no source tree anywhere on the import path)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
import urllib3

from regate.common.version import __version__
from tests.support.net import free_port, wait_for_http

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "regate.yaml"
SERVE_ENV = {
    "LITELLM_MASTER_KEY": "sk-wheel-master-key-0123456789",
    "OPENAI_API_BASE": "http://127.0.0.1:9/v1",
    "OPENAI_API_KEY": "sk-wheel-upstream",
    "AZURE_API_BASE": "http://127.0.0.1:9",
    "AZURE_API_KEY": "sk-wheel-upstream",
}
# What `compile`, `serve`, `bundle serve`, `demo`, `dev` and the audit tools read besides Python modules.
PACKAGE_DATA = (
    "regate/schemas/config.schema.json",
    "regate/schemas/input.schema.json",
    "regate/templates/authz.rego.j2",
    "regate/templates/budgets.rego.j2",
    "regate/compiler/litellm_route_groups.json",
    "regate/enforcer/migrations/v001_initial.py",
    "regate/enforcer/migrations/v002_usage_estimated.py",
    "regate/enforcer/migrations/v003_alias_indexes.py",
    "regate/enforcer/migrations/v004_limits.py",
    "regate/enforcer/model_prices.json",
    "regate/examples/regate.yaml",
    "regate/devtools/model_stub.py",
    "regate/audit/batch.rego",
)


class Installed:
    """A virtualenv with the wheel installed, and a working directory far from the checkout."""

    def __init__(self, base: Path, wheel: Path):
        self.wheel = wheel
        self.venv = base / "venv"
        self.cwd = base / "elsewhere"
        self.cwd.mkdir()
        self.bin = self.venv / "bin"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "REGATE_"))}
        env["PATH"] = f"{self.bin}:{env.get('PATH', '')}"
        return {**env, **extra}

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=self.cwd, env=env or self.env(), capture_output=True, text=True,
                              timeout=timeout)


@pytest.fixture(scope="module")
def installed(opa_bin) -> Installed:
    # Not under the checkout, and not under pytest's tmp dir (which lives under it only by chance).
    base = Path(tempfile.mkdtemp(prefix="regate-wheel-"))
    try:
        # Built from a copy of the checkout's files (tracked or new, not ignored): setuptools keeps a
        # build/ folder in the source tree, whose leftovers must not slip into the wheel.
        source = base / "source"
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, check=True).stdout.decode().split("\0")
        for rel in filter(None, listed):
            if (ROOT / rel).is_file():
                (source / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, source / rel)
        dist = base / "dist"
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "--wheel-dir", str(dist), str(source)], check=True, timeout=300)
        (wheel,) = dist.glob("regate-*.whl")
        python = getattr(sys, "_base_executable", None) or shutil.which("python3")
        subprocess.run([python, "-m", "venv", str(base / "venv")], check=True, timeout=120)
        # pip resolves the dependencies from the wheel's own metadata, as for any user.
        subprocess.run([str(base / "venv/bin/pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
                       check=True, timeout=600)
        yield Installed(base, wheel)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_wheel_holds_the_regate_package_and_its_data_only(installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"regate", f"regate-{__version__}.dist-info"}, tops
    missing = [path for path in PACKAGE_DATA if path not in names]
    assert not missing, missing
    assert {n for n in names if n.startswith("regate/templates/")} == {
        f"regate/templates/{p.name}" for p in (ROOT / "templates").glob("*.j2")}


def test_installed_regate_compiles_outside_the_checkout(installed, opa_bin):
    assert installed.run("regate", "--version").stdout.strip() == f"regate {__version__}"
    imports = installed.run("python", "-c", "import regate.compiler, regate.enforcer.app, regate.devtools.demo; "
                                            "print(regate.compiler.__file__)")
    assert imports.returncode == 0, imports.stderr
    assert imports.stdout.startswith(str(installed.venv)), imports.stdout
    for name in ("compiler", "enforcer", "common", "devtools", "audit"):
        absent = installed.run("python", "-c", f"import {name}")
        assert absent.returncode == 1 and f"No module named '{name}'" in absent.stderr, (name, absent.stderr)

    shutil.copy(EXAMPLE, installed.cwd / "config.yaml")
    compiled = installed.run("regate", "compile", "config.yaml", "-o", "bundle.tar.gz")
    assert compiled.returncode == 0, compiled.stderr
    bundle = str(installed.cwd / "bundle.tar.gz")
    for check in (["check", "--strict", "--bundle", bundle], ["test", "--bundle", bundle]):
        result = subprocess.run([opa_bin, *check], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr

    (installed.cwd / "broken.yaml").write_text("general_settings:\n  master_kee: sk-x\n")
    broken = installed.run("regate", "compile", "broken.yaml")
    assert broken.returncode == 2
    assert broken.stderr.startswith("broken.yaml:2:3: unknown key 'master_kee'"), broken.stderr


def test_installed_audit_tools(installed, opa_bin):
    shutil.copy(EXAMPLE, installed.cwd / "audited.yaml")
    env = installed.env(REGATE_OPA_BIN=opa_bin)
    checked = installed.run("regate", "compile", "audited.yaml", "--check", "-o", "checked.tar.gz", env=env, timeout=300)
    assert checked.returncode == 0, checked.stderr
    assert "coverage 100.0% (threshold 100%)" in checked.stderr
    matrix = installed.run("regate", "matrix", "audited.yaml", "--format", "json", env=env, timeout=300)
    assert matrix.returncode == 0, matrix.stderr
    assert json.loads(matrix.stdout)["principals"][0]["label"] == "master key"
    diff = installed.run("regate", "diff", "audited.yaml", "audited.yaml", env=env, timeout=300)
    assert (diff.returncode, diff.stdout.split(" (")[0]) == (0, "no access changes between audited.yaml and audited.yaml")


def test_installed_regate_serves_with_a_managed_opa(installed, opa_bin):
    shutil.copy(EXAMPLE, installed.cwd / "config.yaml")
    port = free_port()
    env = installed.env(REGATE_OPA_BIN=opa_bin, REGATE_DATA_DIR=str(installed.cwd / "data"), **SERVE_ENV)
    proc = subprocess.Popen(["regate", "serve", "--config", "config.yaml", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=installed.cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health/readiness", timeout=60)
        http = urllib3.PoolManager(retries=False)
        answer = http.request("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json={"model": "gpt-4o-mini"})
        assert answer.status == 401 and answer.headers["X-Regate-Reason"] == "missing_credential"
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output


def test_installed_bundle_service_and_dev_tools(installed):
    shutil.copy(EXAMPLE, installed.cwd / "config.yaml")
    port = free_port()
    proc = subprocess.Popen(["regate", "bundle", "serve", "--config", "config.yaml", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=installed.cwd, env=installed.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/bundles/regate.tar.gz", timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    token = installed.run("regate", "dev", "token", "--claim", "team_id=team-a")
    assert token.returncode == 0 and token.stdout.count(".") == 2, token.stderr
    assert (installed.cwd / ".regate/dev-idp/signing-key.pem").is_file(), "the dev key lives in the working directory"


def test_installed_demo_tours_the_flows(installed, opa_bin):
    result = installed.run("regate", "demo", "--ci", env=installed.env(REGATE_OPA_BIN=opa_bin), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All decisions as expected." in result.stdout


def test_without_opa_serve_says_how_to_get_it(installed):
    shutil.copy(EXAMPLE, installed.cwd / "config.yaml")
    env = installed.env(**SERVE_ENV, REGATE_DATA_DIR=str(installed.cwd / "data"))
    env["PATH"] = f"{installed.bin}:/usr/bin:/bin"  # no opa here
    assert not any(Path(d, "opa").exists() for d in env["PATH"].split(":"))
    result = installed.run("regate", "serve", "--config", "config.yaml", env=env, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "REGATE_OPA_BIN" in result.stderr and "go install github.com/open-policy-agent/opa@v" in result.stderr
