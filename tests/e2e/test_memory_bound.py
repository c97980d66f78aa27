"""The worker's memory stays bounded under a flood of distinct requests (issue 11, item 2): the
caches it keeps across requests (decisions, verified tokens, keys, user facts) are bounded in
entries and bytes, client strings cannot grow a cache key, and refusals of anonymous requests are
not kept at all.

A real gunicorn enforcer; the worker's resident memory is read from /proc before and after
thousands of distinct anonymous and authenticated requests (tokens padded to ~6.5 KiB, enough to
fill the byte budgets of the token and decision caches), plus the review's attack: anonymous
requests naming 2 MB models. The ceiling on the growth is stated here and in the README.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import urllib3

from tests.support.enforcer import EnforcerProcess

from .conftest import EXAMPLE, chat_body, enforcer_env

MAX_GROWTH_MB = 32  # the RSS growth allowed over the whole flood: the byte budgets of the token (16 MiB) and
# decision (8 MiB) caches, plus allocator slack. Measured: +15 MB (before the fix: +50 MB)
AUTHENTICATED = 2000  # distinct teams: distinct decisions and tokens, beyond both caches' byte budgets
ANONYMOUS = 1000  # distinct paths and 256-character model names (the longest allowed)
LARGE_MODEL_REQUESTS = 60  # the review's attack: 60 anonymous requests with 2 MB model names took +128 MB


def worker_rss_mb(master_pid: int) -> float:
    with open(f"/proc/{master_pid}/task/{master_pid}/children") as f:
        [worker] = f.read().split()
    with open(f"/proc/{worker}/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024


def test_a_flood_of_distinct_requests_keeps_the_worker_under_its_ceiling(idp, upstream, opa, tmp_path):
    http = urllib3.PoolManager(maxsize=4, retries=False, timeout=urllib3.Timeout(connect=5, read=30))
    # No user claim: no user record is written for each (the flood is about memory, not the store).
    tokens = [idp.mint({"team_id": f"mem-team-{i}", "email": f"mem-{i}@example.com", "pad": f"{i:05d}" * 900})
              for i in range(AUTHENTICATED)]
    big = json.dumps(chat_body(model="m" * 2_000_000)).encode()
    with EnforcerProcess(EXAMPLE, env=enforcer_env(idp, upstream), opa_url=opa.url, data_dir=tmp_path) as proc:

        def send(request: tuple[str, str, bytes | None, str | None]) -> int:
            method, path, body, token = request
            headers = {"Content-Type": "application/json"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            return http.request(method, proc.url + path, body=body, headers=headers).status

        requests = [("GET", "/v1/models", None, token) for token in tokens]
        requests += [("POST", f"/v1/chat/completions/{i}/{'x' * 1500}",
                      json.dumps(chat_body(model=f"{i:08d}" + "m" * 248)).encode(), None) for i in range(ANONYMOUS)]
        requests += [("POST", "/v1/chat/completions", big, None)] * LARGE_MODEL_REQUESTS
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(send, requests[:100]))  # warm up: imports, pools, first allocations
            before = worker_rss_mb(proc.proc.pid)
            statuses = list(pool.map(send, requests))
        after = worker_rss_mb(proc.proc.pid)
    print(f"worker RSS {before:.1f} MB -> {after:.1f} MB")
    assert after - before <= MAX_GROWTH_MB, f"the worker grew from {before:.1f} MB to {after:.1f} MB"
    assert (statuses.count(200), statuses.count(401), statuses.count(400)) == (
        AUTHENTICATED, ANONYMOUS, LARGE_MODEL_REQUESTS)
