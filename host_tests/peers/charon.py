"""Moved to tools/pnp/peers/charon.py (`pnp.peers.charon`), so that `pnp wirebench` works from
an installed package; this name stays for the tests and scripts that import it."""

import sys

from pnp.peers import charon as _mod

sys.modules[__name__] = _mod
