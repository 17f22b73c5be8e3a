"""The commands that run and end: `gen`, `once`, `submit` and `doctor`; Ctrl-C for all of them."""
