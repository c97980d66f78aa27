"""Token counts regate estimates itself when an upstream's usage never comes (a stream the client
left and the upstream did not finish in time, or an upstream that sends none, streamed or not):
never zero.

No tokenizer: about four characters a token (OpenAI's rule of thumb for English), plus the few
tokens each chat message costs around its content. Rows with an estimate are marked
`usage_estimated` in the spend log.
"""

from __future__ import annotations

from typing import Any

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3  # role and separators around each chat message
TOKENS_PER_REPLY = 3  # the assistant's reply is primed with these


def prompt_tokens(kind: str, body: Any) -> int:
    """The estimated prompt tokens of a chat/completions/embeddings request body; at least 1."""
    if not isinstance(body, dict):
        return 1
    if kind == "chat":
        messages = body.get("messages")
        messages = messages if isinstance(messages, list) else []
        count = TOKENS_PER_REPLY + sum(TOKENS_PER_MESSAGE + _text_tokens(m.get("content"))
                                       for m in messages if isinstance(m, dict))
    else:
        count = _text_tokens(body.get("prompt" if kind == "completions" else "input"))
    return max(count, 1)


def completion_tokens(kind: str, answer: Any) -> int:
    """The estimated completion tokens of a whole (not streamed) answer: its choices' text and
    tool-call arguments; embeddings have none."""
    if kind == "embeddings" or not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
        return 0
    texts: list[Any] = []
    for choice in answer["choices"]:
        if not isinstance(choice, dict):
            continue
        if kind == "completions":
            texts.append(choice.get("text"))
        elif isinstance(message := choice.get("message"), dict):
            texts.append(message.get("content"))
            calls = message.get("tool_calls")
            for call in [*(calls if isinstance(calls, list) else []), message.get("function_call")]:
                function = call.get("function", call) if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    texts.append(function["arguments"])
    return _text_tokens(texts)


def _text_tokens(value: Any) -> int:
    # Iterative: a request body may nest as deep as the JSON parser allowed.
    count, pending = 0, [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            count += -(-len(item) // CHARS_PER_TOKEN)
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            count += 1  # a token id
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.append(item.get("text"))  # a content part
    return count
