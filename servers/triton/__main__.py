"""``python -m servers.triton``: see servers.triton.cli."""

import sys

from servers.triton.cli import main

sys.exit(main())
