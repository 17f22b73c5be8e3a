"""Test helpers: a mock OpenAI server and a CODEX_HOME builder for running the real codex offline."""
