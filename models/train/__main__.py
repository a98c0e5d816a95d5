"""``python -m models.train``: train a model and save a checkpoint (see :mod:`models.train.command`)."""

import sys

from models.train.command import main

sys.exit(main())
