"""``python -m idspn.experiments ...`` is the ``idspn`` command (handy under ``torchrun -m``)."""

import sys

from idspn.experiments.cli import main

sys.exit(main())
