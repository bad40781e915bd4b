"""`pnp connect --config FILE ADDR`: bring up the SA with a peer, print what came up.

--timeout T is a deadline T seconds after the command starts; then the node stops (its
DELETEs: Node.stop bounds them at 1 s, runtime.STOP_LIMIT = 1.25 s is the net), so a
failed connect ends within T + 1.25 s plus interpreter start-up (T + 1.5 s at worst).
--hold adds its own time after a success.

Exit status: 0 up, 1 not up (the message says why), 2 bad arguments or an unusable
config, state folder, identity or pin store.
"""

from __future__ import annotations

import asyncio
import binascii
import sys

from pnp import config
from pnp.problems import STORE_ERRORS, refuse, store_problem
from pnp.runtime import is_own_address, parse_peer_address, start_node, stop_node
from pnp.send_cmd import no_sa
from pnp_hostboard.board import BindError
from pnpipsec import LEVEL_NAMES, ENCRYPTED, AUTHENTICATED
from pnpipsec.node import NodeError


def add_arguments(p):
    p.add_argument("--config", required=True, help="node TOML file (see README)")
    p.add_argument("addr", help="peer address (IPv6 or IPv4)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--hold", type=float, default=0.0, help="keep the node up this many seconds after")


async def _main(args) -> int:
    deadline = asyncio.get_running_loop().time() + args.timeout
    cfg = config.load(args.config)
    if is_own_address(cfg, args.addr):
        print(f"pnp connect: {args.addr} is this node's own address (its IKE port is ours): "
              "refusing to negotiate with ourselves", file=sys.stderr)
        return 2
    node = await start_node(cfg, verbose=False)
    try:
        try:
            async with asyncio.timeout_at(deadline):
                sa = await node.connect_ike(args.addr, timeout=args.timeout)
        except TimeoutError:
            print(f"pnp connect: {no_sa(node, args.addr, None, args.timeout)}", file=sys.stderr)
            return 1
        except NodeError as e:
            print(f"pnp connect: {no_sa(node, args.addr, e)}", file=sys.stderr)
            return 1
        level = AUTHENTICATED if sa.auth in ("psk", "pubkey") else ENCRYPTED
        kids = len(sa.children)
        print(f"IKE SA up with {args.addr}: SPIi {binascii.hexlify(sa.spi_i).decode()} "
              f"SPIr {binascii.hexlify(sa.spi_r).decode()}, auth {sa.auth}, "
              f"level {LEVEL_NAMES[level]}, {kids} CHILD SA(s)", flush=True)
        if args.hold:
            await asyncio.sleep(args.hold)
        return 0
    except NodeError as e:
        print(f"pnp connect: {e}", file=sys.stderr)
        return 1
    finally:
        await stop_node(node)


def run(args) -> int:
    if not args.timeout > 0:
        print("pnp connect: --timeout must be more than 0 s", file=sys.stderr)
        return 2
    try:
        args.addr = parse_peer_address(args.addr)
    except ValueError as e:
        print(f"pnp connect: address: {e}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(args))
    except BindError as e:
        print(f"pnp connect: {e}", file=sys.stderr)
        return 2
    except config.ConfigError as e:
        return refuse("pnp connect", e)
    except STORE_ERRORS as e:
        if store_problem(e) is None:
            raise
        return refuse("pnp connect", e)
    except OSError as e:
        print(f"pnp connect: {e}", file=sys.stderr)
        return 1
