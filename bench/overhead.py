"""Scenario 1 — overhead: the same model stub reached directly, through regate, and through LiteLLM's proxy.

    .venv/bin/python bench/overhead.py                  # default: 3 runs, 50/200/500 req/s, 8 s each, + max-rate search
    .venv/bin/python bench/overhead.py --smoke          # ~1 minute: 1 run, 3 s attacks, short ladder
    .venv/bin/python bench/overhead.py --no-litellm --pin split --workers 2

Targets (one set of processes for the whole run, every request `POST /v1/chat/completions`):
  direct   the model stub, with its upstream API key;
  regate   `regate serve` + OPA sidecar, RS256 JWT of a team (dev IdP), spend recording on (SQLite);
  litellm  LiteLLM 1.80.0's proxy, master-key auth, no database.
Each run plays every rate against every target back to back (the order rotates between runs),
so the "added" latency (proxy percentile minus direct percentile at the same rate) and the
LiteLLM/regate ratio are measured within one run; the table gives the median over runs.
Then, per run, each target climbs a ladder of rates (--step-seconds each) until p99 >= 50 ms
or a request fails, twice in a row at the same step (one hiccup of the shared machine does not
end the climb): the highest rate passed is what it sustains.

Between attacks the script waits until the proxies' CPU use settles (an overloaded proxy
keeps working off its backlog after the load generator stops).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

from harness import (
    MASTER_KEY,
    UPSTREAM_KEY,
    DevIdp,
    Enforcer,
    LiteLLM,
    ModelStub,
    Opa,
    Pinning,
    Target,
    attack,
    chat_target,
    children,
    compile_bundle,
    cpu_seconds,
    enforcer_env,
    expect_ok,
    fmt_ms,
    launch,
    litellm_config,
    machine_line,
    median,
    raw_dir,
    regate_config,
    warm_up,
    write_json,
)

LADDER = (50, 100, 150, 200, 250, 300, 350, 400, 450, 500, 600, 700, 800, 900, 1000, 1200, 1400, 1600, 1800,
          2000, 2500, 3000)
P99_LIMIT_MS = 50.0


def settle(pids: list[int], *, idle_share: float = 0.05, window: float = 0.5, limit: float = 90.0) -> float:
    """Wait until the given processes together use < idle_share of a core; seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        before = sum(cpu_seconds(p) for p in pids)
        time.sleep(window)
        if sum(cpu_seconds(p) for p in pids) - before < idle_share * window:
            break
    return time.monotonic() - started


