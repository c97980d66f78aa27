"""Scenario 4 — where one request's microseconds go.

    .venv/bin/python bench/profile_request.py            # ~1.5 minutes
    .venv/bin/python bench/profile_request.py --smoke    # fewer iterations

Three views of the same `POST /v1/chat/completions` with a team RS256 JWT (real dev IdP,
real OPA with the example bundle, real model stub, SQLite store, spend recording on):

A. Components in isolation, in this process (no gevent), median µs per call:
   JWT verify (enforcer.tokens.TokenVerifier.verify), the OPA decision round trip
   (enforcer.decisions.OpaClient.decide) and OPA's own evaluation time (?metrics),
   the user-existence facts lookup, the upstream call (enforcer.upstreams.Upstreams.open
   + read_json), the spend enqueue (SpendWriter.submit), plus the same HTTP calls made
   by a bare urllib3 pool, to separate client-library cost from the servers' time.
B. The whole Flask app in this process (app.test_client(), no gunicorn, no gevent):
   median µs per request, and the remainder after the components = Flask/werkzeug and
   the enforcer's own glue (gate, logging, metrics, JSON re-encoding).
   pyinstrument's call tree of those requests goes to the raw folder.
C. The real server (`regate serve`: gunicorn, gevent, regate's HTTP layer), sequential requests on one
   keep-alive connection: median end-to-end µs through regate and directly to the stub;
   the difference minus (B − upstream) is what the server and gevent add.
D. CPU time per request (user + system, from /proc) of the enforcer worker, OPA and the
   stub under a steady load, for requests that do less and less (chat completion →
   decision only → health probe → no regate): on a 2-core machine, CPU per request is
   what bounds the sustainable rate. Then py-spy samples the worker under the chat load
   (collapsed stacks in the raw folder; a table of the main frames' shares).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from harness import (
    BIN,
    CACHE,
    CHAT_BODY,
    UPSTREAM_KEY,
    DevIdp,
    Enforcer,
    ModelStub,
    Opa,
    Target,
    attack,
    chat_target,
    compile_bundle,
    cpu_seconds,
    enforcer_env,
    expect_ok,
    launch,
    machine_line,
    raw_dir,
    regate_config,
    write_json,
)

PYLIB = CACHE / "bench-pylib"


def timed(fn, n: int, warm: int = 50) -> float:
    """Median µs of fn() over n calls (after warm-up calls)."""
    for _ in range(warm):
        fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1e6)
    return statistics.median(samples)


def http_sequential(port: int, path: str, headers: dict, body: bytes, n: int) -> float:
    """Median µs of n sequential requests on one keep-alive connection (stdlib client: small, steady cost)."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    samples = []
    for i in range(n + 50):
        t = time.perf_counter()
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"POST {path} answered {resp.status}")
        if i >= 50:
            samples.append((time.perf_counter() - t) * 1e6)
    conn.close()
    return statistics.median(samples)


