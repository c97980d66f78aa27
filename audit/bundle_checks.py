"""`regate compile --check` and `regate test`: a bundle held to OPA's own tools.

- `opa fmt`: every file formatted as OPA formats it;
- `opa check --strict` against schemas/input.schema.json: no unused or undefined references;
- `opa test --coverage`: the generated tests pass and evaluate every line of the policy
  (MIN_COVERAGE, over the policy files; the test file itself does not count);
- `opa inspect --annotations`: every package and every entrypoint has a title and a
  description, every reason code of the decision has an annotated check rule, and so do the
  public-route and custom-policy blocks (what `regate explain` reads).

Regal, the Rego linter, cannot be had here (the Go module proxy serves neither of its module
paths), so these are the style guide's checks that OPA itself can make.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from regate.common.opa import find_opa
from regate.compiler import bundle, resources

from . import MIN_COVERAGE, annotations


@dataclass
class BundleReport:
    tests: int = 0
    failed: list[str] = field(default_factory=list)
    coverage: float = 0.0
    uncovered: list[str] = field(default_factory=list)  # file:line of every line no test evaluates
    problems: list[str] = field(default_factory=list)  # fmt, check and annotation findings

    def ok(self, min_coverage: float = MIN_COVERAGE) -> bool:
        return not self.failed and not self.problems and self.tests > 0 and self.coverage >= min_coverage

    def summary(self, min_coverage: float = MIN_COVERAGE) -> str:
        lines = [f"{self.tests - len(self.failed)}/{self.tests} generated tests pass; coverage "
                 f"{self.coverage:.1f}% (threshold {min_coverage:g}%)"]
        lines += [f"  failed: {name}" for name in self.failed]
        if self.coverage < min_coverage:
            lines += [f"  not covered: {where}" for where in self.uncovered]
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


def _run(opa_bin: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([opa_bin, *args], capture_output=True, text=True, timeout=300)


def _relative(path: str, root: Path) -> str:
    prefix = str(root).rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else path


def _lint(report: BundleReport, root: Path, opa_bin: str) -> None:
    fmt = _run(opa_bin, "fmt", "--list", "--fail", str(root))
    if fmt.returncode != 0:
        unformatted = fmt.stdout.split()
        report.problems += [f"opa fmt: {_relative(line, root)} is not formatted" for line in unformatted]
        if not unformatted:  # fmt could not even parse the files
            report.problems += [f"opa fmt: {line}" for line in fmt.stderr.splitlines() if line.strip()]
    check = _run(opa_bin, "check", "--strict", "--schema", str(resources.schema_path("input.schema.json")),
                 "--bundle", str(root))
    if check.returncode != 0:
        report.problems += [f"opa check --strict: {line.replace(str(root) + '/', '')}"
                            for line in (check.stdout + check.stderr).splitlines() if line.strip()]


def _json(run: subprocess.CompletedProcess, what: str, report: BundleReport):
    """OPA's JSON answer, or None with OPA's message as a problem."""
    try:
        return json.loads(run.stdout)
    except ValueError:
        report.problems.append(f"{what}: {(run.stderr or run.stdout).strip()}")
        return None


def _tests(report: BundleReport, root: Path, opa_bin: str) -> None:
    results = _json(_run(opa_bin, "test", "--format", "json", str(root)), "opa test", report)
    if results is None:
        return
    report.tests = len(results)
    report.failed = [f"{r['package']}.{r['name']}" for r in results if r.get("fail") or r.get("error")]
    cover = _json(_run(opa_bin, "test", "--coverage", "--format", "json", str(root)), "opa test --coverage", report)
    files = (cover or {}).get("files", {})
    covered = missed = 0
    for path, counts in sorted(files.items()):
        if path.endswith("_test.rego"):
            continue
        covered += counts.get("covered_lines", 0)
        missed += counts.get("not_covered_lines", 0)
        rows = sorted({row for span in counts.get("not_covered", [])
                       for row in range(span["start"]["row"], span["end"]["row"] + 1)})
        report.uncovered += [f"{_relative(path, root)}:{row}" for row in rows]
    report.coverage = 100.0 * covered / (covered + missed) if covered + missed else 0.0


def _documented(report: BundleReport, root: Path, opa_bin: str) -> None:
    inspected = annotations.inspect(root, opa_bin)
    notes = inspected.get("annotations") or []
    packages = {annotations.ref(a["path"]) for a in notes if a["annotations"].get("scope") == "package"
                and a["annotations"].get("title") and a["annotations"].get("description")}
    for package, sources in sorted((inspected.get("namespaces") or {}).items()):
        # A package made of test files only (a custom policy's own tests) is no policy to document.
        if any(source.endswith(".rego") and not source.endswith("_test.rego") for source in sources) \
                and package not in packages:
            report.problems.append(f"opa inspect: package {package} has no METADATA title and description")
    for a in notes:
        if a["annotations"].get("entrypoint") and not (a["annotations"].get("title") and a["annotations"].get("description")):
            report.problems.append(f"opa inspect: entrypoint {annotations.ref(a['path'])} has no title and description")
    order = _json(_run(opa_bin, "eval", "--format", "json", "--bundle", str(root), "data.regate.authz.reason_order"),
                  "opa eval data.regate.authz.reason_order", report)
    if not order or not order.get("result"):
        return
    reasons = order["result"][0]["expressions"][0]["value"]
    checks = annotations.checks(inspected, root)
    for reason in reasons:
        if reason not in checks:
            report.problems.append(f"opa inspect: reason {reason} has no annotated check rule (METADATA custom.reason)")
    blocks = {"public_route"} | ({"custom_policies"} if "data.regate.custom_checks" in (inspected.get("namespaces") or {})
                                  else set())
    for block in sorted(blocks - set(checks)):
        report.problems.append(f"opa inspect: the {block} block has no annotated rule (METADATA custom.check)")
    for reason in sorted(set(checks) - set(reasons) - blocks):
        report.problems.append(f"opa inspect: annotated check {reason} is not in data.regate.authz.reason_order")


def check_bundle(root: Path, opa_bin: str | None = None) -> BundleReport:
    """Every check above, on a bundle directory."""
    opa_bin = opa_bin or find_opa()
    report = BundleReport()
    _lint(report, root, opa_bin)
    _tests(report, root, opa_bin)
    _documented(report, root, opa_bin)
    return report


def check_files(files: dict[str, bytes], opa_bin: str | None = None) -> BundleReport:
    """check_bundle on bundle files not yet written anywhere."""
    directory = Path(tempfile.mkdtemp(prefix="regate-check-"))
    try:
        return check_bundle(bundle.write(files, directory / "bundle"), opa_bin)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
