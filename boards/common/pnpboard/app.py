"""The example application of every board: a zero-configuration node with an echo port.

A board's main.py is `asyncio.run(app.main(Board))`. Wi-Fi boards need /wifi.json
({"ssid": "...", "key": "..."}); `pnp deploy` puts the package, /lib/pnpboard and the
board's glue in place. An optional /pnp.json ({"natt_port": 4500, "app_port": 7000})
moves the ports, e.g. when a test runs several boards on one host.
The node's identity is made on first boot and kept in flash; every peer is accepted
with NULL authentication (ENCRYPTED) and goes up a level when it proves a pinned key.
Datagrams to UDP 7000 are echoed back; every one is printed with its security level.
"""

import pnpipsec
from pnpipsec import identity
from pnpipsec.node import Node, zero_config
from pnpboard.net import WifiConfigError, NetworkError, follow


def settings():
    try:
        import json
        with open("/pnp.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def level_name(level):
    return pnpipsec.LEVEL_NAMES[level] if 0 <= level < len(pnpipsec.LEVEL_NAMES) else str(level)


async def main(Board):
    cfg = settings()
    natt = cfg.get("natt_port", 4500)
    app_port = cfg.get("app_port", 7000)
    board = Board()
    try:
        await board.up()
    except (WifiConfigError, NetworkError) as e:
        print(e)
        return
    ident, created = identity.load_or_create(board.storage, board.rand)
    print("identity %s: fingerprint %s" % ("created" if created else "loaded", ident.fingerprint))
    node = Node(board, ident, ike_port=natt, natt_port=natt, addresses=board.address_list(),
                accept_any=zero_config(), log=print)
    node.on_level(lambda host, old, new, now: print("level %s: %s -> %s" % (host, level_name(old), level_name(new))))

    def moved(events):
        # the app's callback: our address changes (SLAAC renumbering, privacy address
        # rotation, DHCP); follow() has already given the node the new list, stable first
        for ev in events:
            print("address", " ".join(str(x) for x in ev))

    follow(board, node, moved, print)
    board.watch()
    await node.start()
    ep = node.endpoint(app_port)
    print("pnpipsec %s on %s: IKE on UDP %d/%d, echo on UDP %d; addresses %s"
          % (pnpipsec.__version__, board.name, node.ike_port, node.natt_port, app_port,
             ", ".join(board.address_list()) or "none"))
    while True:
        data, peer, level = await ep.recv()
        print("from %s port %d at %s: %r" % (peer[0], peer[1], level_name(level), data[:60]))
        try:
            await ep.send(b"echo: " + data, peer, timeout=5)
        except Exception as e:  # noqa: BLE001 - the example keeps serving
            print("reply failed:", e)
