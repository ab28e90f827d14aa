"""``python -m idspn_experiments ...`` is the ``idspn`` command (handy under ``torchrun -m``)."""

import sys

from idspn_experiments.cli import main

sys.exit(main())
