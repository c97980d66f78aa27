"""enforcer.usage_estimate: the tokens regate counts itself when an upstream's usage never comes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regate.enforcer.usage_estimate import completion_tokens, prompt_tokens
from tests.support.properties import bounded


@pytest.mark.parametrize("kind, body, expected", [
    # 3 for the reply, then per message 3 + ceil(characters / 4)
    ("chat", {"messages": [{"role": "user", "content": "abcdefgh"}]}, 3 + 3 + 2),
    ("chat", {"messages": [{"role": "system", "content": "a"}, {"role": "user", "content": "abcde"}]},
     3 + (3 + 1) + (3 + 2)),
    ("chat", {"messages": [{"role": "user", "content": [{"type": "text", "text": "abcd"},
                                                        {"type": "image_url", "image_url": {"url": "x" * 99}}]}]},
     3 + 3 + 1),
    ("completions", {"prompt": "abcdefghi"}, 3),
    ("completions", {"prompt": [[1, 2, 3], [4]]}, 4),  # token ids count one each
    ("completions", {"prompt": ["ab", "cd", True]}, 2),
    ("embeddings", {"input": "x" * 400}, 100),
    # never zero: something was sent and billed
    ("completions", {"prompt": ""}, 1),
    ("chat", {"messages": "not a list"}, 3),
    ("chat", [], 1),
])
def test_prompt_tokens(kind, body, expected):
    assert prompt_tokens(kind, body) == expected


def test_deeply_nested_prompts_are_counted_without_recursion():
    nested: list = ["abcd"]
    for _ in range(100_000):
        nested = [nested]
    assert prompt_tokens("completions", {"prompt": nested}) == 1


def _chat(*messages):
    return {"choices": [{"index": i, "message": m} for i, m in enumerate(messages)]}


@pytest.mark.parametrize("kind, answer, expected", [
    ("chat", _chat({"role": "assistant", "content": "abcdefgh"}), 2),
    ("chat", _chat({"content": "abcd"}, {"content": "abcde"}), 1 + 2),  # n=2: every choice was generated
    ("chat", _chat({"content": None, "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]}), 2),
    ("chat", _chat({"content": None, "function_call": {"name": "f", "arguments": "abcd"}}), 1),
    ("chat", _chat({"content": [{"type": "text", "text": "abcdefgh"}]}), 2),
    ("completions", {"choices": [{"text": "abcdefghi"}]}, 3),
    ("embeddings", {"data": [{"embedding": [0.1]}]}, 0),
    # what is not an answer counts nothing (the prompt still does)
    ("chat", {"choices": "no"}, 0),
    ("chat", {"choices": [None, {"message": "text"}, {"message": {"tool_calls": [None, {"function": 7}]}}]}, 0),
    ("chat", [], 0),
])
def test_completion_tokens(kind, answer, expected):
    assert completion_tokens(kind, answer) == expected


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
                     | st.fixed_dictionaries({"content": inner, "text": inner, "arguments": inner}),
                     max_leaves=20)


@bounded(300)
@given(kind=st.sampled_from(["chat", "completions", "embeddings"]), choices=_JSON)
def test_any_upstream_answer_is_counted_without_error_and_each_choice_adds_its_own(kind, choices):
    """An upstream's answer is untrusted JSON: whatever its shape, a count (never an exception), and a
    well-formed choice added to a list of choices adds exactly its own tokens."""
    answer = {"choices": choices}
    count = completion_tokens(kind, answer)
    assert isinstance(count, int) and count >= 0
    assert prompt_tokens(kind, {"messages": choices, "prompt": choices, "input": choices}) >= 1
    if isinstance(choices, list) and kind != "embeddings":
        extra = {"text": "abcdefgh"} if kind == "completions" else {"message": {"content": "abcdefgh"}}
        assert completion_tokens(kind, {"choices": [*choices, extra]}) == count + 2
