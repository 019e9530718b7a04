"""``python -m landscape`` (also what torchrun starts with ``-m landscape``)."""

import sys

from landscape.cli import main

sys.exit(main())
