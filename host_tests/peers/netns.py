"""Moved to tools/pnp/peers/netns.py (`pnp.peers.netns`), so that `pnp wirebench` works from
an installed package; this name stays for the tests and scripts that import it."""

import sys

from pnp.peers import netns as _mod

sys.modules[__name__] = _mod