def max_rate(target: Target, *, step_seconds: float, ladder: tuple[int, ...], pids: list[int], out_dir: Path,
             run: int, cpus: str | None) -> dict:
    """Climb the ladder until p99 >= P99_LIMIT_MS or any error; the last rate that passed."""
    passed, failed_at, steps = None, None, []
    for rate in ladder:
        for attempt in (1, 2):  # a step fails only if a second try fails too: one hiccup of the shared machine
            result = attack(target, rate, step_seconds, out_dir=out_dir, tag=f"-ladder-run{run}-try{attempt}",
                            cpus=cpus)
            settle(pids)
            p99 = result.pct(99)
            ok = result.errors == 0 and p99 < P99_LIMIT_MS
            steps.append({"rate": rate, "attempt": attempt, "p99_ms": p99, "errors": result.errors, "ok": ok})
            print(f"    ladder {target.name:8s} {rate:5d} req/s  p99 {fmt_ms(p99):>12s}  errors {result.errors}"
                  + ("" if attempt == 1 else "  (second try)"), flush=True)
            if ok:
                break
        if not ok:
            failed_at = rate
            break
        passed = rate
    return {"target": target.name, "run": run, "sustained": passed, "failed_at": failed_at, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rates", default="50,200,500", help="fixed rates, req/s, comma-separated")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per fixed-rate attack")
    parser.add_argument("--step-seconds", type=float, default=4.0, help="seconds per max-rate ladder step")
    parser.add_argument("--no-max", action="store_true", help="skip the max-rate search")
    parser.add_argument("--ladder-max", type=int, default=1000,
                        help="top of the rate ladder (default 1000 req/s: twice the target; the direct stub passes it)")
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM's proxy")
    parser.add_argument("--workers", type=int, default=1, help="regate gunicorn workers (default 1)")
    parser.add_argument("--litellm-workers", type=int, default=1)
    parser.add_argument("--enforcer-python", metavar="PYTHON",
                        help="run the enforcer with this interpreter (e.g. .cache/bench-venv-debian-python/bin/python "
                             "after bench/setup.sh --debian-python); default: .venv's")
    parser.add_argument("--pin", default="none", help="none (default) or split: client+stub on CPU 0, proxies+OPA on CPU 1")
    parser.add_argument("--smoke", action="store_true", help="1 run, 3 s attacks, 2 s ladder steps")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.duration, args.step_seconds = 1, 3.0, 2.0
    rates = [float(r) for r in args.rates.split(",")]
    pin = Pinning.parse(args.pin)
    out = raw_dir("overhead")
    print(f"machine: {machine_line()}\nraw outputs: {out}", flush=True)

    with DevIdp() as idp, contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="regate-bench-")))
        config = regate_config(tmp / "regate.yaml")
        stub = launch(stack, ModelStub(out, cpus=pin.stub))
        opa = launch(stack, Opa(out, compile_bundle(config, tmp / "bundle.tar.gz"), cpus=pin.opa))
        enforcer = launch(stack, Enforcer(out, config, opa_url=opa.url, env=enforcer_env(idp, stub, tmp / "data"),
                                          workers=args.workers, cpus=pin.proxy, python=args.enforcer_python and os.path.abspath(args.enforcer_python)))
        litellm = None if args.no_litellm else launch(stack, LiteLLM(out, litellm_config(stub, tmp / "litellm.yaml"),
                                                                     workers=args.litellm_workers, cpus=pin.proxy))
        targets = [chat_target("direct", stub.url, UPSTREAM_KEY), chat_target("regate", enforcer.url, idp.team_token())]
        if litellm:
            targets.append(chat_target("litellm", litellm.url, MASTER_KEY))
        for t in targets:
            expect_ok(t)
            warm_up(t, rate=50, duration=3, cpus=pin.client)
        groups = {"stub": [stub.pid], "opa": [opa.pid], "regate": enforcer.worker_pids()}
        if litellm:
            groups["litellm"] = [litellm.pid, *children(litellm.pid)]
        pids = [p for g in groups.values() for p in g]
        settle(pids)
        fixed: list[dict] = []
        ladders: list[dict] = []
        for run in range(1, args.runs + 1):
            order = targets[run - 1:] + targets[:run - 1]  # rotate who goes first
            for rate in rates:
                by_name: dict[str, dict] = {}
                for t in order:
                    cpu_before = {g: sum(cpu_seconds(p) for p in ps) for g, ps in groups.items()}
                    r = attack(t, rate, args.duration, out_dir=out, tag=f"-run{run}", cpus=pin.client)
                    waited = settle(pids)  # an overloaded proxy's backlog counts too
                    s = r.summary()
                    by_name[t.name] = s
                    # CPU µs per request of each component while this target was under load.
                    s["cpu_us_per_request"] = {g: (sum(cpu_seconds(p) for p in ps) - cpu_before[g]) / max(r.count, 1)
                                               * 1e6 for g, ps in groups.items()}
                    print(f"  run {run} {rate:5g} req/s {t.name:8s} p50 {fmt_ms(s['p50_ms']):>11s} "
                          f"p90 {fmt_ms(s['p90_ms']):>11s} p99 {fmt_ms(s['p99_ms']):>11s} errors {r.errors}"
                          f" cpu/req {s['cpu_us_per_request'].get(t.name, 0):.0f} µs (settled {waited:.1f}s)",
                          flush=True)
                fixed.append({"run": run, "rate": rate, "results": by_name})
            if not args.no_max:
                for t in order:
                    ladders.append(max_rate(t, step_seconds=args.step_seconds, pids=pids, out_dir=out, run=run,
                                            ladder=tuple(r for r in LADDER if r <= args.ladder_max),
                                            cpus=pin.client))
        rss = enforcer.rss_kib()
    summary = {"machine": machine_line(), "args": vars(args), "fixed": fixed, "ladders": ladders,
               "enforcer_rss_kib_after": rss}
    write_json(out / "summary.json", summary)
    table = render(summary, rates, [t.name for t in targets])
    (out / "table.md").write_text(table)
    print("\n" + table)


