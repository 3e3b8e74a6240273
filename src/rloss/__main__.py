"""``python -m rloss``: the ``rloss`` command line."""

import sys

from rloss.cli import main

if __name__ == "__main__":
    sys.exit(main())
