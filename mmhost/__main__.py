"""``python -m mmhost``: the ``mmhost`` command."""

import sys

from mmhost.cli import main

sys.exit(main())
