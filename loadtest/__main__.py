"""`python -m loadtest ...`: the same as `slm-router loadtest ...`."""

import sys

from loadtest.cli import main

sys.exit(main())
