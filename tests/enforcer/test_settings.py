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


def redis_config(tmp_path, router: str) -> Settings:
    path = tmp_path / "c.yaml"
    path.write_text(EXAMPLE.read_text().replace("router_settings:\n  routing_strategy: simple-shuffle\n",
                                                f"router_settings:\n  routing_strategy: simple-shuffle\n{router}"))
    return compiler.load_config(path)


def test_redis_from_redis_url_else_router_settings(tmp_path):
    config = redis_config(tmp_path, "  redis_host: os.environ/REDIS_HOST\n  redis_port: 6380\n"
                                    "  redis_password: os.environ/REDIS_PASSWORD\n")
    environ = {**ENV, "REDIS_HOST": "redis.internal", "REDIS_PASSWORD": "p@ss/word"}
    s = Settings.from_config(config, opa_url="http://127.0.0.1:9", environ=environ)
    assert s.redis_url == "redis://:p%40ss%2Fword@redis.internal:6380/0"
    assert "p@ss" not in repr(s) and "p%40ss" not in repr(s)  # the password never shows in a repr or log
    s = Settings.from_config(config, opa_url="http://127.0.0.1:9", environ={**environ, "REDIS_URL": "redis://r:1/2"})
    assert s.redis_url == "redis://r:1/2"
    assert settings().redis_url is None  # no Redis: the host's SQLite counters


def test_a_missing_redis_variable_is_named(tmp_path):
    config = redis_config(tmp_path, "  redis_host: os.environ/REDIS_HOST\n")
    with pytest.raises(RegateError) as info:
        Settings.from_config(config, opa_url="http://127.0.0.1:9", environ=ENV)
    assert info.value.message == "router_settings.redis_host refers to environment variable REDIS_HOST, which is not set"


@pytest.mark.parametrize("workers", ["two", "0", "-1", "1.5"])
def test_a_bad_regate_workers_breaks_only_serve(workers, tmp_path):
    """REGATE_WORKERS is read by `serve` alone: `compile` works whatever it holds, and `serve`
    refuses it with one clear line and exit 2, before starting anything."""
    import os
    import subprocess
    import sys

    env = {**os.environ, **ENV, "REGATE_WORKERS": workers, "REGATE_DATA_DIR": str(tmp_path / "data")}
    run = [sys.executable, "-m", "regate.cli"]
    compiled = subprocess.run(run + ["compile", str(EXAMPLE), "-o", str(tmp_path / "b.tar.gz")], env=env,
                              capture_output=True, text=True, timeout=60)
    assert compiled.returncode == 0, compiled.stderr
    served = subprocess.run(run + ["serve", "--config", str(EXAMPLE), "--port", "9"], env=env,
                            capture_output=True, text=True, timeout=60)
    expected = "expected a whole number" if workers in ("two", "1.5") else "expected at least 1"
    assert served.returncode == 2
    assert served.stderr.startswith("regate serve: REGATE_WORKERS: " + expected), served.stderr
    assert served.stderr.count("\n") == 1 and "Traceback" not in served.stderr
    assert not (tmp_path / "data").exists()
