"""enforcer.usage_estimate: the prompt tokens regate counts itself when an upstream's usage never comes."""

from __future__ import annotations

import pytest

from regate.enforcer.usage_estimate import prompt_tokens


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
