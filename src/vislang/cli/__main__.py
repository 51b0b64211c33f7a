"""``python -m vislang.cli ...`` (and ``torchrun -m vislang.cli train ...``)."""

import sys

from vislang.cli import main

if __name__ == "__main__":
    sys.exit(main())
