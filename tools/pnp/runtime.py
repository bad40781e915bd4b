"""Starting a host node from a NodeConfig: shared by `pnp node` and `pnp send`."""

from __future__ import annotations

import os
import sys

from pnp_hostboard.board import HostBoard
from pnp_hostboard.storage import DirStorage
from pnpipsec import identity
from pnpipsec.node import Node

from pnp.keylogdir import KeylogDir


def log_stderr(msg: str) -> None:
    print("pnp: " + msg, file=sys.stderr, flush=True)


async def start_node(cfg, verbose=True) -> Node:
    board = HostBoard(cfg.state)
    ident, created = identity.load_or_create(DirStorage(cfg.state), os.urandom)
    if created and verbose:
        log_stderr(f"created identity {ident.fingerprint} in {cfg.state}")
    node = Node(board, ident, peers=cfg.peers, ike_port=cfg.ike_port, natt_port=cfg.natt_port,
                addresses=cfg.addresses, keylog=KeylogDir(cfg.keylog) if cfg.keylog else None,
                log=log_stderr if verbose else None, accept_any=cfg.accept_any,
                spd=cfg.spd, tofu=cfg.tofu)
    await node.start()
    return node
