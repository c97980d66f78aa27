"""`python -m regate`: the same as the `regate` command."""

import sys

from regate.cli import main

sys.exit(main())
