"""Test helpers: a mock OpenAI server and a CODEX_HOME builder to run the real codex offline."""
