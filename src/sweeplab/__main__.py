"""``python -m sweeplab`` behaves like the ``sweeplab`` command."""

import sys

from sweeplab.cli import main

sys.exit(main())
