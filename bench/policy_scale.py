"""Scenario 3 — policy scale: compile time by config size, and decision time by state/route-table size.

Prints markdown tables; nothing here asserts. Usage:
    .venv/bin/python bench/policy_scale.py [--runs 5] [--queries 2000] [--enforcer-runs 3] [--enforcer-seconds 10]
    .venv/bin/python bench/policy_scale.py --smoke

1. Compile time of `regate compile` for 10 / 1k / 10k routes (+ as many email domains).
2. OPA alone: decision evaluation time read from OPA itself (`?metrics=true` →
   timer_rego_query_eval_ns), and the HTTP round trip, for 10 vs 10k routes and 10 vs
   100k blocked teams (state PUT straight into OPA).
3. Through the enforcer (`regate serve` + OPA sidecar): the blocked teams are written into
   the enforcer's SQLite store before it starts, so its own state sync loads them into OPA;
   then vegeta sends `GET /v1/models` (a team JWT; answered by the enforcer after the
   decision, no upstream) at a fixed rate to the four set-ups in turn (all running at once,
   so each run compares them back to back). Reported: end-to-end p50/p99 and the enforcer's
   own mean decision time (regate_decision_seconds sum/count from /metrics).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import urllib3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from regate import compiler  # noqa: E402
from tests.support.opa import OpaServer  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import harness  # noqa: E402


def config_text(routes: int, domains: int) -> str:
    route_lines = "\n".join(
        f"      - /custom/r{i}" if i % 10 else f"      - /custom/r{i}/{{item}}/detail" for i in range(routes)
    )
    domain_lines = "\n".join(f"      - d{i}.example.com" for i in range(domains))
    return f"""\
general_settings:
  enable_jwt_auth: true
  litellm_jwtauth:
    team_id_jwt_field: team_id
    user_id_jwt_field: sub
    user_email_jwt_field: email
    user_allowed_email_domain:
{domain_lines}
    team_allowed_routes:
      - openai_routes
{route_lines}
"""


def time_compile(size: int, runs: int, tmp: Path) -> float:
    path = tmp / f"c{size}.yaml"
    path.write_text(config_text(size, size))
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        compiler.bundle.write(compiler.bundle_files(compiler.load_config(path)), tmp / f"b{size}.tar.gz")
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def time_decisions(opa_bin: str, routes: int, blocked: int, queries: int, tmp: Path) -> tuple[float, float]:
    """Median (eval µs, round trip µs) of a team decision that checks every table."""
    path = tmp / f"d{routes}.yaml"
    path.write_text(config_text(routes, 10))
    bundle = compiler.bundle.write(compiler.bundle_files(compiler.load_config(path)), tmp / f"d{routes}.tar.gz")
    with OpaServer(opa_bin, bundle=str(bundle)) as opa:
        state = {"blocked_teams": {f"team-{i}": True for i in range(blocked)}, "sync_id": "bench"}
        opa.put_state(state)
        pool = urllib3.HTTPConnectionPool("127.0.0.1", opa.port, maxsize=1)
        doc = {"input": {
            "request": {"method": "POST", "path": f"/custom/r{routes - 1}" if routes % 10 != 1 else "/v1/chat/completions"},
            "credential": {"type": "jwt", "claims": {"team_id": "team-x", "sub": "u1", "email": "a@d3.example.com"}},
            "facts": {"user_id": "u1", "user_exists": True},
        }}
        body = json.dumps(doc).encode()
        evals, trips = [], []
        for i in range(queries + 200):
            start = time.perf_counter()
            resp = pool.request("POST", "/v1/data/regate/authz/decision?metrics=true", body=body,
                                headers={"Content-Type": "application/json"})
            elapsed = time.perf_counter() - start
            result = json.loads(resp.data)
            assert result["result"]["allow"] is True, result
            if i >= 200:  # warm-up
                evals.append(result["metrics"]["timer_rego_query_eval_ns"] / 1000)
                trips.append(elapsed * 1e6)
        pool.close()
    return statistics.median(evals), statistics.median(trips)


def seed_blocked_teams(data_dir: Path, count: int) -> None:
    """Write `count` blocked teams (team-0 ... team-N) into the enforcer's SQLite store before it starts.

    One bulk transaction through the store's own tables (Store.set_team_blocked commits and
    fsyncs once per team: 100k of those take minutes); the enforcer's state sync then loads
    them into OPA exactly as it would load blocks made through the API.
    """
    from datetime import datetime, timezone

    import sqlalchemy as sa

    from regate.enforcer.store import Store, block_events, teams

    store = Store.from_url(None, default_sqlite_path=data_dir / "regate.db")
    try:
        store.migrate()
        now = datetime.now(timezone.utc)
        with store.engine.begin() as conn:
            ids = [f"team-{i}" for i in range(count)]
            conn.execute(sa.insert(teams), [{"team_id": t, "models": [], "blocked": True, "created_at": now}
                                            for t in ids])
            conn.execute(sa.insert(block_events), [{"team_id": t, "blocked": True, "at": now} for t in ids])
        seq, blocked = store.blocked_teams_snapshot()
        assert len(blocked) == count, (len(blocked), count)
    finally:
        store.close()


def decision_metrics(url: str) -> tuple[float, float]:
    """(sum seconds, count) of regate_decision_seconds from the enforcer's /metrics."""
    import urllib.request

    total = count = 0.0
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("regate_decision_seconds_sum"):
                total = float(line.split()[-1])
            elif line.startswith("regate_decision_seconds_count"):
                count = float(line.split()[-1])
    return total, count


