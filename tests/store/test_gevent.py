"""The store and the writer inside a gevent-monkey-patched process, as under gunicorn's gevent worker."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.postgres import PostgresCluster

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    from gevent import monkey; monkey.patch_all()
    import json, sys
    from gevent.pool import Pool
    from regate.enforcer.spend import SpendWriter
    from regate.enforcer.store import Store
    from tests.store.records import make_record

    url, spool = sys.argv[1], sys.argv[2]
    store = Store.from_url(url, default_sqlite_path="/nonexistent/unused.db")
    store.migrate()
    # Which OS threads commit batches: under gevent every greenlet shares the main thread's id.
    os_thread_id = monkey.get_original("_thread", "get_ident")
    committers = set()
    writer = SpendWriter(store, batch_size=50, flush_interval=0.02, spool_dir=spool,
                         on_commit=lambda records: committers.add(os_thread_id()))
    writer.start()

    def request(i):
        # what a request greenlet does: a store read, then a spend record
        store.user_exists(f"u{i % 5}")
        writer.submit(make_record(f"g-{i}", prompt_tokens=i, completion_tokens=i % 7, team_id="t-gevent"))

    Pool(50).map(request, range(400))
    writer.close(timeout=10)
    print(json.dumps({
        "stats": writer.stats(),
        "summary": store.spend_summary("team", "t-gevent"),
        "expected": sum(make_record(f"g-{i}", prompt_tokens=i, completion_tokens=i % 7).spend_nanos for i in range(400)),
        "patched": monkey.is_module_patched("threading"),
        "committed_off_the_event_loop_thread": bool(committers) and os_thread_id() not in committers,
    }))
    """
)


def test_store_and_writer_under_gevent(postgres_cluster: PostgresCluster, tmp_path):
    url = postgres_cluster.create_database()
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, url, str(tmp_path / "spool")],
        capture_output=True, text=True, timeout=120, cwd=str(ROOT),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["patched"]
    assert out["committed_off_the_event_loop_thread"]  # a real OS thread: a batch never holds the event loop
    assert out["summary"] == {"spend_nanos": out["expected"], "requests": 400}
    assert out["stats"]["written"] == 400 and out["stats"]["spooled"] == 0