def components_view(settings, token: str, stub, opa_url: str, n: int, out: Path) -> dict:
    import urllib3

    from regate.enforcer.app import create_app
    from regate.enforcer.credentials import Credential
    from regate.enforcer.spend_record import SpendRecord

    app = create_app(settings)
    comp = app.extensions["regate"]
    rows: dict[str, float] = {}
    try:
        claims = comp.authenticator._verifier.verify(token)
        rows["jwt_verify"] = timed(lambda: comp.authenticator._verifier.verify(token), n)
        rows["authenticate (header parse + verify)"] = timed(
            lambda: comp.authenticator.authenticate({"Authorization": f"Bearer {token}"}), n)
        credential = Credential("jwt", claims=claims)
        rows["user facts (cached lookup)"] = timed(lambda: comp.facts.for_credential(credential), n)
        input_doc = {"request": {"method": "POST", "path": "/v1/chat/completions", "model": CHAT_BODY["model"]},
                     "credential": credential.as_input(), "facts": comp.facts.for_credential(credential)}
        assert comp.opa.decide(input_doc).allow, "the bench token must be allowed"
        rows["opa decide (OpaClient, round trip)"] = timed(lambda: comp.opa.decide(input_doc), n)
        pool = urllib3.connection_from_url(opa_url, maxsize=1)
        body = json.dumps({"input": input_doc}).encode()
        evals = []

        def raw_decide():
            r = pool.urlopen("POST", "/v1/data/regate/authz/decision?metrics=true", body=body,
                             headers={"Content-Type": "application/json"})
            evals.append(json.loads(r.data)["metrics"]["timer_rego_query_eval_ns"] / 1000)

        rows["opa round trip (bare urllib3)"] = timed(raw_decide, n)
        rows["opa eval (OPA's own timer)"] = statistics.median(evals[50:])

        def upstream():
            call = comp.upstreams.open("chat", CHAT_BODY, request_id="bench", extra_headers={})
            call.read_json()
            call.close()

        rows["upstream call (Upstreams.open + read_json)"] = timed(upstream, n)
        stub_pool = urllib3.connection_from_url(stub.url, maxsize=1)
        stub_body = json.dumps(CHAT_BODY).encode()
        stub_headers = {"Authorization": f"Bearer {UPSTREAM_KEY}", "Content-Type": "application/json"}
        rows["upstream round trip (bare urllib3)"] = timed(
            lambda: stub_pool.urlopen("POST", "/v1/chat/completions", body=stub_body, headers=stub_headers).data, n)
        now = datetime.now(timezone.utc)
        counter = iter(range(10**9))
        rows["spend enqueue (SpendWriter.submit)"] = timed(lambda: comp.spend.submit(SpendRecord(
            request_id=f"bench-{next(counter)}", route="/v1/chat/completions", model="gpt-4o-mini",
            user_id="u", team_id="t", organization_id=None, end_user_id=None, key_hash=None, started_at=now,
            ended_at=now, prompt_tokens=2, completion_tokens=8, total_tokens=10, spend_nanos=1, status="success")),
            n)

        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}

        def whole():
            r = client.post("/v1/chat/completions", json=CHAT_BODY, headers=headers)
            assert r.status_code == 200, r.data

        rows["whole request in-process (Flask test client)"] = timed(whole, n)
        profile_path = profile_in_process(whole, n, out)
    finally:
        comp.close()
    parts = ("authenticate (header parse + verify)", "user facts (cached lookup)", "opa decide (OpaClient, round trip)",
             "upstream call (Upstreams.open + read_json)", "spend enqueue (SpendWriter.submit)")
    rows["remainder: Flask/werkzeug + enforcer glue"] = rows["whole request in-process (Flask test client)"] - sum(
        rows[p] for p in parts)
    return {"rows": rows, "pyinstrument_in_process": str(profile_path) if profile_path else None}


def profile_in_process(fn, n: int, out: Path) -> Path | None:
    if not (PYLIB / "pyinstrument").exists():
        print("  (pyinstrument not installed in .cache/bench-pylib: run bench/setup.sh; skipping call tree)")
        return None
    sys.path.insert(0, str(PYLIB))
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0001)
    profiler.start()
    for _ in range(n):
        fn()
    profiler.stop()
    path = out / "pyinstrument-in-process.txt"
    path.write_text(profiler.output_text(unicode=True, color=False, show_all=False))
    (out / "pyinstrument-in-process-flat.txt").write_text(
        profiler.output_text(unicode=True, color=False, flat=True, time="percent_of_total"))
    (out / "pyinstrument-in-process.html").write_text(profiler.output_html())
    return path


def cpu_by_endpoint(enforcer, opa, stub, token: str, rate: float, seconds: float) -> dict:
    """User+system CPU µs per request of the worker, OPA and the stub, for requests doing less and less."""
    auth = {"Authorization": f"Bearer {token}"}
    targets = {
        "POST /v1/chat/completions (JWT, decision, upstream, spend)": chat_target("chat", enforcer.url, token),
        "GET /v1/models (JWT, decision, no upstream)": Target("models", "GET", f"{enforcer.url}/v1/models", auth),
        "GET /health/liveness (no credential, no decision)": Target("health", "GET", f"{enforcer.url}/health/liveness"),
        "direct to the model stub (no regate)": chat_target("direct", stub.url, UPSTREAM_KEY),
    }
    procs = {"worker": enforcer.worker_pids(), "opa": [opa.pid], "stub": [stub.pid]}
    rows = {}
    for name, target in targets.items():
        expect_ok(target)
        before = {k: sum(cpu_seconds(p) for p in ps) for k, ps in procs.items()}
        result = attack(target, rate, seconds, out_dir=None)
        time.sleep(0.5)
        rows[name] = {k: (sum(cpu_seconds(p) for p in ps) - before[k]) / max(result.count, 1) * 1e6
                      for k, ps in procs.items()}
        rows[name]["p50_ms"] = result.pct(50)
    return rows


