"""``python -m rloss``: the ``rloss`` command line."""

import sys

from rloss.commands import main

if __name__ == "__main__":
    sys.exit(main())
