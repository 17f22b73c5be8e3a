"""Benchmarks of gpt-image-inbox: the daemon's cost next to codex itself (`python -m bench`)."""
