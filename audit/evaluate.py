"""The compiled policy evaluated by a real OPA, many requests per query.

`Evaluator` compiles a config into a bundle in a temporary directory, starts one
`opa run --server` with it and regate's batch module (batch.rego, its own bundle under
the root `regate_audit`), and sends the cases in chunks, a few at a time so OPA uses
every core. Every decision is OPA's evaluation of data.regate.authz.decision; nothing
here decides anything.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from regate import compiler
from regate.common.errors import RegateError
from regate.common.opa import OpaProcess
from regate.compiler.model import Config

BATCH_MODULE = Path(__file__).with_name("batch.rego")
# No team is blocked, and the state counts as loaded (else every team token is 503 state_unavailable).
STATE = {"blocked_teams": {}, "sync_id": "regate-audit"}
CHUNK = 1000  # cases per query: small enough to spread over the cores, large enough to amortise HTTP


class EvaluationError(RegateError):
    """Raised when OPA does not answer a batch query with what was asked."""

    code = "evaluation_failed"


@dataclass(frozen=True)
class Outcome:
    """A decision as the audit tools compare it. `by` says who decides: OPA, or the enforcer
    before asking OPA (a master key where the config has none)."""

    allow: bool
    status: int
    reasons: tuple[str, ...] = ()
    by: str = "opa"

    def as_json(self) -> dict:
        doc = {"allow": self.allow, "status": self.status, "reasons": list(self.reasons)}
        if self.by != "opa":
            doc["by"] = self.by
        return doc

    @property
    def answer(self) -> tuple:
        """What the caller gets: allowed or not, the status and the first reason (the one that speaks)."""
        return self.allow, self.status, self.reasons[:1]

    def summary(self) -> str:
        """`allow`, or `deny <first reason>`."""
        return "allow" if self.allow else f"deny {self.reasons[0] if self.reasons else self.status}"


@dataclass(frozen=True)
class Case:
    """One request to decide: the OPA input, and optionally what the store knows about its
    credential (then OPA derives the facts the enforcer would send)."""

    input: dict
    store: dict | None = None


@dataclass
class Evaluator:
    """A real OPA loaded with `config`'s bundle; use as a context manager."""

    config: Config
    state: dict = field(default_factory=lambda: dict(STATE))
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)

    def __post_init__(self):
        self._dir: Path | None = None
        self._opa: OpaProcess | None = None

    @property
    def opa_bin(self) -> str:
        assert self._opa is not None, "use the Evaluator as a context manager"
        return self._opa.opa_bin

    @property
    def bundle_dir(self) -> Path:
        assert self._dir is not None, "use the Evaluator as a context manager"
        return self._dir / "bundle"

    def __enter__(self) -> "Evaluator":
        self._dir = Path(tempfile.mkdtemp(prefix="regate-audit-"))
        try:
            compiler.bundle.write(compiler.bundle_files(self.config), self.bundle_dir)
            helper = self._dir / "batch"
            helper.mkdir()
            shutil.copyfile(BATCH_MODULE, helper / "batch.rego")
            (helper / ".manifest").write_text(json.dumps({"roots": ["regate_audit"], "rego_version": 1}))
            self._opa = OpaProcess(["--bundle", str(self.bundle_dir), "--bundle", str(helper)],
                                   capture_output=True).start()
            self._send("PUT", "/v1/data/regate_state", self.state)  # as the enforcer writes it
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._opa is not None:
            self._opa.stop()
            self._opa = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _send(self, method: str, path: str, doc) -> dict | None:
        assert self._opa is not None, "use the Evaluator as a context manager"
        request = urllib.request.Request(f"{self._opa.url}{path}", data=json.dumps(doc).encode(), method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=600) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise EvaluationError(f"OPA refused {method} {path} ({e.code}): {e.read()[:500]!r}") from None
        except OSError as e:
            raise EvaluationError(f"OPA did not answer {method} {path}: {e}") from None
        return json.loads(raw) if raw else None

    def _query(self, rule: str, cases: list, *, field: str = "cases") -> list:
        """batch.<rule> for input.<field> = cases: one answer per case, in order."""
        answer = self._send("POST", f"/v1/data/regate_audit/batch/{rule}", {"input": {field: cases}})
        result = (answer or {}).get("result")
        if not isinstance(result, list) or len(result) != len(cases):
            raise EvaluationError(f"OPA answered {rule} with {str(answer)[:300]}")
        return result

    def _inputs(self, cases: list[Case]) -> list[dict]:
        """Each case's OPA input, with the facts OPA derives for its credential and store (asked once each)."""
        keys = [None if c.store is None else json.dumps([c.input["credential"], c.store], sort_keys=True) for c in cases]
        owners = {key: case for key, case in zip(keys, cases) if key is not None}
        answers = self._query("facts", [{"credential": c.input["credential"], "store": c.store}
                                        for c in owners.values()]) if owners else []
        facts = dict(zip(owners, answers))
        return [case.input | {"facts": facts[key]} if key is not None and facts[key] else case.input
                for key, case in zip(keys, cases)]

    def outcomes(self, cases: list[Case]) -> list[Outcome]:
        """OPA's decision for each case, in order."""
        inputs = self._inputs(cases)
        chunks = [inputs[i:i + CHUNK] for i in range(0, len(inputs), CHUNK)]
        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(chunks)))) as pool:
            answers = pool.map(lambda chunk: self._query("outcomes", chunk), chunks)
            return [Outcome(allow, status, tuple(reasons)) for answer in answers for allow, status, reasons in answer]

    def route_profiles(self, paths: list[str]) -> list[dict]:
        """What the built-in checks read of each path (batch.rego route_profiles), in order."""
        return self._query("route_profiles", paths, field="paths")

    def explain(self, case: Case) -> dict:
        """{"decision", "denials", "reason_order"} for one case."""
        return self._query("explanations", self._inputs([case]))[0]