def render(summary: dict, rates: list[float], names: list[str]) -> str:
    runs = sorted({f["run"] for f in summary["fixed"]})
    lines = [f"Machine: {summary['machine']}. Median of {len(runs)} run(s); "
             "added = proxy percentile − direct percentile at the same rate in the same run.", "",
             "| rate | target | p50 | p90 | p99 | added p50 | added p90 | added p99 | errors (all runs) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    ratio_rows = []
    for rate in rates:
        rows = [f for f in summary["fixed"] if f["rate"] == rate]
        for name in names:
            per_run = [f["results"][name] for f in rows]
            cells = [median([r[f"p{q}_ms"] for r in per_run]) for q in (50, 90, 99)]
            if name == "direct":
                added = ["—"] * 3
            else:
                added = [fmt_ms(median([f["results"][name][f"p{q}_ms"] - f["results"]["direct"][f"p{q}_ms"]
                                        for f in rows])) for q in (50, 90, 99)]
            errors = sum(r["errors"] for r in per_run)
            requests = sum(r["requests"] for r in per_run)
            lines.append(f"| {rate:g}/s | {name} | " + " | ".join(fmt_ms(c) for c in cells) + " | "
                         + " | ".join(added) + f" | {errors} of {requests} |")
        if "litellm" in names:
            for q in (50, 99):
                ratios = []
                for f in rows:
                    d = f["results"]["direct"][f"p{q}_ms"]
                    reg = f["results"]["regate"][f"p{q}_ms"] - d
                    lit = f["results"]["litellm"][f"p{q}_ms"] - d
                    ratios.append(lit / reg if reg > 0 else float("nan"))
                ratio_rows.append(f"| {rate:g}/s | p{q} | {median(ratios):.1f}× | "
                                  + ", ".join(f"{r:.1f}×" for r in ratios) + " |")
    lines += ["", "CPU time per request while each target was under load (µs, median over runs; the proxy's own "
                  "process(es), OPA, and the model stub):", "",
              "| rate | target | proxy | OPA | model stub |", "| --- | --- | --- | --- | --- |"]
    for rate in rates:
        rows = [f for f in summary["fixed"] if f["rate"] == rate]
        for name in names:
            cpu = [f["results"][name]["cpu_us_per_request"] for f in rows]
            proxy = "—" if name == "direct" else f"{median([c.get(name, 0) for c in cpu]):,.0f}"
            opa = f"{median([c['opa'] for c in cpu]):,.0f}" if name == "regate" else "—"
            lines.append(f"| {rate:g}/s | {name} | {proxy} | {opa} | {median([c['stub'] for c in cpu]):,.0f} |")
    if ratio_rows:
        lines += ["", "LiteLLM added latency ÷ regate added latency (same run):", "",
                  "| rate | percentile | median ratio | per run |", "| --- | --- | --- | --- |"] + ratio_rows
    if summary["ladders"]:
        lines += ["", f"Highest rate sustained with p99 < {P99_LIMIT_MS:g} ms and no errors "
                      "(ladder of fixed rates, a failing step is tried twice; first failing step in brackets):", "",
                  "| target | median | per run |", "| --- | --- | --- |"]
        for name in names:
            ls = [x for x in summary["ladders"] if x["target"] == name]
            values = [x["sustained"] or 0 for x in ls]
            per_run = ", ".join(f"{x['sustained'] or 0} ({x['failed_at'] or 'none up to the top'})" for x in ls)
            lines.append(f"| {name} | {median(values):g} req/s | {per_run} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
