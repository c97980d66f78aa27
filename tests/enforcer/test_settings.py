"""Settings from the environment: numbers are checked, and each refusal names its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from regate import compiler
from regate.common.errors import RegateError
from regate.enforcer.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "regate.yaml"
ENV = {"LITELLM_MASTER_KEY": "sk-settings-master-key", "OPENAI_API_KEY": "sk-upstream", "AZURE_API_KEY": "sk-upstream"}


def settings(**env: str) -> Settings:
    return Settings.from_config(compiler.load_config(EXAMPLE), opa_url="http://127.0.0.1:9", environ={**ENV, **env})


@pytest.mark.parametrize(("env", "field", "value"), [
    ({}, "decision_cache_ttl", 0.5),
    ({"REGATE_DECISION_CACHE_TTL": "0"}, "decision_cache_ttl", 0.0),
    ({"REGATE_DECISION_CACHE_TTL": "2.5"}, "decision_cache_ttl", 2.5),
    ({"REGATE_OPA_TIMEOUT": "0.25"}, "opa_timeout", 0.25),
])
def test_numbers_from_the_environment(env, field, value):
    assert getattr(settings(**env), field) == value


@pytest.mark.parametrize(("env", "message"), [
    ({"REGATE_DECISION_CACHE_TTL": "-1"}, "REGATE_DECISION_CACHE_TTL must be > 0 or 0, got '-1'"),
    ({"REGATE_DECISION_CACHE_TTL": "nan"}, "REGATE_DECISION_CACHE_TTL must be > 0 or 0, got 'nan'"),
    ({"REGATE_DECISION_CACHE_TTL": "soon"}, "REGATE_DECISION_CACHE_TTL must be a number, got 'soon'"),
    ({"REGATE_OPA_TIMEOUT": "0"}, "REGATE_OPA_TIMEOUT must be > 0, got '0'"),
])
def test_bad_numbers_are_refused_by_name(env, message):
    with pytest.raises(RegateError) as info:
        settings(**env)
    assert (info.value.message, info.value.code) == (message, "invalid_setting")
