"""Codex: run `codex exec`, know its version, read its session log, and name its failures."""
