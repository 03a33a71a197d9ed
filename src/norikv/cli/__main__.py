"""``python -m norikv.cli``: the ``norikv`` command (as ``python -m norikv``)."""

import sys

from norikv.cli import main

if __name__ == "__main__":
    sys.exit(main())
