"""`python -m crossrec.cli` = the `crossrec` command."""

import sys

from crossrec.cli import main

if __name__ == "__main__":
    sys.exit(main())
