"""Shared plumbing of the benchmark scripts: start every component on loopback, drive load, read results.

Everything runs as child processes on 127.0.0.1 free ports and is stopped by the
script that started it (context managers; on error too). Raw outputs (vegeta
results, per-stream records, component logs) go under bench/results/raw/ (ignored
by git). Nothing here asserts anything about speed: scripts print figures.

Components:
- the model stub (`python -m regate.devtools.model_stub`), the OpenAI HTTP API with SSE;
- the dev identity provider (`regate.devtools.dev`): JWKS + OpenID discovery, RS256 tokens;
- OPA (`opa run --server`) loaded with the compiled bundle;
- the enforcer (`regate serve --opa-url ...`: gunicorn + gevent worker, SQLite store,
  spend recording on);
- LiteLLM's own proxy (`litellm --config ...`) from its separate virtualenv.
Load: vegeta (constant-rate HTTP load, every request's latency recorded) and
ssebench (bench/ssebench, our Go SSE stream holder).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH = ROOT / "bench"
RAW = BENCH / "results" / "raw"
CACHE = ROOT / ".cache"
BIN = CACHE / "bench-bin"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
LITELLM_VENV = CACHE / "bench-venv-litellm"
OPA_BIN = os.environ.get("REGATE_OPA_BIN") or str(CACHE / "opa" / "1.22.3" / "opa")
VEGETA_VERSION = "v12.13.0"
LITELLM_VERSION = "1.80.0"

UPSTREAM_KEY = "sk-bench-upstream-key-0123456789"
MASTER_KEY = "sk-bench-master-key-0123456789"
MODEL = "gpt-4o-mini"
AUDIENCE = "regate-bench"
CHAT_BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}


# -- machine and files -------------------------------------------------------------------------

def machine() -> dict:
    """Cores, memory and CPU model of this machine (for the results table)."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {"cores": os.cpu_count(), "cpu": model, "memory_gib": round(mem_kib / 1024 / 1024, 1),
            "kernel": platform.release(), "python": platform.python_version()}


def machine_line() -> str:
    m = machine()
    return f"{m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB RAM, Linux {m['kernel']}, Python {m['python']}"


