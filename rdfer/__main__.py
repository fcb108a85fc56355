"""``python -m rdfer`` (also what ``torchrun -m rdfer`` runs)."""

import sys

from .cli import main

sys.exit(main())
