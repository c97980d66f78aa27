"""Scenario 6 — the audit tools at scale: `regate matrix` and `regate diff` of configs with 1,000 routes.

Prints a markdown table; nothing here asserts. Usage:
    .venv/bin/python bench/audit.py [--runs 3] [--routes 1000] [--teams 50]

The config: the routes in team_allowed_routes (every tenth one a template) beside openai_routes,
admins on management and spend routes, users by `sub` with email domains. The NEW config of the
diff adds ten routes, /key/generate and an email domain. The teams are extra team-token rows
(`--team`): teams live in the store, not in the config, so that is how a reviewer gets a row per team.
Each command runs as a reviewer runs it (a `regate` process, its OPA, the JSON written to a
file); reported: wall time (median and each run) and CPU time of regate + its OPA.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGATE = ROOT / ".venv" / "bin" / "regate"


def config_text(routes: int, *, extra_routes: int = 0, extra_domain: bool = False) -> str:
    lines = [f"      - /custom/r{i}" if i % 10 else f"      - /custom/r{i}/{{item}}/detail"
             for i in range(routes + extra_routes)]
    if extra_routes:
        lines.append("      - /key/generate")
    domains = "[example.com, partner.example.org]" if extra_domain else "[example.com]"
    route_lines = "\n".join(lines)
    return f"""\
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
  enable_jwt_auth: true
  litellm_jwtauth:
    admin_allowed_routes: [management_routes, spend_tracking_routes]
    team_id_jwt_field: team_id
    user_id_jwt_field: sub
    user_email_jwt_field: email
    user_allowed_email_domain: {domains}
    team_allowed_routes:
      - openai_routes
{route_lines}
"""


def timed(argv: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall seconds, CPU seconds of the command and its children (regate's OPA), the result."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=os.environ | {"PYTHONHASHSEED": "0"})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--teams", type=int, default=50)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="regate-bench-audit-"))
    old, new = work / "old.yaml", work / "new.yaml"
    old.write_text(config_text(args.routes))
    new.write_text(config_text(args.routes, extra_routes=10, extra_domain=True))
    teams = [arg for n in range(1, args.teams + 1) for arg in ("--team", f"t{n:02d}")]
    scenarios = [
        ("matrix", [str(REGATE), "matrix", str(old), "--format", "json", "-o", str(work / "m.json")], "< 10 s"),
        (f"matrix, {args.teams} team rows", [str(REGATE), "matrix", str(old), "--format", "json", "-o",
                                             str(work / "m.json"), *teams], "< 10 s"),
        ("diff", [str(REGATE), "diff", str(old), str(new), "--format", "json", "-o", str(work / "d.json")], "< 20 s"),
        (f"diff, {args.teams} team rows", [str(REGATE), "diff", str(old), str(new), "--format", "json", "-o",
                                           str(work / "d.json"), *teams], "< 20 s"),
    ]
    rows = []
    for name, argv, target in scenarios:
        walls, cpus = [], []
        for _ in range(args.runs):
            wall, cpu, result = timed(argv)
            if result.returncode not in (0, 1):
                print(result.stderr, file=sys.stderr)
                return 1
            walls.append(wall)
            cpus.append(cpu)
        out = json.loads((work / ("m.json" if name.startswith("matrix") else "d.json")).read_text())
        if name.startswith("matrix"):
            size = f"{len(out['principals'])} principals x {len(out['decisions']) // len(out['principals'])} paths " \
                   f"= {len(out['decisions'])} decisions"
        else:
            size = f"{len(out)} changed cells"
        rows.append((name, size, statistics.median(walls), walls, statistics.median(cpus), target))
        print(f"{name}: median {statistics.median(walls):.1f} s", file=sys.stderr, flush=True)

    print(f"\n`regate` audit commands, {args.routes} routes ({os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at the end)\n")
    print("| command | size | wall, median | wall, runs | CPU (regate + OPA), median | target |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, size, wall, walls, cpu, target in rows:
        print(f"| {name} | {size} | {wall:.1f} s | {', '.join(f'{w:.1f}' for w in walls)} | {cpu:.1f} s | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
