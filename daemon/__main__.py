"""`python -m daemon` is the same as the `gpt-image-inbox` command."""

from daemon.cli import script

script()