def raw_dir(scenario: str) -> Path:
    """A fresh folder for this run's raw outputs: bench/results/raw/<scenario>-<UTC timestamp>."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = RAW / f"{scenario}-{stamp}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, ok: Sequence[int] = (200,), headers: dict | None = None,
              proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status in ok:
                    return
                last = resp.status
        except urllib.error.HTTPError as e:
            if e.code in ok:
                return
            last = e.code
        except OSError as e:
            last = repr(e)
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s (last: {last})")


def need(path: str | Path, hint: str) -> str:
    if not os.access(path, os.X_OK):
        raise SystemExit(f"missing {path}: {hint}")
    return str(path)


def vegeta_bin() -> str:
    return need(BIN / "vegeta", "run bench/setup.sh (builds vegeta into .cache/bench-bin)")


def ssebench_bin() -> str:
    return need(BIN / "ssebench", "run bench/setup.sh (builds bench/ssebench into .cache/bench-bin)")


# -- processes ---------------------------------------------------------------------------------

class Proc:
    """A child process in its own session, output to a log file, optionally pinned with taskset."""

    def __init__(self, name: str, cmd: list[str], *, log_dir: Path, env: dict | None = None,
                 cpus: str | None = None, cwd: Path = ROOT, unset: Sequence[str] = ("DATABASE_URL",)):
        self.name = name
        self.cmd = (["taskset", "-c", cpus] if cpus else []) + cmd
        self.log_path = log_dir / f"{name}.log"
        self.env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset}
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Proc":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc
        return self.proc.pid

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        # Anything it left in its session (gunicorn workers, uvicorn children) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def tail(self, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""


def children(pid: int) -> list[int]:
    """Direct child pids (gunicorn workers of a master)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def proc_status_kib(pid: int, field_name: str = "VmRSS") -> int:
    """A memory field of /proc/<pid>/status in KiB (VmRSS now, VmHWM peak); 0 when gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


@dataclass
class Pinning:
    """CPU sets for taskset; None everywhere = no pinning (the default)."""

    client: str | None = None
    stub: str | None = None
    opa: str | None = None
    proxy: str | None = None

    @classmethod
    def parse(cls, spec: str | None) -> "Pinning":
        """`--pin split`: load generator + model stub on CPU 0, proxy + OPA on CPU 1. `--pin none`: no pinning."""
        if not spec or spec == "none":
            return cls()
        if spec == "split":
            return cls(client="0", stub="0", opa="1", proxy="1")
        raise SystemExit(f"--pin must be none or split, not {spec!r}")


# -- components --------------------------------------------------------------------------------

class ModelStub(Proc):
    def __init__(self, log_dir: Path, *, chunk_delay: float = 0.0, completion_tokens: int = 8,
                 cpus: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__("model-stub", [PYTHON, "-m", "regate.devtools.model_stub", "--port", str(self.port),
                                        "--api-key", UPSTREAM_KEY, "--chunk-delay", str(chunk_delay),
                                        "--completion-tokens", str(completion_tokens)], log_dir=log_dir, cpus=cpus)

    def start(self) -> "ModelStub":
        super().start()
        wait_http(f"{self.url}/health", proc=self.proc)
        return self


class Opa(Proc):
    def __init__(self, log_dir: Path, bundle: Path, *, cpus: str | None = None, name: str = "opa"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(name, [need(OPA_BIN, "run scripts/ensure-opa"), "run", "--server", "--addr",
                                f"127.0.0.1:{self.port}", "--log-level", "error", "--skip-version-check",
                                "--bundle", str(bundle)], log_dir=log_dir, cpus=cpus)

    def start(self) -> "Opa":
        super().start()
        wait_http(f"{self.url}/health?bundles", proc=self.proc)
        return self


class DevIdp:
    """The dev identity provider (regate.devtools.dev) in a thread of this process, with a fresh key."""

    def __init__(self):
        from regate.devtools.dev import DevIdentityProvider, DevKeys

        self._tmp = tempfile.TemporaryDirectory(prefix="regate-bench-idp-")
        self.keys = DevKeys(self._tmp.name)
        self.server = DevIdentityProvider(self.keys, port=free_port())

    def __enter__(self) -> "DevIdp":
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()
        self._tmp.cleanup()

    @property
    def issuer(self) -> str:
        return self.server.issuer

    def team_token(self, team: str = "team-bench", user: str = "bench-user", ttl: int = 6 * 3600) -> str:
        return self.keys.mint({"team_id": team, "sub": user, "email": f"{user}@example.com"},
                              issuer=self.issuer, audience=AUDIENCE, ttl=ttl)

    def admin_token(self, ttl: int = 6 * 3600) -> str:
        return self.keys.mint({"scope": "openid litellm_proxy_admin", "sub": "bench-admin",
                               "email": "admin@example.com"}, issuer=self.issuer, audience=AUDIENCE, ttl=ttl)


def enforcer_env(idp: DevIdp, stub: ModelStub, data_dir: Path) -> dict[str, str]:
    """What `regate serve` reads from the environment (as tests/e2e/conftest.py's enforcer_env)."""
    return {
        "JWT_PUBLIC_KEY_URL": idp.server.discovery_url,
        "JWT_AUDIENCE": AUDIENCE,
        "JWT_ISSUER": idp.issuer,
        "LITELLM_MASTER_KEY": MASTER_KEY,
        "OPENAI_API_BASE": stub.url + "/v1",
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "AZURE_API_BASE": stub.url,
        "AZURE_API_KEY": UPSTREAM_KEY,
        "REGATE_DATA_DIR": str(data_dir),
        "PYTHONUNBUFFERED": "1",
    }


class Enforcer(Proc):
    """`regate serve --opa-url ...` (gunicorn master + gevent workers)."""

    def __init__(self, log_dir: Path, config: Path, *, opa_url: str, env: dict[str, str], workers: int = 1,
                 cpus: str | None = None, name: str = "enforcer", extra_env: dict[str, str] | None = None,
                 python: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        # `python`: another interpreter with the same dependencies (e.g. Debian's optimized build, see
        # bench/setup.sh --debian-python); the project itself is imported from the source tree (cwd).
        super().__init__(name, [python or PYTHON, "-m", "regate.cli", "serve", "--config", str(config), "--host", "127.0.0.1",
                                "--port", str(self.port), "--workers", str(workers), "--opa-url", opa_url],
                         log_dir=log_dir, env={**env, **(extra_env or {})}, cpus=cpus)

    def start(self, timeout: float = 120.0) -> "Enforcer":
        super().start()
        try:
            wait_http(f"{self.url}/health/readiness", timeout=timeout, proc=self.proc)
            deadline = time.monotonic() + 30
            while len(self.worker_pids()) < self.workers and time.monotonic() < deadline:
                time.sleep(0.1)
        except (TimeoutError, RuntimeError) as e:
            self.stop()
            raise RuntimeError(f"enforcer not ready: {e}\n{self.tail()}") from None
        return self

    def worker_pids(self) -> list[int]:
        return children(self.pid)

    def rss_kib(self) -> int:
        return sum(proc_status_kib(p) for p in self.worker_pids())

    def hwm_kib(self) -> int:
        return sum(proc_status_kib(p, "VmHWM") for p in self.worker_pids())


def litellm_config(stub: ModelStub, path: Path) -> Path:
    """LiteLLM's proxy: the same model stub, master-key auth, no database (LiteLLM needs none for this)."""
    path.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {stub.url}/v1\n"
        "      api_key: os.environ/OPENAI_API_KEY\n"
        "general_settings:\n"
        "  master_key: os.environ/LITELLM_MASTER_KEY\n"
        "litellm_settings:\n"
        "  set_verbose: false\n"
        "  telemetry: false\n"
    )
    return path


class LiteLLM(Proc):
    def __init__(self, log_dir: Path, config: Path, *, workers: int = 1, cpus: str | None = None):
        exe = need(LITELLM_VENV / "bin" / "litellm", "run bench/setup.sh (installs litellm[proxy] "
                                                      f"{LITELLM_VERSION} into .cache/bench-venv-litellm)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_MASTER_KEY": MASTER_KEY,
               "OPENAI_API_KEY": UPSTREAM_KEY, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False",
               "PYTHONUNBUFFERED": "1"}
        super().__init__("litellm", [exe, "--config", str(config), "--host", "127.0.0.1", "--port", str(self.port),
                                     "--num_workers", str(workers)], log_dir=log_dir, env=env, cpus=cpus)

    def start(self, timeout: float = 180.0) -> "LiteLLM":
        super().start()
        try:
            wait_http(f"{self.url}/health/liveliness", timeout=timeout, proc=self.proc)
        except (TimeoutError, RuntimeError) as e:
            self.stop()
            raise RuntimeError(f"LiteLLM not ready: {e}\n{self.tail()}") from None
        return self


def regate_config(path: Path, *, extra_team_routes: int = 0) -> Path:
    """examples/regate.yaml, optionally with N more team routes (1 in 10 a {param} template)."""
    import yaml

    doc = yaml.safe_load((ROOT / "examples" / "regate.yaml").read_text())
    routes = doc["general_settings"]["litellm_jwtauth"]["team_allowed_routes"]
    routes += [f"/custom/r{i}" if i % 10 else f"/custom/r{i}/{{item}}/detail" for i in range(extra_team_routes)]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def compile_bundle(config: Path, out: Path) -> Path:
    from regate import compiler

    return compiler.bundle.write(compiler.bundle_files(compiler.load_config(config)), out)


# -- vegeta ------------------------------------------------------------------------------------

@dataclass
class Target:
    """One HTTP request vegeta repeats."""

    name: str
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None

    def vegeta_json(self) -> str:
        doc = {"method": self.method, "url": self.url, "header": {k: [v] for k, v in self.headers.items()}}
        if self.body is not None:
            doc["body"] = base64.b64encode(self.body).decode()
        return json.dumps(doc)


def chat_target(name: str, base: str, credential: str, body: dict | None = None) -> Target:
    """POST {base}/v1/chat/completions with a bearer credential and a small JSON body."""
    return Target(name, "POST", f"{base}/v1/chat/completions",
                  {"Authorization": f"Bearer {credential}", "Content-Type": "application/json"},
                  json.dumps(body or CHAT_BODY).encode())


@dataclass
class AttackResult:
    name: str
    rate: float
    duration: float
    latencies_ms: list[float]  # successful (2xx) requests only
    statuses: dict[str, int]
    errors: int  # non-2xx or transport errors
    error_samples: list[str]
    raw_path: Path | None

    @property
    def count(self) -> int:
        return sum(self.statuses.values())

    def pct(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def summary(self) -> dict:
        return {"name": self.name, "rate": self.rate, "duration": self.duration, "requests": self.count,
                "errors": self.errors, "statuses": self.statuses, "error_samples": self.error_samples[:5],
                "p50_ms": self.pct(50), "p90_ms": self.pct(90), "p99_ms": self.pct(99),
                "max_ms": max(self.latencies_ms) if self.latencies_ms else None}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (exact, from every sample); NaN for no samples."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def attack(target: Target, rate: float, duration: float, *, out_dir: Path | None, tag: str = "",
           cpus: str | None = None, timeout: float = 10.0) -> AttackResult:
    """A constant-rate vegeta attack; every request's latency and status parsed from vegeta's CSV."""
    with tempfile.TemporaryDirectory(prefix="regate-vegeta-") as tmp:
        targets = Path(tmp) / "targets.json"
        targets.write_text(target.vegeta_json() + "\n")
        bin_path = Path(tmp) / "results.bin"
        cmd = (["taskset", "-c", cpus] if cpus else []) + [
            vegeta_bin(), "attack", "-format=json", f"-targets={targets}", f"-rate={rate:g}/s",
            f"-duration={duration:g}s", f"-timeout={timeout:g}s", "-keepalive=true", "-workers=16",
            "-max-body=0", f"-name={target.name}", f"-output={bin_path}"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        csv_text = subprocess.run([vegeta_bin(), "encode", "--to", "csv", str(bin_path)], check=True,
                                  capture_output=True, text=True).stdout
    latencies, statuses, errors, samples, trimmed = [], {}, 0, [], ["timestamp_ns,status,latency_ns,error"]
    for row in csv.reader(io.StringIO(csv_text)):
        # timestamp, code, latency ns, bytes out, bytes in, error, body (b64), name, seq, method, url, headers
        code, latency_ns, error = row[1], int(row[2]), row[5]
        statuses[code] = statuses.get(code, 0) + 1
        if code.startswith("2") and not error:
            latencies.append(latency_ns / 1e6)
        else:
            errors += 1
            if len(samples) < 5:
                samples.append(f"{code} {error}".strip())
        if out_dir is not None:
            trimmed.append(f'{row[0]},{code},{latency_ns},"{error.replace(chr(34), chr(39))}"')
    raw_path = None
    if out_dir is not None:  # every request, without the captured headers (they make the files large)
        raw_path = out_dir / f"vegeta-{target.name}-{rate:g}rps{tag}.csv"
        raw_path.write_text("\n".join(trimmed) + "\n")
    return AttackResult(target.name, rate, duration, latencies, statuses, errors, samples, raw_path)


def warm_up(target: Target, *, rate: float = 50, duration: float = 2, cpus: str | None = None) -> AttackResult:
    return attack(target, rate, duration, out_dir=None, cpus=cpus)


def check_once(target: Target) -> tuple[int, bytes]:
    """One request, to fail early with the component's answer when a set-up is wrong."""
    req = urllib.request.Request(target.url, data=target.body, method=target.method, headers=target.headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def expect_ok(target: Target, tries: int = 50) -> None:
    """Retry until a 200 (e.g. the enforcer still loading state); raise with the last answer otherwise."""
    status, body = 0, b""
    for _ in range(tries):
        status, body = check_once(target)
        if status == 200:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{target.name}: {target.method} {target.url} answered {status}: {body[:300]!r}")


# -- small formatting helpers ------------------------------------------------------------------

def median(values: Sequence[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def fmt_ms(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:.{digits}f} ms"


def write_json(path: Path, doc) -> None:
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def launch(stack: contextlib.ExitStack, proc):
    """Start `proc` and have `stack` stop it (whatever happens later)."""
    stack.callback(proc.stop)
    return proc.start()


@contextlib.contextmanager
def stopping(*procs: Proc) -> Iterator[None]:
    """Stop the given processes (last first) however the block ends."""
    try:
        yield
    finally:
        for p in reversed(procs):
            with contextlib.suppress(Exception):
                p.stop()
