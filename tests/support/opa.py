"""A real OPA server for tests: `opa run --server` on a free loopback port, loaded with a bundle."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from regate.common.opa import OpaProcess, OpaProcessError

OpaStartError = OpaProcessError  # raised when OPA exits or never becomes ready; the message is OPA's own output


class OpaServer(OpaProcess):
    """Start/stop/restart a real OPA (its output captured); query decisions and write runtime state
    through its REST API."""

    def __init__(self, opa_bin: str, *, bundle: str | None = None, config_file: str | None = None,
                 extra_args: tuple[str, ...] = (), port: int | None = None):
        args = (["--config-file", config_file] if config_file else []) + list(extra_args)
        args += ["--bundle", bundle] if bundle else []
        super().__init__(args, port=port, opa_bin=opa_bin, capture_output=True)
        self.bundle = bundle
        self.config_file = config_file

    def start(self, *, wait_bundle: bool = True, timeout: float = 30.0) -> "OpaServer":
        super().start(wait_bundle=wait_bundle and bool(self.bundle or self.config_file), timeout=timeout)
        return self

    def restart(self) -> None:
        self.stop()
        self.start()

    def request(self, method: str, path: str, body=None, timeout: float = 10):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, (json.loads(raw) if raw else None)

    def decide(self, input_doc: dict) -> dict | None:
        """The decision document, or None when OPA answers `undefined`."""
        status, body = self.request("POST", "/v1/data/regate/authz/decision", {"input": input_doc})
        assert status == 200, (status, body)
        return body.get("result")

    def put_state(self, state: dict) -> None:
        status, body = self.request("PUT", "/v1/data/regate_state", state)
        assert status == 204, (status, body)

    def wait(self, predicate, *, timeout: float = 10.0, interval: float = 0.05):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            time.sleep(interval)
        raise TimeoutError("condition not met")
