"""`regate demo`: the whole system on this machine, and a guided tour of the LiteLLM JWT-docs flows.

Starts a dev identity provider (JWKS), a local OpenAI-compatible model stub, and
`regate serve` on examples/regate.yaml (managed OPA, SQLite), then walks through:
an admin creates a team and a key, the team calls a model, the key calls a model,
a user in two teams (a `groups` claim) switches teams with the x-litellm-team-id
header, a team token is refused a management route, the team is blocked and
unblocked, and the spend shows up. Each call is printed as a table row: who, what, the
decision, the reason and the status. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from regate.devtools.dev import DEFAULT_AUDIENCE, DEFAULT_KEY_DIR, DevIdentityProvider, DevKeys

# examples/ is a sibling of devtools/ in a checkout and in the installed package (regate/examples).
CONFIG = Path(__file__).resolve().parent.parent / "examples" / "regate.yaml"


@dataclass
class Step:
    who: str
    method: str
    path: str
    credential: str | None  # a bearer token, or None
    body: dict | None
    expect_status: int
    expect_reason: str | None = None
    note: str = ""
    headers: dict | None = None


def _port(preferred: int, ephemeral: bool) -> int:
    """`preferred` when free (stable commands to copy), else any free port."""
    for candidate in ([] if ephemeral else [preferred]) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def _call(base: str, step: Step) -> tuple[int, dict | str, dict]:
    data = json.dumps(step.body).encode() if step.body is not None else None
    req = urllib.request.Request(base + step.path, data=data, method=step.method)
    req.add_header("Content-Type", "application/json")
    if step.credential:
        req.add_header("Authorization", f"Bearer {step.credential}")
    for name, value in (step.headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw, status, headers = resp.read(), resp.status, resp.headers
    except urllib.error.HTTPError as e:
        raw, status, headers = e.read(), e.code, e.headers
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw.decode("utf-8", "replace")
    return status, body, {"reason": headers.get("X-Regate-Reason")}


class _Progress:
    def __init__(self, label: str):
        self.label = label
        self.started = time.monotonic()
        print(f"  {label} ", end="", flush=True)

    def tick(self) -> None:
        print(".", end="", flush=True)

    def done(self) -> None:
        print(f" ready ({time.monotonic() - self.started:.1f}s)", flush=True)


def _wait_ready(url: str, label: str, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    progress = _Progress(label)
    deadline = time.monotonic() + timeout
    last_tick = 0.0
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{label} exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    progress.done()
                    return
        except OSError:
            pass
        if time.monotonic() - last_tick > 0.5:
            progress.tick()
            last_tick = time.monotonic()
        time.sleep(0.1)
    raise RuntimeError(f"{label} not ready after {timeout:.0f}s")


class Demo:
    def __init__(self, *, ci: bool):
        self.ci = ci
        self.procs: list[subprocess.Popen] = []
        self.idp: DevIdentityProvider | None = None
        self.work = Path(tempfile.mkdtemp(prefix="regate-demo-"))
        self.master_key = "sk-demo-" + secrets.token_urlsafe(18)
        self.upstream_key = "sk-upstream-" + secrets.token_urlsafe(18)

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> str:
        print("Starting regate locally:")
        print(f"  state (temporary)      {self.work}")
        keys = DevKeys(self.work / "dev-idp" if self.ci else DEFAULT_KEY_DIR)
        self.keys = keys
        self.idp = DevIdentityProvider(keys, port=_port(8900, self.ci)).start()
        print(f"  dev identity provider  {self.idp.issuer}  (JWKS at {self.idp.issuer}/jwks.json)")
        stub_port = _port(8901, self.ci)
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "regate.devtools.model_stub", "--port", str(stub_port), "--api-key", self.upstream_key],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        stub = f"http://127.0.0.1:{stub_port}"
        _wait_ready(stub + "/health", f"model stub             {stub}", self.procs[-1])
        port = _port(4000, self.ci)
        self.base = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "JWT_PUBLIC_KEY_URL": self.idp.discovery_url,
            "JWT_AUDIENCE": DEFAULT_AUDIENCE,
            "LITELLM_MASTER_KEY": self.master_key,
            "OPENAI_API_BASE": stub + "/v1",
            "OPENAI_API_KEY": self.upstream_key,
            "AZURE_API_BASE": stub,
            "AZURE_API_KEY": self.upstream_key,
            "REGATE_DATA_DIR": str(self.work / "data"),
        }
        env.pop("DATABASE_URL", None)
        self.log = open(self.work / "enforcer.log", "w")
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "regate.cli", "serve", "--config", str(CONFIG), "--host", "127.0.0.1",
             "--port", str(port)], env=env, stdout=self.log, stderr=subprocess.STDOUT))
        _wait_ready(self.base + "/health/readiness", f"enforcer + OPA         {self.base}", self.procs[-1])
        return self.base

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.idp:
            self.idp.stop()
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(self.work, ignore_errors=True)

    # the tour ----------------------------------------------------------------------------
    def token(self, **claims) -> str:
        return self.keys.mint(claims, audience=DEFAULT_AUDIENCE)

    def tour(self) -> bool:
        admin = self.token(scope="openid litellm_proxy_admin", sub="ada", email="ada@example.com")
        alice = self.token(team_id="team-a", sub="alice", email="alice@example.com")
        mallory = self.token(team_id="team-a", sub="mallory", email="mallory@elsewhere.test")
        bob = self.token(groups=["team-a", "team-b"], sub="bob", email="bob@example.com")
        chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello to regate"}]}
        print("\nThe tour (flows from LiteLLM's JWT-auth docs, decided by OPA):\n")
        key = None
        steps = [
            Step("admin ada (scope)", "POST", "/team/new", admin, {"team_id": "team-a", "team_alias": "Team A"}, 200,
                 note="admins manage teams"),
            Step("admin ada (scope)", "POST", "/key/generate", admin, {"team_id": "team-a", "models": ["gpt-4o-mini"]},
                 200, note="a virtual key for team-a"),
            Step("team-a / alice", "POST", "/v1/chat/completions", alice, chat, 200, note="proxied to the model"),
            Step("team-a key (sk-…)", "POST", "/v1/chat/completions", None, chat, 200, note="the key, attributed"),
            Step("admin ada (scope)", "POST", "/team/new", admin,
                 {"team_id": "team-b", "team_alias": "Team B", "models": ["gpt-4o-mini"]}, 200, note="a second team"),
            Step("bob (groups a, b)", "POST", "/v1/chat/completions", bob, chat, 200,
                 note="x-litellm-team-id: team-b", headers={"x-litellm-team-id": "team-b"}),
            Step("bob (groups a, b)", "POST", "/v1/chat/completions", bob, chat, 200,
                 note="x-litellm-team-id: Team B (alias)", headers={"x-litellm-team-id": "Team B"}),
            Step("bob (groups a, b)", "POST", "/v1/chat/completions", bob, chat, 403, "team_not_granted",
                 note="x-litellm-team-id: team-c", headers={"x-litellm-team-id": "team-c"}),
            Step("team-a / alice", "POST", "/key/generate", alice, {}, 403, "route_not_allowed",
                 note="teams may not manage keys"),
            Step("team-a / mallory", "POST", "/v1/chat/completions", mallory, chat, 403, "email_domain_not_allowed",
                 note="email outside example.com"),
            Step("nobody", "POST", "/v1/chat/completions", None, chat, 401, "missing_credential"),
            Step("admin ada (scope)", "POST", "/team/block", admin, {"team_id": "team-a"}, 200),
            Step("team-a / alice", "POST", "/v1/chat/completions", alice, chat, 403, "team_blocked"),
            Step("admin ada (scope)", "POST", "/team/unblock", admin, {"team_id": "team-a"}, 200),
            Step("team-a / alice", "POST", "/v1/chat/completions", alice, dict(chat, stream=True), 200,
                 note="streamed (SSE)"),
            Step("admin ada (scope)", "GET", "/global/spend", admin, None, 200, note="spend shows up"),
        ]
        ok = True
        print(f"  {'#':>2}  {'who':<20} {'request':<28} {'decision':<8} {'reason':<25} {'status':>6}  note")
        print(f"  {'-' * 2}  {'-' * 20} {'-' * 28} {'-' * 8} {'-' * 25} {'-' * 6}  {'-' * 28}")
        for number, step in enumerate(steps, 1):
            if step.who.startswith("team-a key"):
                step.credential = key
            if step.path == "/global/spend":
                time.sleep(0.6)  # spend is written off the request path, in batches
            status, body, headers = _call(self.base, step)
            if step.path == "/key/generate" and status == 200:
                key = body["key"]
            reason = headers["reason"] or "-"
            decision = "allow" if status < 400 else "deny"
            matched = status == step.expect_status and (step.expect_reason in (None, headers["reason"]))
            ok &= matched
            note = step.note
            if step.path == "/global/spend" and status == 200:
                note = f"${body['spend']:.6f} over {body['requests']} calls"
            mark = "" if matched else f"   <-- expected {step.expect_status} {step.expect_reason or ''}"
            print(f"  {number:>2}  {step.who:<20} {step.method + ' ' + step.path:<28} {decision:<8} {reason:<25} "
                  f"{status:>6}  {note}{mark}")
        print()
        print("All decisions as expected." if ok else "Some decisions were NOT as expected (see <--).")
        return ok

    def explain(self) -> None:
        print(f"""
Try it yourself while this runs (Ctrl-C stops everything):

  export TOKEN=$({Path(sys.executable).parent / "regate"} dev token --key-dir {self.keys.key_dir} --claim team_id=team-a \\
      --claim sub=alice --claim email=alice@example.com --audience {DEFAULT_AUDIENCE})
  curl -s {self.base}/v1/chat/completions -H "Authorization: Bearer $TOKEN" \\
      -H 'Content-Type: application/json' -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "hi"}}]}}'

  An admin token: add --scope litellm_proxy_admin. A user in two teams: --claim 'groups=["team-a","team-b"]'
  instead of --claim team_id=team-a, and pick the team per request with -H 'x-litellm-team-id: team-b'.
  Metrics: {self.base}/metrics   Readiness: {self.base}/health/readiness
""")


def main(args) -> int:
    demo = Demo(ci=args.ci)
    try:
        demo.start()
        ok = demo.tour()
        if args.ci:
            return 0 if ok else 1
        demo.explain()
        while all(p.poll() is None for p in demo.procs):
            time.sleep(0.5)
        print("a component stopped; shutting down")
        return 1
    except KeyboardInterrupt:
        print("\nstopping...")
        return 0
    finally:
        demo.stop()
