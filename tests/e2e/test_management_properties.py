"""Property test of the management bodies through the real enforcer: random JSON (with the fields the
endpoints know, wrong types, nesting, lone surrogates, duplicates) sent by an admin or a team
token gets a 200 or a 4xx in the OpenAI error shape, never a 5xx, and a 4xx writes nothing.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regate.enforcer import schema as tables
from tests.support.properties import bounded

from .conftest import assert_openai_error, team_token
from .test_state_management_input import POST_ENDPOINTS

FIELDS = ["team_id", "user_id", "organization_id", "key_alias", "team_alias", "models", "duration", "keys",
          "key_aliases", "user_email", "blocked", "max_budget", "metadata"]
TEXT = (st.text(max_size=12) | st.sampled_from(["team-a", "gpt-4o-mini", "azure-gpt-4o", "30s", "1d", "0s", "a@b",
                                                "sk-" + "x" * 43, "", " ", "\x00", "u" * 300])
        | st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2))
SCALARS = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | TEXT
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                      max_leaves=8)
BODIES = st.dictionaries(st.sampled_from(FIELDS) | TEXT, VALUES, max_size=4) | VALUES


@pytest.fixture
def tokens(idp, admin_token) -> dict[bool, str]:
    return {True: admin_token, False: team_token(idp, team="prop-team", user="prop-user")}


def rows(database: str) -> dict[str, list]:
    """Every row of every store table (the enforcer's SQLite file, read beside it)."""
    with sqlite3.connect(database) as conn:
        return {t.name: sorted(map(repr, conn.execute(f"SELECT * FROM {t.name}"))) for t in tables.metadata.sorted_tables}


@bounded(150)
@given(path=st.sampled_from(POST_ENDPOINTS), body=BODIES, as_admin=st.booleans())
def test_random_management_bodies_are_answered_4xx_or_200_and_a_4xx_writes_nothing(client, enforcer, tokens, path,
                                                                                    body, as_admin):
    database = f"{enforcer.data_dir}/regate.db"
    raw = json.dumps(body, allow_nan=True).encode()  # \\ud800 escapes stay escapes: lone surrogates on decoding
    before = rows(database)
    status, answer, _ = client.request("POST", path, token=tokens[as_admin], body=raw,
                                       headers={"Content-Type": "application/json"})
    assert status == 200 or 400 <= status < 500, (status, answer)
    if status != 200:
        assert_openai_error(answer, status)
        assert rows(database) == before
