"""`python -m vaeviz` is the `vaeviz` command."""

import sys

from vaeviz.cli import main

if __name__ == "__main__":
    sys.exit(main())