def _has(*needles: str):
    return lambda stack: any(n in stack for n in needles)


def _own(stack: str) -> bool:
    """Whether a frame of the enforcer's own request handling is on the stack (its HTTP layer aside)."""
    return any("enforcer/" in frame and "enforcer/http_server" not in frame for frame in stack.split(";"))


SPY_GROUPS = {  # what each share means → a test on one sampled stack (frames joined by ";")
    "regate's HTTP layer and gevent outside the Flask app (parsing, response writing, event loop)":
        lambda st: "Flask.__call__" not in st and not _own(st),
    "Flask/werkzeug outside the enforcer's own functions":
        lambda st: "Flask.__call__" in st and not _own(st),
    "gate: JWT verify (TokenVerifier.verify)": _has("TokenVerifier.verify"),
    "gate: OPA decision client (OpaClient.decide: urllib3 + JSON)": _has("OpaClient.decide"),
    "gate: request JSON parse for the model (_request_model)": _has("_request_model"),
    "upstream call (Upstreams.open + read_json: http_client + JSON)": _has("Upstreams.open", "UpstreamCall.read_json"),
    "response JSON re-encode (proxy._forward json.dumps)": lambda st: "_forward" in st and "dumps (json" in st,
    "spend: record (pricing quote + submit)": _has("_SpendContext.record"),
    "spend writer: SQLite batch writes (hold the worker's only OS thread)": _has("Store.record_spend"),
    "access log line + metrics (gate.finish)": _has("finish.<locals>.closed", "finish (enforcer/gate.py"),
}


