"""``python -m servers.sim``: run the simulated LLM server."""

import sys

from servers.sim.cli import main

if __name__ == "__main__":
    sys.exit(main())
