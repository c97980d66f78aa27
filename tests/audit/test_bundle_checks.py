"""`regate compile --check` / `regate test`: every generated bundle passes opa fmt, opa check
--strict, its own tests with full coverage, and documents every package, entrypoint and check;
a bundle that misses any of it is caught, with what is missing."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from regate import compiler
from regate.audit import bundle_checks
from regate.audit.evaluate import BATCH_MODULE

from ..compiler.conftest import ROOT, SHIPPED

EXAMPLE = ROOT / "examples" / "regate.yaml"


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory, opa_bin):
    return compiler.bundle.write(compiler.bundle_files(compiler.load_config(EXAMPLE)),
                                 tmp_path_factory.mktemp("check") / "bundle")


@pytest.fixture
def copy(example_dir, tmp_path):
    """A copy of the example bundle to break."""
    target = tmp_path / "bundle"
    shutil.copytree(example_dir, target)
    return target


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_bundle_passes_every_check(name, opa_bin):
    files = compiler.bundle_files(compiler.load_config(SHIPPED[name]))
    report = bundle_checks.check_files(files, opa_bin)
    assert report.problems == [] and report.failed == []
    assert report.coverage == 100.0, report.uncovered
    # the generated tests, and a custom policy's own
    assert report.tests == sum(text.decode().count("\ntest_") for path, text in files.items()
                               if path.endswith("_test.rego"))
    assert files["regate/authz_test.rego"].decode().count("\ntest_") > 40
    assert report.ok()


@pytest.mark.parametrize("name", ["examples/regate", "litellm-docs/custom-validate"])
def test_the_audit_batch_module_is_clean(name, opa_bin, tmp_path):
    fmt = subprocess.run([opa_bin, "fmt", "--list", "--fail", str(BATCH_MODULE)], capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout
    bundle = compiler.bundle.write(compiler.bundle_files(compiler.load_config(SHIPPED[name])), tmp_path / "bundle")
    check = subprocess.run([opa_bin, "check", "--strict", str(bundle), str(BATCH_MODULE)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_an_uncovered_rule_fails_the_threshold(copy, opa_bin):
    with open(copy / "regate" / "roles.rego", "a") as f:
        f.write('\nauditor if input.credential.type == "auditor"\n')
    report = bundle_checks.check_bundle(copy, opa_bin)
    assert report.problems == [] and report.failed == []
    assert report.coverage < 100 and not report.ok()
    line = (copy / "regate" / "roles.rego").read_text().splitlines().index('auditor if input.credential.type == "auditor"') + 1
    assert report.uncovered == [f"regate/roles.rego:{line}"]
    assert report.ok(min_coverage=report.coverage)
    assert f"  not covered: regate/roles.rego:{line}" in report.summary()


def test_a_failing_test_is_named(copy, opa_bin):
    path = copy / "regate" / "authz_test.rego"
    path.write_text(path.read_text().replace("d.status == 401", "d.status == 402", 1))
    report = bundle_checks.check_bundle(copy, opa_bin)
    assert report.failed == ["data.regate.authz_test.test_missing_credential_is_401"]
    assert not report.ok()


def test_unformatted_and_sloppy_rego_is_found(copy, opa_bin):
    path = copy / "regate" / "users.rego"
    path.write_text(path.read_text() + "\n_sloppy   if {\n  x := 1\n}\n")
    report = bundle_checks.check_bundle(copy, opa_bin)
    assert "opa fmt: regate/users.rego is not formatted" in report.problems
    assert any(p.startswith("opa check --strict: ") and "regate/users.rego:" in p and "assigned var x unused" in p
               for p in report.problems), report.problems


def test_undocumented_packages_entrypoints_and_checks_are_found(copy, opa_bin):
    authz = copy / "regate" / "authz.rego"
    text = authz.read_text()
    # the route check loses its annotation, the entrypoint its description
    start = text.index("# METADATA\n# title: Route not allowed")
    text = text[:start] + text[text.index('_access_denials["route_not_allowed"]', start):]
    described = text.index("# title: Decision\n")
    text = text[:described] + "# title: Decision\n" + text[text.index("# entrypoint: true", described):]
    authz.write_text(text)
    (copy / "regate" / "extra.rego").write_text("package regate.extra\n\nx := 1\n")
    report = bundle_checks.check_bundle(copy, opa_bin)
    assert report.problems == [
        "opa inspect: package data.regate.extra has no METADATA title and description",
        "opa inspect: entrypoint data.regate.authz.decision has no title and description",
        "opa inspect: reason route_not_allowed has no annotated check rule (METADATA custom.reason)",
    ]


def test_compile_check_writes_only_a_bundle_that_passes(regate, tmp_path):
    out = tmp_path / "bundle.tar.gz"
    run = regate("compile", EXAMPLE, "--check", "-o", out)
    assert run.code == 0, run.err
    assert run.err.startswith(f"{EXAMPLE}: ok: ")
    assert "generated tests pass; coverage 100.0% (threshold 100%)" in run.err
    assert out.read_bytes() == compiler.bundle.tarball(compiler.bundle_files(compiler.load_config(EXAMPLE)))

    strict = tmp_path / "strict.tar.gz"
    run = regate("compile", EXAMPLE, "--check", "--min-coverage", "100.5", "-o", strict)
    assert run.code == 1
    assert run.err.startswith(f"{EXAMPLE}: FAILED: ")
    assert "coverage 100.0% (threshold 100.5%)" in run.err
    assert not strict.exists()


def test_regate_test_checks_every_config_and_reports_each(regate, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("general_settings:\n  enable_jwt_auth: maybe\n")
    docs = sorted((ROOT / "examples" / "litellm-docs").glob("*.yaml"))[:2]
    run = regate("test", *docs, bad)
    assert run.code == 2 and run.out == ""
    lines = run.err.splitlines()
    assert [line.split(": ")[0] for line in lines if ": ok: " in line] == [str(d) for d in docs]
    assert f"{bad}:2:20: expected true or false, got a string (\"maybe\") (at general_settings.enable_jwt_auth) " \
           "[wrong-type]" in run.err
    assert regate("test", *docs).code == 0
