"""`python -m transferlab ...` is the console script `transferlab ...`."""

import sys

from transferlab.cli import main

sys.exit(main())
