"""gpt-image-inbox: prompt files dropped into a folder become GPT Image 2 pictures, via codex."""
