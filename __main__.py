"""`python -m flashbeam`."""

import sys

from flashbeam.cli import main

sys.exit(main())
