"""``python -m norikv.bench``: the comparison runner (see norikv.bench)."""

import sys

from norikv.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