def spy_worker(enforcer, target, rate: float, seconds: float, out: Path) -> dict | None:
    """Sample the gunicorn worker with py-spy while it serves `rate` req/s; group the samples."""
    spy_bin = BIN / "py-spy"
    if not spy_bin.exists():
        print("  (py-spy not installed in .cache/bench-bin: run bench/setup.sh; skipping)")
        return None
    raw = out / "py-spy-worker.txt"
    spy = subprocess.Popen([str(spy_bin), "record", "--pid", str(enforcer.worker_pids()[0]), "--duration",
                            str(int(seconds) + 2), "--rate", "500", "--format", "raw", "--output", str(raw)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    attack(target, rate, seconds, out_dir=None)
    spy.wait()
    if not raw.exists():
        return None
    total, counts = 0, {name: 0 for name in SPY_GROUPS}
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if "acquire_with_timeout" in frames[-1] or "_WorkerGreenlet.run" in stack or "(enforcer/os_threads" in frames[-1]:
            continue  # gevent's idle threadpool thread and the spend writer's sleep: not work
        total += int(n)
        for name, test in SPY_GROUPS.items():
            if test(stack):
                counts[name] += int(n)
    return {"samples": total, "raw": str(raw),
            "groups": {name: 100 * c / max(total, 1) for name, c in counts.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=2000, help="iterations per measurement")
    parser.add_argument("--load-seconds", type=float, default=8.0, help="seconds of load per CPU measurement")
    parser.add_argument("--cpu-rate", type=float, default=150.0, help="req/s for the CPU and py-spy measurements")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.n, args.load_seconds = 300, 5.0
    out = raw_dir("profile")
    print(f"machine: {machine_line()}\nraw outputs: {out}", flush=True)
    from regate import compiler
    from regate.enforcer.settings import Settings

    with DevIdp() as idp, contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="regate-bench-")))
        config_path = regate_config(tmp / "regate.yaml")
        stub = launch(stack, ModelStub(out))
        opa = launch(stack, Opa(out, compile_bundle(config_path, tmp / "bundle.tar.gz")))
        env = enforcer_env(idp, stub, tmp / "inproc")
        token = idp.team_token()
        settings = Settings.from_config(compiler.load_config(config_path), opa_url=opa.url, environ=env)
        print("A/B: components and the Flask app in this process ...", flush=True)
        inproc = components_view(settings, token, stub, opa.url, args.n, out)

        print("C: the real server, sequential requests ...", flush=True)
        enforcer = launch(stack, Enforcer(out, config_path, opa_url=opa.url, env=enforcer_env(idp, stub, tmp / "data")))
        target = chat_target("regate", enforcer.url, token)
        expect_ok(target)
        body = json.dumps(CHAT_BODY).encode()
        seq_regate = http_sequential(enforcer.port, "/v1/chat/completions",
                                     {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                                     body, args.n)
        seq_direct = http_sequential(stub.port, "/v1/chat/completions",
                                     {"Authorization": f"Bearer {UPSTREAM_KEY}", "Content-Type": "application/json"},
                                     body, args.n)
        enforcer.stop()

        print("D: CPU per request by endpoint, and py-spy in the worker under load ...", flush=True)
        enforcer = launch(stack, Enforcer(out, config_path, opa_url=opa.url, env=enforcer_env(idp, stub, tmp / "data2")))
        cpu_rows = cpu_by_endpoint(enforcer, opa, stub, token, args.cpu_rate, args.load_seconds)
        spy = spy_worker(enforcer, chat_target("regate", enforcer.url, token), args.cpu_rate, args.load_seconds, out)

    rows = inproc["rows"]
    upstream_in_proc = rows["upstream call (Upstreams.open + read_json)"]
    added = seq_regate - seq_direct
    server_part = added - (rows["whole request in-process (Flask test client)"] - upstream_in_proc)
    summary = {"machine": machine_line(), "n": args.n, "cpu_rate": args.cpu_rate, "components_us": rows,
               "sequential_us": {"regate": seq_regate, "direct": seq_direct, "added": added,
                                 "gunicorn+gevent+HTTP remainder": server_part},
               "cpu_us_per_request": cpu_rows, "py_spy": spy}
    write_json(out / "summary.json", summary)
    table = render(summary)
    (out / "table.md").write_text(table)
    print("\n" + table)


def render(s: dict) -> str:
    lines = [f"Machine: {s['machine']}. Median µs per call over {s['n']} calls.", "",
             "| part of the request path | median |", "| --- | --- |"]
    lines += [f"| {name} | {value:,.0f} µs |" for name, value in s["components_us"].items()]
    q = s["sequential_us"]
    lines += ["", "| real server, sequential, one keep-alive connection | median |", "| --- | --- |",
              f"| through regate (`regate serve`, one gevent worker) | {q['regate']:,.0f} µs |",
              f"| directly to the model stub | {q['direct']:,.0f} µs |",
              f"| added by regate | {q['added']:,.0f} µs |",
              f"| of which the server, gevent and the extra HTTP hop (added − in-process app without upstream) | "
              f"{q['gunicorn+gevent+HTTP remainder']:,.0f} µs |"]
    lines += ["", f"CPU time per request (user+system µs) under {s['cpu_rate']:g} req/s, by process:", "",
              "| request | enforcer worker | OPA | model stub | p50 end to end |", "| --- | --- | --- | --- | --- |"]
    for name, row in s["cpu_us_per_request"].items():
        lines.append(f"| {name} | {row['worker']:,.0f} | {row['opa']:,.0f} | {row['stub']:,.0f} | {row['p50_ms']:.2f} ms |")
    if s.get("py_spy"):
        lines += ["", f"py-spy samples of the worker under load ({s['py_spy']['samples']} samples, idle excluded; "
                      f"collapsed stacks in {s['py_spy']['raw']}). Share of busy samples that include the frame:", "",
                  "| frame (inclusive) | share |", "| --- | --- |"]
        lines += [f"| {name} | {share:.0f}% |" for name, share in s["py_spy"]["groups"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
