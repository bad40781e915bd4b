"""Example application: a zero-configuration pnpipsec node with one echo endpoint.

Needs /wifi.json ({"ssid": "...", "key": "..."}), the pnpipsec package in /lib and this
board's glue (board.py, /lib/pnpboard) -- `pnp deploy` puts all of that in place.
The node's identity is made on first boot and kept in flash; every peer is accepted
with NULL authentication (level ENCRYPTED) and upgrades as the app asks for more.
"""

import asyncio

import pnpipsec
from pnpipsec import identity
from pnpipsec.ike.sa import PeerConfig
from pnpipsec.node import Node
from pnpboard.net import WifiConfigError, NetworkError

from board import Board

APP_PORT = 7000
STATUS_EVERY = 30


def level_name(level):
    return pnpipsec.LEVEL_NAMES[level] if 0 <= level < len(pnpipsec.LEVEL_NAMES) else str(level)


async def status(node):
    while True:
        await asyncio.sleep(STATUS_EVERY)
        peers = sorted(node.out)
        print("status: %d SA(s)%s" % (len(peers), "".join(
            "\n  %s %s" % (h, level_name(node.level(h))) for h in peers)))


async def main():
    board = Board()
    try:
        await board.up()
    except (WifiConfigError, NetworkError) as e:
        print(e)
        return
    ident, created = identity.load_or_create(board.storage, board.rand)
    print("identity %s: fingerprint %s" % ("created" if created else "loaded", ident.fingerprint))
    node = Node(board, ident, addresses=board.address_list(), accept_any=PeerConfig(), log=print)

    def moved(events):
        node.addresses = board.address_list()
        for ev in events:
            print("address", " ".join(str(x) for x in ev))

    board.on_address_change(moved)
    board.watch()
    await node.start()
    print("pnpipsec %s on %s: IKE on UDP %d/%d, app on UDP %d; addresses %s"
          % (pnpipsec.__version__, board.name, node.ike_port, node.natt_port, APP_PORT,
             ", ".join(board.address_list()) or "none"))
    asyncio.create_task(status(node))
    ep = node.endpoint(APP_PORT)
    while True:
        data, peer, level = await ep.recv()
        print("from %s port %d at %s: %r" % (peer[0], peer[1], level_name(level), data[:60]))
        try:
            ep.send(b"echo: " + data, peer)
        except Exception as e:  # noqa: BLE001 - the example keeps serving
            print("reply failed:", e)


asyncio.run(main())
