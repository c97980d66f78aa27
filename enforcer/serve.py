"""`regate serve`: the enforcer under gunicorn, with a managed OPA unless --opa-url is given.

Worker class: gevent. A streamed completion holds its connection for seconds to
minutes; with gevent each one costs a greenlet (a few KiB), so one worker holds
thousands at once, where sync/gthread workers would need a thread per stream.
Every blocking call here (sockets of the HTTP clients, psycopg 3, SQLite briefly) is
gevent-aware or short.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from gunicorn.app.base import BaseApplication

from regate import compiler
from regate.common.opa import OPA_VERSION, OpaProcess
from regate.compiler.render import MASK_DECISION

from .settings import Settings

log = logging.getLogger("regate.serve")


def managed_opa(bundle: Path) -> OpaProcess:
    """A local OPA on loopback loaded with `bundle`, its decision log on (to this process's stdout,
    beside the access log, as deploy/ runs OPA): the access log's decision_id names a logged decision.
    The bundle's mask policy keeps only the identity ids of a token's claims in that log."""
    return OpaProcess(["--set", "decision_logs.console=true", "--set", f"decision_logs.mask_decision={MASK_DECISION}",
                       "--bundle", str(bundle)])


class GunicornApp(BaseApplication):
    """gunicorn running the WSGI app that `load_app()` builds inside each worker
    (after the fork and gevent's patching, so sockets, locks and threads are cooperative)."""

    def __init__(self, load_app, options: dict):
        self._load_app = load_app
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return self._load_app()


def _load_enforcer(settings: Settings):
    from .app import configure_logging, create_app

    configure_logging()
    return create_app(settings)


def _worker_exit(server, worker):
    # SIGTERM: gunicorn stops accepting, lets in-flight requests finish (graceful_timeout),
    # then this runs in the worker: flush queued spend so none is lost.
    app = getattr(worker, "wsgi", None)
    components = getattr(app, "extensions", {}).get("regate") if app is not None else None
    if components is not None:
        components.close()


def _child_exit(server, worker):
    # In the master, after a worker died (killed, crashed or stopped): with several workers the
    # gauges are files per process, summed over all of them; a dead one's must go, or its
    # in-flight requests and queued spend would show for ever.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


# No control socket to leave behind, and no peer (not even loopback) may shorten the routed
# path with a SCRIPT_NAME header or claim another scheme.
HARDENING = {"control_socket_disable": True, "forwarded_allow_ips": ""}


def gunicorn_options(host: str, port: int, workers: int) -> dict:
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        # gunicorn's gevent worker with regate's own connection loop (llhttp parsing): see http_server.py.
        "worker_class": "regate.enforcer.http_server.Worker",
        "worker_connections": 10_000,
        "timeout": 60,
        "graceful_timeout": 30,
        # Idle keep-alive connections hold up a graceful stop for this long; 5 s keeps
        # deploys quick while sparing a reconnect between a client's requests.
        "keepalive": int(os.environ.get("REGATE_KEEPALIVE", "5")),
        # Large enough that an oversized token reaches the app and gets its 401;
        # anything beyond this is refused by gunicorn itself (400) before parsing.
        "limit_request_field_size": 16_384,
        "worker_exit": _worker_exit,
        "child_exit": _child_exit,
        **HARDENING,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
    }


def serve(args) -> int:
    logging.basicConfig(level="INFO", format="%(message)s")
    config = compiler.load_config(args.config)
    for warning in config.warnings:
        print(warning, file=sys.stderr)
    settings = Settings.from_config(config, opa_url=args.opa_url or "http://127.0.0.1:0",
                                    database_url=args.database_url)
    # Fail before forking on what would fail in every worker: unset env vars, bad upstream URLs.
    from .upstreams import Upstreams

    Upstreams(config.deployments, environ=settings.environ).close()
    managed = None
    multiproc_dir = None
    master_pid = os.getpid()
    try:
        if not args.opa_url:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            bundle = compiler.bundle.write(compiler.bundle_files(config), settings.data_dir / "bundle.tar.gz")
            managed = managed_opa(bundle).start()
            log.info("managed OPA %s on %s", OPA_VERSION, managed.url)
            settings = Settings.from_config(config, opa_url=managed.url, database_url=args.database_url)
        if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            multiproc_dir = tempfile.mkdtemp(prefix="regate-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
        # Migrate once before forking: a store that cannot be reached or migrated stops the start
        # here with its own message, instead of every worker failing to boot. (Imported only now:
        # the store imports the metrics, which must see PROMETHEUS_MULTIPROC_DIR when first loaded.)
        from .store import Store

        store = Store.from_url(settings.database_url, default_sqlite_path=str(settings.sqlite_path))
        try:
            store.migrate()
        finally:
            store.close()
        log.info("regate enforcer on http://%s:%d (OPA %s)", args.host, args.port, settings.opa_url)
        GunicornApp(lambda: _load_enforcer(settings), gunicorn_options(args.host, args.port, args.workers)).run()
        return 0
    finally:
        # gunicorn forks workers from inside run(); when a worker exits, this frame unwinds
        # in the worker too. Only the master owns the OPA child and the metrics dir.
        if os.getpid() == master_pid:
            if managed:
                managed.stop()
            if multiproc_dir:
                shutil.rmtree(multiproc_dir, ignore_errors=True)
