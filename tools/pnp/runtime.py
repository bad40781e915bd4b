"""Starting and stopping a host node from a NodeConfig: shared by `pnp node`, `pnp send`
and `pnp connect`."""

from __future__ import annotations

import asyncio
import logging
import os

from pnp_hostboard.board import HostBoard
from pnp_hostboard.storage import DirStorage
from pnpipsec import identity
from pnpipsec.node import Node
from pnpipsec.pins import PinStore

from pnp import logs
from pnp.keylogdir import KeylogDir

# node.stop() sends DELETEs and waits for their answers, at most its own timeout (1 s by
# default), normally a few ms. STOP_LIMIT is a net over that: a command never waits
# longer for the node to stop, so `pnp send/connect --timeout T` end within
# T + STOP_LIMIT plus interpreter start-up (T + 1.5 s in all, measured in
# host_tests/test_cli_timeouts.py).
STOP_LIMIT = 1.25


def log_stderr(msg: str, level: int = logging.INFO) -> None:
    """A line of the command's own (through the "pnp" logger: see pnp.logs)."""
    logs.LOG.log(level, "%s", msg)


async def start_node(cfg, verbose=True) -> Node:
    """Open the stores, then start the node. An unusable store raises StoreError,
    PinError or IdentityError (with .path and .problem) before anything is written:
    the pin store is read before a missing identity is created."""
    storage = DirStorage(cfg.state)
    pins = PinStore(storage)
    ident, created = identity.load_or_create(storage, os.urandom)
    if created and verbose:
        log_stderr(f"created identity {ident.fingerprint} in {cfg.state}")
    board = HostBoard(cfg.state)
    node = Node(board, ident, peers=cfg.peers, ike_port=cfg.ike_port, natt_port=cfg.natt_port,
                addresses=cfg.addresses, keylog=KeylogDir(cfg.keylog) if cfg.keylog else None,
                log=logs.node_log if verbose else None, accept_any=cfg.accept_any,
                spd=cfg.spd, tofu=cfg.tofu, pins=pins)
    if verbose:
        node.on_level(logs.on_level)
    await node.start()
    return node


async def stop_node(node, limit=STOP_LIMIT) -> None:
    """node.stop(), never longer than `limit` seconds (the process is about to end)."""
    try:
        await asyncio.wait_for(node.stop(), limit)
    except asyncio.TimeoutError:
        pass
