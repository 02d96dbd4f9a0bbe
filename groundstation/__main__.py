"""python -m groundstation: the same as the `groundstation` command."""

import sys

from groundstation.cli import main

sys.exit(main())
