"""The CI integration as a consumer repository runs it: the pre-commit hook's entry, and the GitHub
Actions and GitLab CI jobs' own shell steps, run by bash in a real git repository with a base
branch and a change. Only the install steps (network) are left out; the forges' comment APIs are
stand-in HTTP servers speaking their REST shapes."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
import yaml

from regate.common.opa import OPA_VERSION
from tests.support.net import QuietHandler, ServerThread

ROOT = Path(__file__).resolve().parents[2]
HOOKS = ROOT / ".pre-commit-hooks.yaml"
GITHUB = ROOT / "ci-templates" / "github-actions" / "regate.yml"
GITLAB = ROOT / "ci-templates" / "gitlab-ci" / "regate.gitlab-ci.yml"
BIN = str(Path(sys.executable).parent)  # regate's console script lives beside the test interpreter

BASE = (ROOT / "examples" / "regate.yaml").read_text()
WIDER = BASE.replace("team_allowed_routes: [openai_routes, info_routes, /spend/logs]",
                     "team_allowed_routes: [openai_routes, info_routes, /spend/logs, /key/generate]")
BROKEN = BASE.replace("team_allowed_routes:", "team_alowed_routes:")
# where the misspelt key stands: line:column
BROKEN_AT = next(f"{n}:{line.index('team_alowed') + 1}" for n, line in enumerate(BROKEN.splitlines(), 1)
                 if "team_alowed_routes:" in line)


class _ForgeApi(QuietHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_bytes(201, b'{"id": 1}')


@pytest.fixture
def forge():
    with ServerThread(_ForgeApi, posts=[]) as server:
        server.posts = server.httpd.posts  # (path, headers, body) of every POST
        yield server


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def checkout(tmp_path):
    """checkout(base_text, head_text) -> a clone on branch `feature` whose origin's `main` holds base_text."""
    made = []

    def make(base: str | None, head: str) -> Path:
        made.append(base)
        origin, work = tmp_path / f"origin-{len(made)}.git", tmp_path / f"work-{len(made)}"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
        subprocess.run(["git", "clone", "-q", str(origin), str(work)], check=True, capture_output=True)
        git(work, "config", "user.email", "ci@example.com")
        git(work, "config", "user.name", "CI")
        git(work, "checkout", "-q", "-b", "main")
        (work / "README.md").write_text("gateway\n")
        if base is not None:
            (work / "config.yaml").write_text(base)
        git(work, "add", ".")
        git(work, "commit", "-q", "-m", "base")
        git(work, "push", "-q", "origin", "main")
        git(work, "checkout", "-q", "-b", "feature")
        (work / "config.yaml").write_text(head)
        git(work, "add", ".")
        git(work, "commit", "-q", "-m", "change")
        return work

    return make


def ci_env(opa_bin: str, **extra: str) -> dict[str, str]:
    """What the install steps leave behind: regate and OPA on PATH. Nothing of ours leaks in."""
    env = {"PATH": f"{BIN}:{Path(opa_bin).parent}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
           "REGATE_OPA_BIN": opa_bin, "LANG": "C.UTF-8"}
    return env | extra


def run_bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    # GitHub's `shell: bash` is `bash --noprofile --norc -eo pipefail {0}`; GitLab runs its script with -e too.
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


# -- GitHub Actions ---------------------------------------------------------------------------------


def github_job() -> dict:
    workflow = yaml.safe_load(GITHUB.read_text())
    assert workflow["defaults"]["run"]["shell"] == "bash"
    return workflow["jobs"]["policy"]


def run_github(work: Path, opa_bin: str, forge, tmp_path: Path) -> dict[str, subprocess.CompletedProcess]:
    """Every `run` step after the install, in order, until one fails."""
    job = github_job()
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir(parents=True, exist_ok=True)
    # The workflow's ${{ }} expressions (only ever in `env:`, never in scripts), as GitHub fills them in.
    expressions = {"${{ github.base_ref }}": "main", "${{ github.token }}": "ghs_test_token",
                   "${{ github.event.pull_request.number }}": "7"}
    results = {}
    for step in job["steps"]:
        if "run" not in step or step.get("name") == "Install regate and OPA":
            continue
        assert "${{" not in step["run"], f"{step['name']}: expressions belong in env:, not in the script"
        env = ci_env(opa_bin, **job["env"], RUNNER_TEMP=str(runner_temp), GITHUB_API_URL=forge.url,
                     GITHUB_REPOSITORY="acme/gateway")
        env |= {name: expressions.get(value, value) for name, value in step.get("env", {}).items()}
        results[step["name"]] = result = run_bash(step["run"], work, env)
        if result.returncode != 0:
            break
    return results


def test_github_install_step_pins_the_tested_opa():
    job = github_job()
    install = next(s for s in job["steps"] if s.get("name") == "Install regate and OPA")
    assert job["env"]["OPA_VERSION"] == OPA_VERSION
    assert 'pip install "$REGATE_PIP_SPEC"' in install["run"]
    assert "opa_linux_amd64_static" in install["run"] and "REGATE_OPA_BIN=" in install["run"]


