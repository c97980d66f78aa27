"""compiler.loader: YAML with positions. Merge keys as PyYAML (and so LiteLLM) read them; random
documents give a config or located errors, never a traceback (property tests)."""

from __future__ import annotations

import textwrap

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from regate import compiler
from regate.common.errors import ConfigError
from regate.compiler.loader import load_text
from tests.support.properties import bounded

PROPERTY = bounded(200)


@pytest.mark.parametrize("text", [
    # an override of a merged key: the explicit key wins
    """\
    base: &base {model: openai/gpt-4o, api_key: os.environ/KEY, timeout: 30}
    entry:
      <<: *base
      model: openai/gpt-4o-mini
    """,
    # the override before the merge key: the same
    """\
    base: &base {model: openai/gpt-4o, timeout: 30}
    entry:
      model: openai/gpt-4o-mini
      <<: *base
    """,
    # several maps merged: the first one named wins
    """\
    a: &a {model: first, x: 1}
    b: &b {model: second, y: 2}
    entry:
      <<: [*a, *b]
      z: 3
    """,
])
def test_merge_keys_are_read_as_pyyaml_reads_them(text):
    text = textwrap.dedent(text)
    assert load_text(text, "c.yaml").data == yaml.safe_load(text)


def test_a_key_repeated_beside_a_merge_is_still_a_duplicate():
    text = "base: &base {a: 1}\nentry:\n  <<: *base\n  b: 2\n  b: 3\n"
    with pytest.raises(ConfigError) as err:
        load_text(text, "c.yaml")
    assert [str(d) for d in err.value.diagnostics] == [
        "c.yaml:5:3: duplicate key 'b' (at entry.b) [duplicate-key]"]


def test_a_litellm_config_with_a_merge_key_override_compiles(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(textwrap.dedent("""\
        model_list:
          - model_name: gpt-4o
            litellm_params: &defaults
              model: openai/gpt-4o
              api_key: os.environ/OPENAI_API_KEY
              timeout: 30
          - model_name: gpt-4o-mini
            litellm_params:
              <<: *defaults
              model: openai/gpt-4o-mini
        general_settings:
          master_key: os.environ/LITELLM_MASTER_KEY
        """))
    deployments = compiler.load_config(config).deployments
    assert [(d.model_name, d.upstream_model, d.timeout) for d in deployments] == [
        ("gpt-4o", "gpt-4o", 30), ("gpt-4o-mini", "gpt-4o-mini", 30)]


# property: random documents ---------------------------------------------------------------------
KEYS = st.sampled_from(["general_settings", "model_list", "litellm_jwtauth", "master_key", "enable_jwt_auth",
                        "team_id_jwt_field", "model_name", "litellm_params", "model", "api_base", "<<", "x", "1"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True),
                    st.text(max_size=8), st.sampled_from(["os.environ/X", "sk-1", "openai/gpt-4o", "*a", "&a x",
                                                          "!!binary aGk=", "!!python/object:os.system", "~"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
                      max_leaves=12)
FRAGMENTS = st.sampled_from(["\n", ": ", "- ", "  ", "&a ", "*a", "<<: *a\n", "{", "}", "[", "]", ",", "'", '"',
                             "#", "!!str ", "!!map ", "? ", "|\n", "---\n", "...\n", "\t", "%YAML 1.1\n", "\x00",
                             "\ufeff", "general_settings:\n  ", "model_list:\n  - "])


@st.composite
def documents(draw) -> str:
    """YAML from a random value, then cut and spliced with YAML's own punctuation."""
    text = yaml.safe_dump(draw(VALUES), allow_unicode=True) if draw(st.booleans()) else ""
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(FRAGMENTS | st.text(max_size=3)) + text[at + draw(st.integers(0, 2)):]
    return text


def _compile(text: str, tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    compiler.load_config(path)


@PROPERTY
@given(text=documents())
def test_random_documents_give_a_config_or_located_errors(text, tmp_path_factory):
    try:
        _compile(text, tmp_path_factory.mktemp("yaml"))
    except ConfigError as e:
        assert e.diagnostics
        for diagnostic in e.diagnostics:
            assert diagnostic.line >= 1 and diagnostic.col >= 1 and diagnostic.code
            assert str(diagnostic).startswith(f"{diagnostic.file}:{diagnostic.line}:{diagnostic.col}: ")
