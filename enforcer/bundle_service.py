"""`regate bundle serve`: compiled bundles over HTTP, the way OPA's bundle service API expects.

OPA polls `GET /bundles/regate.tar.gz` with `If-None-Match: <etag>`; an unchanged
bundle answers 304. When OPA is configured for long polling it also sends
`Prefer: wait=N`: the request is held until a new revision exists (answered at
once) or N seconds pass (304). Answering 200 with Content-Type
application/vnd.openpolicyagent.bundles tells OPA the server supports that.

The config file is watched; a change is recompiled and served as the next
revision. A config that no longer compiles is logged with its located errors and
the last good bundle keeps being served: a typo never takes policy away.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from pathlib import Path

from flask import Flask, Response, jsonify, request

from regate import compiler
from regate.common.errors import ConfigError

log = logging.getLogger("regate.bundles")

BUNDLE_CONTENT_TYPE = "application/vnd.openpolicyagent.bundles"
BUNDLE_PATH = "/bundles/regate.tar.gz"
MAX_WAIT_SECONDS = 300
_WAIT = re.compile(r"(?:^|[;,\s])wait=(\d+)")


class BundleSource:
    """The current bundle of one config file: bytes, ETag, and a way to wait for the next one."""

    def __init__(self, config_path: str | Path, **signing_options):
        self.config_path = Path(config_path)
        self.signing_options = signing_options
        self.etag: str | None = None
        self.tarball: bytes = b""
        self.source_sha256: str | None = None
        self.last_error: str | None = None
        self._inputs = [self.config_path]  # the config, and the custom policies its last compile read
        self._changed = threading.Condition()

    def refresh(self) -> bool:
        """Recompile when the config's (or a custom policy's) content changed; True when a new revision is served."""
        hashed = hashlib.sha256()
        for path in self._inputs:
            try:
                hashed.update(hashlib.sha256(path.read_bytes()).digest())
            except OSError as e:
                self.last_error = f"{path}: cannot read {'config' if path == self.config_path else 'custom policy'}: {e.strerror}"
                log.error(self.last_error)
                return False
        digest = hashed.hexdigest()
        if digest == self.source_sha256:
            return False
        self.source_sha256 = digest
        try:
            config = compiler.load_config(self.config_path)
            self._inputs = [self.config_path] + [self.config_path.parent / p.path for p in config.policy.custom_policies.value]
            files = compiler.bundle_files(config, **self.signing_options)
        except ConfigError as e:
            self.last_error = str(e)
            log.error("config no longer compiles; still serving revision %s:\n%s", self.etag, e)
            return False
        revision = compiler.bundle.content_revision({k: v for k, v in files.items() if not k.startswith(".")})
        tarball = compiler.bundle.tarball(files)
        with self._changed:
            changed = self.etag != f'"{revision}"'
            self.tarball, self.etag, self.last_error = tarball, f'"{revision}"', None
            self._changed.notify_all()
        if changed:
            log.info("serving bundle revision %s", revision)
        return changed

    def wait_for_change(self, etag: str, timeout: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.etag != etag, timeout=timeout)

    def watch(self, interval: float, stop: threading.Event) -> None:
        while not stop.wait(interval):
            self.refresh()


def _requested_wait(prefer: str | None) -> int:
    match = _WAIT.search(prefer or "")
    return min(int(match.group(1)), MAX_WAIT_SECONDS) if match else 0


def create_bundle_app(source: BundleSource) -> Flask:
    app = Flask("regate-bundles")

    @app.get(BUNDLE_PATH)
    def bundle():
        known = {tag.strip() for tag in request.headers.get("If-None-Match", "").split(",") if tag.strip()}
        current = source.etag
        wait = _requested_wait(request.headers.get("Prefer"))
        if current in known and wait:
            source.wait_for_change(current, wait)
            current = source.etag
        if current in known:
            return Response(status=304, headers={"ETag": current})
        return Response(source.tarball, status=200, headers={
            "ETag": current, "Content-Type": BUNDLE_CONTENT_TYPE, "Cache-Control": "no-cache"})

    @app.get("/health")
    def health():
        return jsonify({"status": "ok", "etag": source.etag, "config_sha256": source.source_sha256,
                        "last_error": source.last_error})

    return app


def serve_bundles(args) -> int:
    from .serve import HARDENING, GunicornApp

    logging.basicConfig(level="INFO", format="%(message)s")
    signing = dict(signing_key=args.signing_key, signing_alg=args.signing_alg, key_id=args.key_id)
    # A config that does not compile at start is an error (located, exit 2), not an empty service.
    compiler.bundle_files(compiler.load_config(args.config), **signing)

    def load():
        source = BundleSource(args.config, **signing)
        source.refresh()
        stop = threading.Event()
        threading.Thread(target=source.watch, args=(args.poll_interval, stop), daemon=True,
                         name="regate-bundle-watch").start()
        return create_bundle_app(source)

    options = {
        "bind": f"{args.host}:{args.port}",
        "workers": 1,  # one watcher, one current revision
        "worker_class": "gevent",
        "worker_connections": 1000,
        "timeout": MAX_WAIT_SECONDS + 30,
        "graceful_timeout": 5,
        "keepalive": 5,
        **HARDENING,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
    }
    log.info("serving %s at http://%s:%d%s", args.config, args.host, args.port, BUNDLE_PATH)
    GunicornApp(load, options).run()
    return 0
