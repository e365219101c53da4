"""`python -m gramc` (also what `torchrun -m gramc train ...` runs)."""

import sys

from .cli import main

sys.exit(main())
