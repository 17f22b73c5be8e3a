"""The one-shot commands: `gen`, `once`, `submit` and `doctor`."""
