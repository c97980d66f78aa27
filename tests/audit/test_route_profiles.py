"""The audit tools ask OPA about one path of each route profile (batch.rego route_profiles) and
give the others of the profile its decisions. That is sound only while the built-in checks read
a path through its profile alone: held here on every generated module of every shipped config,
and shown by matrices that come out the same with and without grouping."""

from __future__ import annotations

import re

import pytest

from regate import compiler
from regate.audit import columns as cols
from regate.audit import matrix
from regate.audit import principals as who
from regate.audit.evaluate import Evaluator

from ..compiler.conftest import ROOT, SHIPPED

# input.request.path is read only in these lines: the profile's canonical and route-table
# lookups (routes.rego), its spending test (budgets.rego), and a denial's message text.
PATH_READS = {
    "regate/routes.rego": {
        'startswith(input.request.path, "/")',
        "not _non_canonical(input.request.path)",
        "data.regate.tables.routes[key].exact[input.request.path]",
        'segments := split(input.request.path, "/")',
        'input.request.path != "/"',
    },
    "regate/budgets.rego": {"input.request.path in spending_routes"},
    "regate/authz.rego": {
        '_access_denials["route_not_allowed"] := sprintf("role %s may not call %s", '
        '[roles.role, input.request.path]) if {',
    },
}
# Read anywhere: the model is part of a group's key, and the team header belongs to the principal.
OTHER_READS = {".model", ".requested_team"}
REQUEST_READ = re.compile(r"input\.request(\.\w+)?")


def path_reads(files: dict[str, bytes]) -> list[tuple[str, str]]:
    """(module, line) of every read of the request outside OTHER_READS and PATH_READS."""
    found = []
    for name, raw in sorted(files.items()):
        if not name.endswith(".rego") or name.endswith("_test.rego") or name.startswith("regate/custom/"):
            continue
        for line in raw.decode().splitlines():
            code = line.strip()
            if code.startswith("#"):
                continue
            for read in REQUEST_READ.finditer(code):
                if read.group(1) not in OTHER_READS and code not in PATH_READS.get(name, set()):
                    found.append((name, code))
    return found


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_policy_reads_a_path_only_through_its_profile(name):
    files = compiler.bundle_files(compiler.load_config(SHIPPED[name]))
    assert "regate/routes.rego" in files
    assert path_reads(files) == []


def test_a_new_read_of_the_path_is_found():
    files = compiler.bundle_files(compiler.load_config(SHIPPED["examples/regate"]))
    files["regate/teams.rego"] += b'\n_sneaky if startswith(input.request.path, "/v1")\n'
    files["regate/roles.rego"] += b"\n_whole := input.request\n"
    assert path_reads(files) == [("regate/roles.rego", "_whole := input.request"),
                                 ("regate/teams.rego", '_sneaky if startswith(input.request.path, "/v1")')]


def test_paths_of_one_profile_stand_in_for_each_other(opa_bin, monkeypatch):
    monkeypatch.setenv("REGATE_OPA_BIN", opa_bin)
    config = compiler.load_config(SHIPPED["examples/regate"])
    requests = cols.requests(cols.columns(config))
    with Evaluator(config) as opa:
        stand_in = matrix.stand_ins(opa, config, requests)
    assert stand_in[("/key/generate", None)] == stand_in[("/key/delete", None)]  # both management only
    assert stand_in[("/v1/chat/completions", None)] == stand_in[("/v1/embeddings", None)]  # both spend
    assert stand_in[("/v1/chat/completions", None)] != stand_in[("/v1/images/generations", None)]  # only one spends
    assert stand_in[("/v1/chat/completions", "gpt-4o-mini")] != stand_in[("/v1/chat/completions", None)]
    assert len(set(stand_in.values())) < len(requests) / 10


# A config per surface that reads the path: budgets (spending routes), prefix routes, public
# routes, several roles' tables with templates, teams with model limits.
EQUIVALENCE = ["cases/litellm-full", "litellm-docs/team-prefix-routes", "litellm-docs/rbac-roles",
               "examples/regate"]


@pytest.mark.parametrize("name", EQUIVALENCE)
def test_grouped_decisions_are_the_decisions_of_each_path(name, opa_bin, monkeypatch):
    monkeypatch.setenv("REGATE_OPA_BIN", opa_bin)
    config = compiler.load_config(SHIPPED[name])
    columns = cols.columns(config)
    principals = who.principals(config, ("t-extra",), cols.model_names(columns))
    requests = cols.requests(columns)
    grouped = matrix.decide(config, principals, requests)
    assert grouped == matrix.decide(config, principals, requests, group_paths=False)
    assert len({o.answer for o in grouped.values()}) > 3  # allows and several denials, not one answer


def test_custom_policies_are_asked_about_every_path(opa_bin, monkeypatch):
    monkeypatch.setenv("REGATE_OPA_BIN", opa_bin)
    config = compiler.load_config(ROOT / "examples" / "litellm-docs" / "custom-validate.yaml")
    requests = cols.requests(cols.columns(config))
    with Evaluator(config) as opa:
        assert matrix.stand_ins(opa, config, requests) == {r: r for r in requests}
