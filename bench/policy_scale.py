"""Policy scale: compile time by config size, and OPA decision time by state/route-table size.

Prints a markdown table; nothing here asserts. Usage:
    .venv/bin/python bench/policy_scale.py [--runs 5] [--queries 2000]

Decision time is read from OPA itself (`?metrics=true` → timer_rego_query_eval_ns),
so it measures evaluation, not the HTTP round trip; the round trip is reported too.
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

import compiler  # noqa: E402
from tests.support.opa import OpaServer  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--queries", type=int, default=2000)
    args = parser.parse_args()
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
              f"10k vs 10 routes: {rows[(10_000, 10)] / rows[(10, 10)]:.2f}×")


if __name__ == "__main__":
    main()
