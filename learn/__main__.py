"""`python -m learn <command>`."""

import sys

from learn.cli import main

sys.exit(main())
