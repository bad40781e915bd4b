"""Moved to tools/pnp/peers/capture.py (`pnp.peers.capture`), so that `pnp wirebench` works from
an installed package; this name stays for the tests and scripts that import it."""

import sys

from pnp.peers import capture as _mod

sys.modules[__name__] = _mod
