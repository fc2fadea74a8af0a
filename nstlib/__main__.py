"""``python -m nstlib ...``: the same as the ``nstlib`` command (see `nstlib.cli`)."""

import sys

from nstlib.cli import main

if __name__ == "__main__":
    sys.exit(main())
