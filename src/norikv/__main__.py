"""``python -m norikv``: the same command as the ``norikv`` console script."""

import sys

from norikv.cli import main

if __name__ == "__main__":
    sys.exit(main())
