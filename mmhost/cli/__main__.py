import sys

from mmhost.cli import main

sys.exit(main())
