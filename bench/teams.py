"""Issue 12 — many teams per token: what a token with 50 groups adds to a decision miss.

Prints markdown tables; nothing here asserts about speed. Usage:
    .venv/bin/python bench/teams.py [--queries 3000] [--requests 3000] [--groups 50]
    .venv/bin/python bench/teams.py --smoke

The config is examples/regate.yaml with `enforce_team_based_model_access: true` (so every team
must be looked up) and `team_ids_jwt_field: groups`. Four tokens are compared:

- one team: `team_id` claim, one team in the store;
- 50 groups, first: a `groups` claim of 50 teams in the store, the first of which may use the
  requested model (the usual case: the policy tries the first team alone);
- 50 groups, last: the same 50 teams, all but the last limited to another model, so the policy
  has to look past every team before it finds the one that may use the model;
- 50 groups, one a team: 49 groups that are not teams (not in the store), then one that is (an
  IdP's groups are mostly not LiteLLM teams).

1. OPA alone: the decision's evaluation time from OPA itself (`?metrics=true` →
   timer_rego_query_eval_ns) and the HTTP round trip, with the facts the enforcer would send.
2. Through the enforcer (`regate serve` + OPA sidecar, `REGATE_DECISION_CACHE_TTL=0`, so every
   request is a decision miss): `POST /v1/chat/completions` to the model stub, the tokens
   interleaved request by request on one keep-alive connection; per token the median and p99
   latency, and the enforcer's own mean decision time (regate_decision_seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import urllib3
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import harness  # noqa: E402

from regate.enforcer.team_facts import teams_without_model  # noqa: E402
from tests.support.opa import OpaServer  # noqa: E402

WANTED = "gpt-4o-mini"  # the model the requests ask for
OTHER = "azure-gpt-4o"  # what every team but the last is limited to


def config(path: Path) -> Path:
    doc = yaml.safe_load((ROOT / "examples" / "regate.yaml").read_text())
    jwt = doc["general_settings"]["litellm_jwtauth"]
    jwt.update(team_ids_jwt_field="groups", enforce_team_based_model_access=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def team_models(groups: int) -> dict[str, list[str]]:
    """The store's teams: team-one (every model); f0 ... (only f0 may use WANTED); l0 ... (only the
    last may); of g0 ... only the last is a team."""
    teams = {"team-one": []}
    teams.update({f"f{i}": ([] if i == 0 else [OTHER]) for i in range(groups)})
    teams.update({f"l{i}": ([] if i == groups - 1 else [OTHER]) for i in range(groups)})
    teams[f"g{groups - 1}"] = []
    return teams


KINDS = {"one team": "", "first": "f", "last": "l", "one a team": "g"}  # kind -> prefix of its groups


def kinds(groups: int) -> tuple[str, ...]:
    return tuple(kind if kind == "one team" else f"{groups} groups, {kind}" for kind in KINDS)


def _prefix(kind: str) -> str:
    return KINDS[kind.split(", ")[-1]]


def claims(kind: str, groups: int) -> dict:
    base = {"sub": "bench-user", "email": "bench-user@example.com"}
    if kind == "one team":
        return {**base, "team_id": "team-one"}
    return {**base, "groups": [f"{_prefix(kind)}{i}" for i in range(groups)]}


def expected_team(kind: str, groups: int) -> str:
    if kind == "one team":
        return "team-one"
    return f"{_prefix(kind)}{0 if kind.endswith('first') else groups - 1}"


def opa_alone(opa_bin: str, bundle: Path, groups: int, queries: int) -> dict[str, tuple[float, float]]:
    """Median (eval µs, round trip µs) per token kind, with the facts the enforcer would send; the
    kinds take turns query by query, so a change in the machine's load hits them alike."""
    models = team_models(groups)
    bodies = {}
    for kind in kinds(groups):
        token = claims(kind, groups)
        named = [token["team_id"]] if "team_id" in token else token["groups"]
        teams = {t: models[t] for t in named if t in models}
        facts = {"user_id": "bench-user", "user_exists": True, "teams": teams}
        if without := teams_without_model(teams, WANTED):
            facts["teams_without_model"] = without
        bodies[kind] = json.dumps({"input": {
            "request": {"method": "POST", "path": "/v1/chat/completions", "model": WANTED, "requested_team": None},
            "credential": {"type": "jwt", "claims": token}, "facts": facts,
        }}).encode()
    evals: dict[str, list[float]] = {k: [] for k in bodies}
    trips: dict[str, list[float]] = {k: [] for k in bodies}
    with OpaServer(opa_bin, bundle=str(bundle)) as opa:
        opa.put_state({"blocked_teams": {}, "sync_id": "bench"})
        pool = urllib3.HTTPConnectionPool("127.0.0.1", opa.port, maxsize=1)
        for i in range(queries + 300):
            for kind, body in bodies.items():
                started = time.perf_counter()
                resp = pool.request("POST", "/v1/data/regate/authz/decision?metrics=true", body=body,
                                    headers={"Content-Type": "application/json"})
                elapsed = time.perf_counter() - started
                result = json.loads(resp.data)
                decision = result["result"]
                assert decision["allow"] is True and decision["subject"]["team_id"] == expected_team(kind, groups), decision
                if i >= 300:  # warm-up
                    evals[kind].append(result["metrics"]["timer_rego_query_eval_ns"] / 1000)
                    trips[kind].append(elapsed * 1e6)
        pool.close()
    return {k: (statistics.median(evals[k]), statistics.median(trips[k])) for k in bodies}


