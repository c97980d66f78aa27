"""Development tools: the dev identity provider, the OpenAI-compatible model stub, and `regate demo`."""
