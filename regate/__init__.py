"""regate: LiteLLM-style JWT access control, compiled to OPA and enforced in front of LLM traffic."""

__version__ = "0.1.0"
