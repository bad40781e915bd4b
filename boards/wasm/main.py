"""Example application for the virtual board: a zero-configuration node with an echo port.

No per-device configuration: the identity is made on first boot and kept on the
board's file system; every peer is accepted with NULL authentication (ENCRYPTED) and
rises when it proves a key that is pinned or approved. Datagrams to UDP 7000 are
echoed back with "echo: " in front; every one is printed with its level.
An optional /pnp.json ({"natt_port": 4500, "app_port": 7000}) moves the ports, e.g.
when a test runs several boards on one host.
"""

import asyncio
import json

import pnpipsec
from pnpipsec import identity
from pnpipsec.node import Node, zero_config

from board import Board


def settings():
    try:
        with open("/pnp.json") as f:
            return json.load(f)
    except OSError:
        return {}


def level_name(level):
    return pnpipsec.LEVEL_NAMES[level]


async def main():
    cfg = settings()
    natt = cfg.get("natt_port", 4500)
    app = cfg.get("app_port", 7000)
    board = Board()
    ident, created = identity.load_or_create(board.storage, board.rand)
    print("identity %s: fingerprint %s" % ("created" if created else "loaded", ident.fingerprint))
    node = Node(board, ident, ike_port=natt, natt_port=natt, accept_any=zero_config())
    node.on_level(lambda host, old, new, now: print("level %s: %s -> %s" % (host, level_name(old), level_name(new))))
    await node.start()
    ep = node.endpoint(app)
    print("pnpipsec %s on %s: IKE and ESP on UDP %d, echo on UDP %d" % (pnpipsec.__version__, board.name, natt, app))
    while True:
        data, peer, level = await ep.recv()
        print("from %s port %d at %s: %r" % (peer[0], peer[1], level_name(level), data[:60]))
        try:
            await ep.send(b"echo: " + data, peer, timeout=5)
        except Exception as e:  # the example keeps serving
            print("reply failed:", e)


asyncio.run(main())
