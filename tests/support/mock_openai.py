"""The OpenAI-compatible stand-in used by the tests: regate's own local model stub."""

from regate.devtools.model_stub import Behavior, MockOpenAI, MockOpenAIHandler, RecordedRequest, main  # noqa: F401

if __name__ == "__main__":
    main()
