"""`pnp connect --config FILE ADDR`: bring up the SA with a peer, print what came up."""

from __future__ import annotations

import asyncio
import binascii
import sys

from pnp import config
from pnp.runtime import start_node
from pnpipsec import LEVEL_NAMES, ENCRYPTED, AUTHENTICATED
from pnpipsec.node import NodeError


def add_arguments(p):
    p.add_argument("--config", required=True, help="node TOML file (see README)")
    p.add_argument("addr", help="peer address (IPv6 or IPv4)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--hold", type=float, default=0.0, help="keep the node up this many seconds after")


async def _main(args) -> int:
    cfg = config.load(args.config)
    node = await start_node(cfg, verbose=False)
    try:
        sa = await node.connect_ike(args.addr, timeout=args.timeout)
        level = AUTHENTICATED if sa.auth in ("psk", "pubkey") else ENCRYPTED
        kids = len(sa.children)
        print(f"IKE SA up with {args.addr}: SPIi {binascii.hexlify(sa.spi_i).decode()} "
              f"SPIr {binascii.hexlify(sa.spi_r).decode()}, auth {sa.auth}, "
              f"level {LEVEL_NAMES[level]}, {kids} CHILD SA(s)")
        if args.hold:
            await asyncio.sleep(args.hold)
        return 0
    except NodeError as e:
        print(f"pnp connect: {e}", file=sys.stderr)
        return 1
    finally:
        await node.stop()


def run(args) -> int:
    try:
        return asyncio.run(_main(args))
    except config.ConfigError as e:
        print(f"pnp connect: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"pnp connect: {e}", file=sys.stderr)
        return 1
