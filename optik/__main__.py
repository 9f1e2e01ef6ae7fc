"""``python -m optik`` (and ``torchrun -m optik``) runs the CLI."""

import sys

from optik.cli import main

sys.exit(main())
