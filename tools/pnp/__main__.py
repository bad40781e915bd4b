"""`python -m pnp ...` is the `pnp` command."""

import sys

from pnp.cli import main

sys.exit(main())
