"""Logging of the host commands through the standard `logging` module.

Everything a node says goes to the logger "pnp": its engine events (one line each, with
the peer and, for a failure, the reason and who gave it), level changes (by name),
discovery verdicts, key changes. `setup(verbosity)` sends it to stderr with a timestamp
and the record's level:

    2025-01-01 12:00:00.123 INFO    IkeUp 127.0.0.2: auth null, SPIs 1a2b.. 3c4d..
    2025-01-01 12:00:00.125 INFO    127.0.0.2 level CLEAR -> ENCRYPTED
    2025-01-01 12:00:00.130 WARNING KEY CHANGED for 127.0.0.2: not trusted until approved

verbosity -1 (`-q`): warnings and errors only; 0: also INFO; 1 (`-v`): also DEBUG
(dropped datagrams and other per-packet noise).
"""

from __future__ import annotations

import logging
import sys

from pnpipsec import LEVEL_NAMES

LOG = logging.getLogger("pnp")

FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"

_WARN = ("KEY CHANGED", "AuthFailed", "ChildFailed", "proof from", "send to")
_DEBUG = ("dropped ",)
_FAILURES = ("(from the peer)", "(we refused)", "no answer")


def setup(verbosity: int = 0, stream=None) -> logging.Handler:
    """Log "pnp" records to stderr (or `stream`) at the level `verbosity` picks."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    handler.setLevel(logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO)
    LOG.addHandler(handler)
    LOG.setLevel(logging.DEBUG)
    LOG.propagate = False
    return handler


def level_of(msg: str) -> int:
    """The logging level of one of the node's own lines (pnpipsec.node logs strings)."""
    if msg.startswith("timer:"):
        return logging.ERROR
    if msg.startswith(_WARN) or (msg.startswith("IkeDown") and any(f in msg for f in _FAILURES)):
        return logging.WARNING
    if msg.startswith(_DEBUG):
        return logging.DEBUG
    return logging.INFO


def node_log(msg: str) -> None:
    """The node's `log` callback."""
    LOG.log(level_of(msg), "%s", msg)


def on_level(host, old, new, now) -> None:
    """node.on_level callback: a level change, by name."""
    LOG.log(logging.WARNING if new < old else logging.INFO, "%s level %s -> %s",
            host, LEVEL_NAMES[old], LEVEL_NAMES[new])
