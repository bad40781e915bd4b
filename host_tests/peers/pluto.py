"""Moved to tools/pnp/peers/pluto.py (`pnp.peers.pluto`), so that `pnp wirebench` works from
an installed package; this name stays for the tests and scripts that import it."""

import sys

from pnp.peers import pluto as _mod

sys.modules[__name__] = _mod

if __name__ == "__main__":          # python -m host_tests.peers.pluto --ensure [DIR]
    sys.exit(_mod.main())
