"""One-line refusals for unusable stores and configs, shared by the `pnp` commands.

A command that finds its identity store, pin store, state folder or TOML config unusable
prints exactly one line on stderr, `pnp <command>: <file>: <problem>`, and exits 2. The
file is left as it is: nothing is overwritten or "repaired".

The errors this understands all carry the file and the problem:
  pnp_hostboard.storage.StoreError       .path .problem  (not a regular file, unreadable...)
  pnpipsec.identity.IdentityError        .path .problem  (.path None: not about the store)
  pnpipsec.pins.PinError                 .path .problem  (.path None: e.g. the store is full)
  pnp.config.ConfigError                 its text starts with the config file's path
"""

from __future__ import annotations

import sys

from pnp_hostboard.storage import StoreError
from pnpipsec.identity import IdentityError
from pnpipsec.pins import PinError

BAD_STORE = 2

# What the commands catch; store_problem() then says whether it is about a stored file.
STORE_ERRORS = (StoreError, IdentityError, PinError)


def one_line(text) -> str:
    """Any text as one line (newlines and runs of blanks become single spaces)."""
    return " ".join(str(text).split())


def store_problem(e):
    """(path, problem) when e says a stored file cannot be used, else None."""
    if isinstance(e, STORE_ERRORS) and getattr(e, "path", None):
        return e.path, e.problem
    return None


def refuse(prog: str, e) -> int:
    """Print the one line for e (a store error with a path, or a ConfigError); return 2."""
    where = store_problem(e)
    text = "%s: %s" % where if where else str(e)
    print("%s: %s" % (prog, one_line(text)), file=sys.stderr, flush=True)
    return BAD_STORE
