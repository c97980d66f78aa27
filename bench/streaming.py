"""Scenario 2 — streaming: N concurrent SSE streams of ~10 s each, directly and through regate.

    .venv/bin/python bench/streaming.py                 # default: 100 and 1000 streams, 10 s each, 3 runs
    .venv/bin/python bench/streaming.py --smoke         # 50 and 200 streams of 4 s, 1 run

Each stream is `POST /v1/chat/completions` with `"stream": true` (usage included, so the
direct and proxied streams carry the same events). The model stub spaces its events with
--chunk-delay so one stream lasts --seconds; ssebench (bench/ssebench) opens the N streams
evenly over a ramp (N / --open-rate seconds), so all N are open at once after it, and
records per stream: time to the response headers, time to the first SSE event (the
time-to-first-byte that matters to a user), events, and whether `data: [DONE]` arrived.
regate: team RS256 JWT, OPA sidecar, spend recording on. The enforcer's memory is the
VmRSS of its gunicorn worker(s) from /proc, sampled every 0.25 s (peak) and before the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from harness import (
    MODEL,
    UPSTREAM_KEY,
    DevIdp,
    Enforcer,
    ModelStub,
    Opa,
    Pinning,
    chat_target,
    compile_bundle,
    cpu_seconds,
    enforcer_env,
    expect_ok,
    fmt_ms,
    launch,
    machine_line,
    median,
    raw_dir,
    regate_config,
    ssebench_bin,
    write_json,
)

COMPLETION_TOKENS = 20
EVENTS = COMPLETION_TOKENS + 4  # role chunk, tokens, stop chunk, usage chunk, [DONE]


def stream_body() -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}], "stream": True,
            "stream_options": {"include_usage": True}, "max_tokens": COMPLETION_TOKENS}


class RssSampler:
    """Peak summed VmRSS (KiB) of the enforcer's workers while a run lasts."""

    def __init__(self, enforcer: Enforcer | None, interval: float = 0.25):
        self.enforcer, self.interval, self.peak = enforcer, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.enforcer:
                self.peak = max(self.peak, self.enforcer.rss_kib())
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def hold_streams(name: str, base: str, credential: str, n: int, ramp: float, body_path: Path, out: Path, run: int,
                 enforcer: Enforcer | None, cpus: str | None) -> dict:
    cmd = (["taskset", "-c", cpus] if cpus else []) + [
        ssebench_bin(), "-url", f"{base}/v1/chat/completions", "-H", f"Authorization: Bearer {credential}",
        "-H", "Content-Type: application/json", "-body", str(body_path), "-streams", str(n), "-ramp", f"{ramp}s",
        "-out", str(out / f"streams-{name}-{n}-run{run}.jsonl")]
    baseline = enforcer.rss_kib() if enforcer else 0
    cpu_before = sum(cpu_seconds(p) for p in enforcer.worker_pids()) if enforcer else 0.0
    with RssSampler(enforcer) as rss:
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    summary = json.loads(done.stdout)
    summary.update(target=name, run=run, rss_baseline_kib=baseline, rss_peak_kib=rss.peak,
                   enforcer_cpu_s=(sum(cpu_seconds(p) for p in enforcer.worker_pids()) - cpu_before) if enforcer else None)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="100,1000", help="concurrent streams, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of one stream")
    parser.add_argument("--open-rate", type=float, default=200.0, help="streams opened per second during the ramp")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="regate gunicorn workers")
    parser.add_argument("--pin", default="none", help="none (default) or split (see harness.Pinning)")
    parser.add_argument("--gevent-monitor", type=float, metavar="SECONDS",
                        help="report in the enforcer log (raw folder) every time something blocks its event loop "
                             "longer than SECONDS (gevent's monitor thread), with the blocking stack")
    parser.add_argument("--smoke", action="store_true", help="50 and 200 streams of 4 s, 1 run")
    args = parser.parse_args()
    if args.smoke:
        args.streams, args.seconds, args.runs = "50,200", 4.0, 1
    counts = [int(n) for n in args.streams.split(",")]
    pin = Pinning.parse(args.pin)
    out = raw_dir("streaming")
    print(f"machine: {machine_line()}\nraw outputs: {out}", flush=True)
    chunk_delay = args.seconds / (EVENTS - 1)

    results: list[dict] = []
    with DevIdp() as idp, contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="regate-bench-")))
        config = regate_config(tmp / "regate.yaml")
        stub = launch(stack, ModelStub(out, chunk_delay=chunk_delay, completion_tokens=COMPLETION_TOKENS,
                                       cpus=pin.stub))
        opa = launch(stack, Opa(out, compile_bundle(config, tmp / "bundle.tar.gz"), cpus=pin.opa))
        monitor = {"GEVENT_MONITOR_THREAD_ENABLE": "true", "GEVENT_MAX_BLOCKING_TIME": str(args.gevent_monitor)
                   } if args.gevent_monitor else {}
        enforcer = launch(stack, Enforcer(out, config, opa_url=opa.url, env=enforcer_env(idp, stub, tmp / "data"),
                                          workers=args.workers, cpus=pin.proxy, extra_env=monitor))
        token = idp.team_token()
        expect_ok(chat_target("regate", enforcer.url, token))
        body_path = tmp / "stream.json"
        body_path.write_text(json.dumps(stream_body()))
        targets = [("direct", stub.url, UPSTREAM_KEY, None), ("regate", enforcer.url, token, enforcer)]
        idle_rss = enforcer.rss_kib()
        for run in range(1, args.runs + 1):
            order = targets if run % 2 else targets[::-1]
            for n in counts:
                for name, base, credential, proc in order:
                    ramp = max(n / args.open_rate, 0.1)
                    r = hold_streams(name, base, credential, n, ramp, body_path, out, run, proc, pin.client)
                    results.append(r)
                    print(f"  run {run} {n:5d} streams {name:7s} ok {r['ok']:5d} errors {r['errors']:3d} "
                          f"max open {r['max_concurrent']:5d} first event p50 {fmt_ms(r['first_event_p50_ms'])} "
                          f"p99 {fmt_ms(r['first_event_p99_ms'])} total p50 {r['total_p50_ms'] / 1000:.1f} s"
                          + (f" rss peak {r['rss_peak_kib'] / 1024:.0f} MiB" if proc else ""), flush=True)
                    time.sleep(1.0)
    summary = {"machine": machine_line(), "args": vars(args), "chunk_delay": chunk_delay,
               "idle_rss_kib": idle_rss, "results": results}
    write_json(out / "summary.json", summary)
    table = render(summary, counts)
    (out / "table.md").write_text(table)
    print("\n" + table)


