"""Scenario 5 — budgets and rate limits: what a budget and an rpm limit on the key add to a call.

    .venv/bin/python bench/limits.py             # default: 3 runs, 200 req/s, 8 s each, + max-rate search
    .venv/bin/python bench/limits.py --smoke     # 1 run, 3 s attacks, short ladder

Targets (every request `POST /v1/chat/completions`, a virtual key of a team):
  direct          the model stub;
  regate          regate, a key and team without limits (the no-limits figures);
  regate+redis    regate with REDIS_URL (a redis-server on loopback): the key has max_budget and
                  rpm_limit, its team max_budget; every call reads the budget facts (cached 0.5 s),
                  OPA decides the budgets, the call is admitted and released in Redis (two Lua
                  scripts) and its spend counted;
  regate+local    the same key limits on an enforcer without Redis: the host's SQLite counters file.
The rpm limit is far above the load (nothing is refused): the figures are the cost of checking.
Added latency = target percentile − direct percentile at the same rate, in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from harness import (
    MASTER_KEY,
    UPSTREAM_KEY,
    DevIdp,
    Enforcer,
    ModelStub,
    Opa,
    Proc,
    attack,
    chat_target,
    compile_bundle,
    cpu_seconds,
    enforcer_env,
    expect_ok,
    fmt_ms,
    free_port,
    launch,
    machine_line,
    median,
    raw_dir,
    regate_config,
    warm_up,
    write_json,
)
from overhead import LADDER, P99_LIMIT_MS, max_rate, settle


class Redis(Proc):
    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        super().__init__("redis", ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no"], log_dir=log_dir)

    def start(self) -> "Redis":
        super().start()
        deadline = time.monotonic() + 20
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True).stdout.strip() != "PONG":
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server not answering\n{self.tail()}")
            time.sleep(0.1)
        return self


def admin(url: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def limited_key(url: str, team: str, *, limits: bool) -> str:
    fields = {"max_budget": 1_000_000, "budget_duration": "30d", "rpm_limit": 10_000_000} if limits else {}
    admin(url, "/team/new", {"team_id": team, **({"max_budget": 1_000_000} if limits else {})})
    return admin(url, "/key/generate", {"team_id": team, **fields})["key"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rates", default="200", help="fixed rates, req/s, comma-separated")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--step-seconds", type=float, default=4.0)
    parser.add_argument("--ladder-max", type=int, default=1000)
    parser.add_argument("--no-max", action="store_true")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.duration, args.step_seconds = 1, 3.0, 2.0
    rates = [float(r) for r in args.rates.split(",")]
    out = raw_dir("limits")
    print(f"machine: {machine_line()}\nraw outputs: {out}", flush=True)
    with DevIdp() as idp, contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="regate-bench-")))
        config = regate_config(tmp / "regate.yaml")
        stub = launch(stack, ModelStub(out))
        redis = launch(stack, Redis(out))
        opa = launch(stack, Opa(out, compile_bundle(config, tmp / "bundle.tar.gz")))
        shared = launch(stack, Enforcer(out, config, opa_url=opa.url, env=enforcer_env(idp, stub, tmp / "data-redis"),
                                        workers=args.workers, extra_env={"REDIS_URL": redis.url}))
        local = launch(stack, Enforcer(out, config, opa_url=opa.url, env=enforcer_env(idp, stub, tmp / "data-local"),
                                       workers=args.workers, name="enforcer-local"))
        targets = [
            chat_target("direct", stub.url, UPSTREAM_KEY),
            chat_target("regate", shared.url, limited_key(shared.url, "bench-plain", limits=False)),
            chat_target("regate+redis", shared.url, limited_key(shared.url, "bench-limited", limits=True)),
            chat_target("regate+local", local.url, limited_key(local.url, "bench-limited", limits=True)),
        ]
        for t in targets:
            expect_ok(t)
            warm_up(t, rate=50, duration=3)
        groups = {"stub": [stub.pid], "opa": [opa.pid], "redis": [redis.pid],
                  "regate": shared.worker_pids(), "regate+redis": shared.worker_pids(),
                  "regate+local": local.worker_pids()}
        pids = sorted({p for g in groups.values() for p in g})
        settle(pids)
        fixed, ladders = [], []
        for run in range(1, args.runs + 1):
            order = targets[run - 1:] + targets[:run - 1]
            for rate in rates:
                by_name = {}
                for t in order:
                    before = {g: sum(cpu_seconds(p) for p in ps) for g, ps in groups.items()}
                    r = attack(t, rate, args.duration, out_dir=out, tag=f"-run{run}")
                    settle(pids)
                    s = r.summary()
                    s["cpu_us_per_request"] = {g: (sum(cpu_seconds(p) for p in ps) - before[g]) / max(r.count, 1) * 1e6
                                               for g, ps in groups.items()}
                    by_name[t.name] = s
                    print(f"  run {run} {rate:5g} req/s {t.name:13s} p50 {fmt_ms(s['p50_ms']):>10s} "
                          f"p99 {fmt_ms(s['p99_ms']):>10s} errors {r.errors} statuses {s['statuses']}", flush=True)
                fixed.append({"run": run, "rate": rate, "results": by_name})
            if not args.no_max:
                for t in order:
                    if t.name in ("regate", "regate+redis"):
                        ladders.append(max_rate(t, step_seconds=args.step_seconds, pids=pids, out_dir=out, run=run,
                                                ladder=tuple(x for x in LADDER if 200 <= x <= args.ladder_max), cpus=None))
    summary = {"machine": machine_line(), "args": vars(args), "fixed": fixed, "ladders": ladders}
    write_json(out / "summary.json", summary)
    table = render(summary, rates, [t.name for t in targets])
    (out / "table.md").write_text(table)
    print("\n" + table)


def render(summary: dict, rates: list[float], names: list[str]) -> str:
    runs = sorted({f["run"] for f in summary["fixed"]})
    lines = [f"Machine: {summary['machine']}. Median of {len(runs)} run(s), {summary['args']['workers']} worker(s).", "",
             "| rate | target | p50 | p99 | added p50 | added p99 | proxy CPU/request | errors (all runs) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for rate in rates:
        rows = [f for f in summary["fixed"] if f["rate"] == rate]
        for name in names:
            per_run = [f["results"][name] for f in rows]
            cells = [fmt_ms(median([r[f"p{q}_ms"] for r in per_run])) for q in (50, 99)]
            added = ["—", "—"] if name == "direct" else [
                fmt_ms(median([f["results"][name][f"p{q}_ms"] - f["results"]["direct"][f"p{q}_ms"] for f in rows]))
                for q in (50, 99)]
            cpu = "—" if name == "direct" else f"{median([r['cpu_us_per_request'][name] for r in per_run]):,.0f} µs"
            errors = sum(r["errors"] for r in per_run)
            lines.append(f"| {rate:g}/s | {name} | {' | '.join(cells)} | {' | '.join(added)} | {cpu} | "
                         f"{errors} of {sum(r['requests'] for r in per_run)} |")
    if summary["ladders"]:
        lines += ["", f"Highest rate sustained with p99 < {P99_LIMIT_MS:g} ms and no errors:", "",
                  "| target | median | per run |", "| --- | --- | --- |"]
        for name in ("regate", "regate+redis"):
            ls = [x for x in summary["ladders"] if x["target"] == name]
            lines.append(f"| {name} | {median([x['sustained'] or 0 for x in ls]):g} req/s | "
                         + ", ".join(f"{x['sustained'] or 0} ({x['failed_at'] or 'none up to the top'})" for x in ls) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
