"""`python -m daemon` is the same as the `gpt-image-inbox` command."""

import sys

from daemon.cli import main

sys.exit(main())