def test_github_job_compiles_checks_and_comments_the_diff(checkout, opa_bin, forge, tmp_path):
    work = checkout(BASE, WIDER)
    results = run_github(work, opa_bin, forge, tmp_path)
    assert list(results) == ["Compile and check", "Diff against the base branch", "Comment on the pull request"]
    assert all(r.returncode == 0 for r in results.values()), {k: r.stderr for k, r in results.items()}
    assert "config.yaml: ok: " in results["Compile and check"].stderr
    assert (work / "bundle.tar.gz").is_file()
    ((path, headers, body),) = forge.posts
    assert path == "/repos/acme/gateway/issues/7/comments"
    assert headers["authorization"] == "Bearer ghs_test_token"
    comment = json.loads(body)["body"]
    assert comment == (work / "regate-diff.md").read_text()
    assert comment.startswith("### regate diff: `")
    assert "| team token (email @corp.example.com) | `/key/generate` | deny route_not_allowed | **allow** |" in comment


def test_github_job_fails_on_a_config_error(checkout, opa_bin, forge, tmp_path):
    results = run_github(checkout(BASE, BROKEN), opa_bin, forge, tmp_path)
    assert list(results) == ["Compile and check"]
    failed = results["Compile and check"]
    assert failed.returncode == 2
    assert f"config.yaml:{BROKEN_AT}: unknown key 'team_alowed_routes' in 'litellm_jwtauth'" in failed.stderr
    assert forge.posts == []


def test_github_job_comments_when_the_base_has_no_config_or_a_broken_one(checkout, opa_bin, forge, tmp_path):
    results = run_github(checkout(None, BASE), opa_bin, forge, tmp_path / "a")
    assert all(r.returncode == 0 for r in results.values())
    assert "`config.yaml` is new on this branch: no base config to compare with." in json.loads(forge.posts[0][2])["body"]

    results = run_github(checkout(BROKEN, BASE), opa_bin, forge, tmp_path / "b")
    assert all(r.returncode == 0 for r in results.values()), {k: r.stderr for k, r in results.items()}
    comment = json.loads(forge.posts[1][2])["body"]
    assert "The base branch's `config.yaml` does not compile; no diff:" in comment
    assert f"config.yaml:{BROKEN_AT}: unknown key 'team_alowed_routes'" in comment


# -- GitLab CI --------------------------------------------------------------------------------------


def run_gitlab(work: Path, opa_bin: str, forge) -> subprocess.CompletedProcess:
    job = yaml.safe_load(GITLAB.read_text())["regate"]
    variables = job["variables"] | {"CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main", "CI_API_V4_URL": f"{forge.url}/api/v4",
                                    "CI_PROJECT_ID": "42", "CI_MERGE_REQUEST_IID": "7",
                                    "REGATE_GITLAB_TOKEN": "glpat-test-token"}
    return run_bash("\n".join(job["script"]), work, ci_env(opa_bin, **variables))


def test_gitlab_job_compiles_checks_and_posts_a_note(checkout, opa_bin, forge):
    job = yaml.safe_load(GITLAB.read_text())["regate"]
    assert job["variables"]["OPA_VERSION"] == OPA_VERSION
    assert any("opa_linux_amd64_static" in line for line in job["before_script"])
    work = checkout(BASE, WIDER)
    result = run_gitlab(work, opa_bin, forge)
    assert result.returncode == 0, result.stderr
    assert (work / "bundle.tar.gz").is_file()
    ((path, headers, body),) = forge.posts
    assert path == "/api/v4/projects/42/merge_requests/7/notes"
    assert headers["private-token"] == "glpat-test-token"
    note = urllib.parse.parse_qs(body.decode())["body"][0]
    assert note == (work / "regate-diff.md").read_text()
    assert "| virtual key of a team | `/key/generate` | deny route_not_allowed | **allow** |" in note


def test_gitlab_job_fails_on_a_config_error(checkout, opa_bin, forge):
    result = run_gitlab(checkout(BASE, BROKEN), opa_bin, forge)
    assert result.returncode == 2
    assert f"config.yaml:{BROKEN_AT}: unknown key 'team_alowed_routes'" in result.stderr
    assert forge.posts == []


# -- pre-commit -------------------------------------------------------------------------------------


def test_pre_commit_hook(opa_bin, tmp_path):
    (hook,) = yaml.safe_load(HOOKS.read_text())
    assert hook["id"] == "regate-compile" and hook["language"] == "python" and hook["pass_filenames"]
    files = re.compile(hook["files"])
    candidates = ["config.yaml", "deploy/litellm_config.yaml", "litellm-config.yml", "docs/other.yaml", "myconfig.yaml"]
    assert [c for c in candidates if files.search(c)] == ["config.yaml", "deploy/litellm_config.yaml",
                                                          "litellm-config.yml"]
    (tmp_path / "deploy").mkdir()
    (tmp_path / "config.yaml").write_text(BASE)
    (tmp_path / "deploy" / "litellm_config.yaml").write_text(WIDER)
    entry = shlex.split(hook["entry"])
    # pre-commit runs the entry with the staged files that match, from the repository's root.
    ok = subprocess.run([*entry, "config.yaml", "deploy/litellm_config.yaml"], cwd=tmp_path, env=ci_env(opa_bin),
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert [line.split(": ")[:2] for line in ok.stderr.splitlines()] == [["config.yaml", "ok"],
                                                                         ["deploy/litellm_config.yaml", "ok"]]
    (tmp_path / "config.yaml").write_text(BROKEN)
    bad = subprocess.run([*entry, "config.yaml"], cwd=tmp_path, env=ci_env(opa_bin), capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.startswith(f"config.yaml:{BROKEN_AT}: unknown key 'team_alowed_routes' in 'litellm_jwtauth'")
