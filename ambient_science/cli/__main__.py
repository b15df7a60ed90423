"""``python -m ambient_science.cli ...`` = the ``ambient-science`` command; what ``torchrun -m ambient_science.cli
train ...`` runs on every rank (the data-parallel path of docs/design.md)."""

import sys

from ambient_science.cli import main

sys.exit(main())
