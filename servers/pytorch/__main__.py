"""``python -m servers.pytorch``: see servers.pytorch.cli."""

import sys

from servers.pytorch.cli import main

sys.exit(main())
