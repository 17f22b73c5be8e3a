"""gpt-image-inbox: turn prompt files dropped into a folder into GPT Image 2 pictures via `codex exec`."""

__version__ = "0.1.0"