def through_enforcer(runs: int, seconds: float, rate: float, cases: list[tuple[int, int]]) -> list[dict]:
    """End-to-end and enforcer-measured decision latency for each (routes, blocked teams) case."""
    import contextlib

    out = harness.raw_dir("policy-enforcer")
    results = []
    with harness.DevIdp() as idp, contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="regate-bench-")))
        stub = harness.launch(stack, harness.ModelStub(out))
        setups = []
        for routes, blocked in cases:
            name = f"r{routes}-b{blocked}"
            config = harness.regate_config(tmp / f"{name}.yaml", extra_team_routes=routes)
            started = time.perf_counter()
            bundle = harness.compile_bundle(config, tmp / f"{name}.tar.gz")
            data = tmp / f"data-{name}"
            data.mkdir()
            seed_blocked_teams(data, blocked)
            opa = harness.launch(stack, harness.Opa(out, bundle, name=f"opa-{name}"))
            enforcer = harness.launch(stack, harness.Enforcer(out, config, opa_url=opa.url, name=f"enforcer-{name}",
                                                              env=harness.enforcer_env(idp, stub, data)))
            target = harness.Target(name, "GET", f"{enforcer.url}/v1/models",
                                    {"Authorization": f"Bearer {idp.team_token()}"})
            harness.expect_ok(target)
            if blocked:  # the seeded blocks really are in force
                status, body = harness.check_once(harness.Target(name, "GET", f"{enforcer.url}/v1/models", {
                    "Authorization": f"Bearer {idp.team_token(team=f'team-{blocked - 1}')}"}))
                assert status == 403 and b"is blocked" in body, (status, body[:200])
            harness.warm_up(target, rate=rate, duration=2)
            print(f"  {name}: ready in {time.perf_counter() - started:.1f} s (compile, seed, start)", flush=True)
            setups.append((routes, blocked, enforcer, target))
        for run in range(1, runs + 1):
            for routes, blocked, enforcer, target in (setups if run % 2 else setups[::-1]):
                before = decision_metrics(enforcer.url)
                r = harness.attack(target, rate, seconds, out_dir=out, tag=f"-run{run}")
                after = decision_metrics(enforcer.url)
                mean_us = (after[0] - before[0]) / max(after[1] - before[1], 1) * 1e6
                results.append({"routes": routes, "blocked": blocked, "run": run, "p50_ms": r.pct(50),
                                "p99_ms": r.pct(99), "errors": r.errors, "decision_mean_us": mean_us})
                print(f"  run {run} routes {routes:6,} blocked {blocked:7,}: p50 {r.pct(50):.2f} ms "
                      f"p99 {r.pct(99):.2f} ms decision mean {mean_us:.0f} µs errors {r.errors}", flush=True)
                time.sleep(0.5)
    harness.write_json(out / "summary.json", results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="compile runs per size")
    parser.add_argument("--queries", type=int, default=2000, help="OPA-alone decisions per case")
    parser.add_argument("--enforcer-runs", type=int, default=3)
    parser.add_argument("--enforcer-seconds", type=float, default=10.0)
    parser.add_argument("--enforcer-rate", type=float, default=100.0, help="req/s of GET /v1/models per case")
    parser.add_argument("--no-enforcer", action="store_true", help="skip the through-the-enforcer part")
    parser.add_argument("--smoke", action="store_true", help="1 compile run, 300 queries, 1 enforcer run of 3 s")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.queries, args.enforcer_runs, args.enforcer_seconds = 1, 300, 1, 3.0
    print(f"machine: {harness.machine_line()}\n", flush=True)
    opa_bin = os.environ.get("REGATE_OPA_BIN") or str(ROOT / ".cache/opa/1.22.3/opa")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        print("| config size (routes + domains) | compile time (median) |")
        print("| --- | --- |")
        for size in (10, 1_000, 10_000):
            print(f"| {size:,} + {size:,} | {time_compile(size, args.runs, tmp) * 1000:.1f} ms |")
        print()
        print("| routes | blocked teams | OPA eval (median) | HTTP round trip (median) |")
        print("| --- | --- | --- | --- |")
        rows = {}
        for routes, blocked in ((10, 10), (10, 100_000), (10_000, 10), (10_000, 100_000)):
            ev, rt = time_decisions(opa_bin, routes, blocked, args.queries, tmp)
            rows[(routes, blocked)] = ev
            print(f"| {routes:,} | {blocked:,} | {ev:.0f} µs | {rt:.0f} µs |")
        ratio = rows[(10, 100_000)] / rows[(10, 10)]
        print(f"\n100k vs 10 blocked teams: {ratio:.2f}× eval time; "
              f"10k vs 10 routes: {rows[(10_000, 10)] / rows[(10, 10)]:.2f}×", flush=True)
    if args.no_enforcer:
        return
    print("\nthrough the enforcer ...", flush=True)
    cases = [(10, 10), (10, 100_000), (10_000, 10), (10_000, 100_000)]
    results = through_enforcer(args.enforcer_runs, args.enforcer_seconds, args.enforcer_rate, cases)
    print(f"\nThrough the enforcer: GET /v1/models with a team JWT at {args.enforcer_rate:g} req/s, "
          f"{args.enforcer_seconds:g} s per case, median of {args.enforcer_runs} run(s).\n")
    print("| extra team routes | blocked teams | p50 | p99 | enforcer's mean decision time | errors |")
    print("| --- | --- | --- | --- | --- | --- |")
    med = {}
    for routes, blocked in cases:
        rs = [r for r in results if (r["routes"], r["blocked"]) == (routes, blocked)]
        med[(routes, blocked)] = {k: statistics.median(r[k] for r in rs) for k in ("p50_ms", "p99_ms", "decision_mean_us")}
        m = med[(routes, blocked)]
        print(f"| {routes:,} | {blocked:,} | {m['p50_ms']:.2f} ms | {m['p99_ms']:.2f} ms | "
              f"{m['decision_mean_us']:.0f} µs | {sum(r['errors'] for r in rs)} |")
    for label, big, small in (("100k vs 10 blocked teams (10 routes)", (10, 100_000), (10, 10)),
                              ("10k vs 10 routes (10 blocked)", (10_000, 10), (10, 10))):
        ratios = []
        for run in sorted({r["run"] for r in results}):
            b = next(r for r in results if (r["routes"], r["blocked"]) == big and r["run"] == run)
            s_ = next(r for r in results if (r["routes"], r["blocked"]) == small and r["run"] == run)
            ratios.append(b["decision_mean_us"] / s_["decision_mean_us"])
        print(f"\n{label}: enforcer decision time ratio {statistics.median(ratios):.2f}× (per run: "
              + ", ".join(f"{x:.2f}×" for x in ratios) + "); p50 end to end "
              f"{med[big]['p50_ms'] / med[small]['p50_ms']:.2f}×")


if __name__ == "__main__":
    main()