def seed_teams(data_dir: Path, groups: int) -> None:
    from regate.enforcer.store import Store

    store = Store.from_url(None, default_sqlite_path=data_dir / "regate.db")
    try:
        store.migrate()
        for team, models in team_models(groups).items():
            store.create_team(team, models=models)
        store.create_user("bench-user")
    finally:
        store.close()


def decision_metrics(url: str) -> tuple[float, float]:
    total = count = 0.0
    with urllib3.PoolManager() as http:
        for line in http.request("GET", f"{url}/metrics").data.decode().splitlines():
            if line.startswith("regate_decision_seconds_sum"):
                total = float(line.split()[-1])
            elif line.startswith("regate_decision_seconds_count"):
                count = float(line.split()[-1])
    return total, count


def through_enforcer(cfg: Path, bundle: Path, groups: int, requests: int) -> dict[str, dict]:
    out_dir = harness.raw_dir("teams")
    order = kinds(groups)
    latencies: dict[str, list[float]] = {k: [] for k in order}
    decision_us: dict[str, list[float]] = {k: [] for k in order}
    with harness.DevIdp() as idp, contextlib.ExitStack() as stack:
        data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="regate-bench-teams-")))
        seed_teams(data, groups)
        stub = harness.launch(stack, harness.ModelStub(out_dir))
        opa = harness.launch(stack, harness.Opa(out_dir, bundle))
        enforcer = harness.launch(stack, harness.Enforcer(
            out_dir, cfg, opa_url=opa.url, env=harness.enforcer_env(idp, stub, data),
            extra_env={"REGATE_DECISION_CACHE_TTL": "0"}))
        tokens = {k: idp.keys.mint(claims(k, groups), issuer=idp.issuer, audience=harness.AUDIENCE, ttl=6 * 3600)
                  for k in order}
        body = json.dumps({"model": WANTED, "messages": [{"role": "user", "content": "hi"}]}).encode()
        pool = urllib3.HTTPConnectionPool("127.0.0.1", int(enforcer.url.rsplit(":", 1)[1]), maxsize=1)

        def call(kind: str) -> float:
            started = time.perf_counter()
            resp = pool.request("POST", "/v1/chat/completions", body=body, headers={
                "Authorization": f"Bearer {tokens[kind]}", "Content-Type": "application/json"})
            elapsed = time.perf_counter() - started
            assert resp.status == 200, (kind, resp.status, resp.data[:300])
            return elapsed * 1000

        for _ in range(300):  # warm-up: caches and connections
            for kind in order:
                call(kind)
        for i in range(requests):
            for kind in (order if i % 2 else order[::-1]):
                before = decision_metrics(enforcer.url) if i % 100 == 0 else None
                latencies[kind].append(call(kind))
                if before is not None:
                    after = decision_metrics(enforcer.url)
                    decision_us[kind].append((after[0] - before[0]) / max(after[1] - before[1], 1) * 1e6)
        pool.close()
    result = {k: {"p50_ms": harness.percentile(latencies[k], 50), "p99_ms": harness.percentile(latencies[k], 99),
                  "decision_us": statistics.median(decision_us[k])} for k in order}
    harness.write_json(out_dir / "summary.json", {"latencies_ms": latencies, "summary": result})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--queries", type=int, default=3000, help="OPA-alone decisions per token")
    parser.add_argument("--requests", type=int, default=3000, help="requests per token through the enforcer")
    parser.add_argument("--no-enforcer", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="300 queries, 300 requests")
    args = parser.parse_args()
    if args.smoke:
        args.queries, args.requests = 300, 300
    print(f"machine: {harness.machine_line()}\n", flush=True)
    opa_bin = os.environ.get("REGATE_OPA_BIN") or harness.need(ROOT / ".cache/opa/1.22.3/opa", "run scripts/bootstrap")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cfg = config(tmp / "teams.yaml")
        bundle = harness.compile_bundle(cfg, tmp / "teams.tar.gz")
        alone = opa_alone(opa_bin, bundle, args.groups, args.queries)
        one = alone["one team"]
        print(f"OPA alone (median; load average {os.getloadavg()[0]:.1f}):\n")
        print("| token | OPA eval | HTTP round trip | added to one team (eval / round trip) |")
        print("| --- | --- | --- | --- |")
        for kind, (ev, rt) in alone.items():
            print(f"| {kind} | {ev:.0f} µs | {rt:.0f} µs | {ev - one[0]:+.0f} / {rt - one[1]:+.0f} µs |")
        print("\n(target: 50 groups add ≤ 300 µs to a decision miss)\n", flush=True)
        if args.no_enforcer:
            return
        print("through the enforcer (every request a decision miss) ...", flush=True)
        res = through_enforcer(cfg, bundle, args.groups, args.requests)
    print(f"\nPOST /v1/chat/completions, {args.requests} requests per token, interleaved, decision cache off:\n")
    print("| token | p50 | p99 | enforcer's decision time (median of means) | added to one team (p50 / decision) |")
    print("| --- | --- | --- | --- | --- |")
    one = res["one team"]
    for kind, r in res.items():
        print(f"| {kind} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {r['decision_us']:.0f} µs | "
              f"{(r['p50_ms'] - one['p50_ms']) * 1000:+.0f} / {r['decision_us'] - one['decision_us']:+.0f} µs |")
    print(f"\n(load average {os.getloadavg()[0]:.1f}; target: 50 groups add ≤ 300 µs to a decision miss)")


if __name__ == "__main__":
    main()