def render(s: dict, counts: list[int]) -> str:
    runs = sorted({r["run"] for r in s["results"]})
    lines = [f"Machine: {s['machine']}. {len(runs)} run(s), medians over runs; each stream ~{s['args']['seconds']:g} s "
             f"({EVENTS} events, {s['chunk_delay'] * 1000:.0f} ms apart), opened at {s['args']['open_rate']:g}/s. "
             "First event = time from sending the request to the first SSE `data:` line.", "",
             "| streams | target | held without error (all runs) | max open at once | first event p50 | p99 | "
             "added p50 | added p99 | enforcer RSS idle → peak (all runs) | RSS growth per stream (run 1) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for n in counts:
        by_run = {run: {r["target"]: r for r in s["results"] if r["run"] == run and r["streams"] == n} for run in runs}
        for name in ("direct", "regate"):
            rows = [by_run[run][name] for run in runs]
            ok = sum(r["ok"] for r in rows)
            total = sum(r["streams"] for r in rows)
            errors = {}
            for r in rows:
                for kind, count in r["error_kinds"].items():
                    errors[kind] = errors.get(kind, 0) + count
            held = f"{ok} of {total}" + (f" ({', '.join(f'{k}: {v}' for k, v in errors.items())})" if errors else "")
            p50 = median([r["first_event_p50_ms"] for r in rows])
            p99 = median([r["first_event_p99_ms"] for r in rows])
            if name == "direct":
                added, memory, per = ["—", "—"], "—", "—"
            else:
                added = [fmt_ms(median([by_run[run]["regate"][f"first_event_{q}_ms"]
                                        - by_run[run]["direct"][f"first_event_{q}_ms"] for run in runs]))
                         for q in ("p50", "p99")]
                # Growth per stream from the first run of this size: later runs start from memory that
                # earlier streams left allocated (the worker keeps its heap), which would hide it.
                first = rows[0]
                memory = f"{s['idle_rss_kib'] / 1024:.0f} → {max(r['rss_peak_kib'] for r in rows) / 1024:.0f} MiB"
                per = f"{max(first['rss_peak_kib'] - first['rss_baseline_kib'], 0) / n:.0f} KiB"
            lines.append(f"| {n:,} | {name} | {held} | {median([r['max_concurrent'] for r in rows]):.0f} | "
                         f"{fmt_ms(p50)} | {fmt_ms(p99)} | {added[0]} | {added[1]} | {memory} | {per} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
