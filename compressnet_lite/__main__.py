"""``python -m compressnet_lite``: the ``compressnet-lite`` command line (see :mod:`compressnet_lite.cli`)."""

import sys

from compressnet_lite.cli import main

sys.exit(main())
