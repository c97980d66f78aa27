"""The README's first command, run non-interactively: the tour's decisions and statuses,
and Ctrl-C stopping everything the interactive run started."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

from tests.support.enforcer import ROOT

ROW = re.compile(r"^\s+(\d+)\s{2}(.{20}) (\S+ \S+)\s+(allow|deny)\s+(\S+)\s+(\d{3})")
EXPECTED = [
    ("POST /team/new", "allow", "-", 200),
    ("POST /key/generate", "allow", "-", 200),
    ("POST /v1/chat/completions", "allow", "-", 200),
    ("POST /v1/chat/completions", "allow", "-", 200),
    ("POST /team/new", "allow", "-", 200),
    ("POST /v1/chat/completions", "allow", "-", 200),
    ("POST /v1/chat/completions", "allow", "-", 200),
    ("POST /v1/chat/completions", "deny", "team_not_granted", 403),
    ("POST /key/generate", "deny", "route_not_allowed", 403),
    ("POST /v1/chat/completions", "deny", "email_domain_not_allowed", 403),
    ("POST /v1/chat/completions", "deny", "missing_credential", 401),
    ("POST /team/block", "allow", "-", 200),
    ("POST /v1/chat/completions", "deny", "team_blocked", 403),
    ("POST /team/unblock", "allow", "-", 200),
    ("POST /v1/chat/completions", "allow", "-", 200),
    ("GET /global/spend", "allow", "-", 200),
]


def test_readme_run_command_tours_the_flows():
    result = subprocess.run(["bash", "scripts/run", "--ci"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [ROW.match(line) for line in result.stdout.splitlines()]
    rows = [(m.group(3), m.group(4), m.group(5), int(m.group(6))) for m in rows if m]
    assert rows == EXPECTED, result.stdout
    assert "All decisions as expected." in result.stdout
    spend = re.search(r"\$(\d+\.\d+) over (\d+) calls", result.stdout)
    assert spend and float(spend.group(1)) > 0 and spend.group(2) == "5", result.stdout


def _started_ports(output: str) -> list[int]:
    """The ports of the three components the run announces while starting."""
    names = ("dev identity provider", "model stub", "enforcer + OPA")
    return [int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
            for line in output.splitlines() if line.strip().startswith(names)]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def test_ctrl_c_stops_everything(tmp_path):
    env = {**os.environ, "REGATE_DEMO_CI": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "regate.cli", "demo"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _interrupt_and_check(proc)
    finally:
        if proc.poll() is None:  # only when the test failed midway: leave nothing behind
            os.killpg(proc.pid, signal.SIGKILL)


def _interrupt_and_check(proc):
    output = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        output.append(line)
        if "Try it yourself" in line or time.monotonic() > deadline:
            break
    text = "".join(output)
    assert "All decisions as expected." in text, text
    ports = _started_ports(text)
    assert len(ports) == 3, text
    work_dir = re.search(r"state \(temporary\)\s+(\S+)", text).group(1)
    assert any("opa" in cmd and "run" in cmd for cmd in _processes_mentioning(work_dir))  # the managed OPA
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    for port in ports:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open after Ctrl-C"
    assert _processes_mentioning(work_dir) == []
