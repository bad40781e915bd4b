"""`pnp send --config FILE ADDR PORT DATA`: one datagram through the SA, print the reply."""

from __future__ import annotations

import asyncio
import sys

from pnp import config
from pnp.runtime import start_node
from pnpipsec import LEVEL_NAMES
from pnpipsec.node import NodeError


def add_arguments(p):
    p.add_argument("--config", required=True, help="node TOML file (see README)")
    p.add_argument("addr", help="peer address (IPv6 or IPv4)")
    p.add_argument("port", type=int, help="destination UDP port")
    p.add_argument("data", help="datagram text")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds for SA + reply (default 10)")
    p.add_argument("--sport", type=int, default=40000, help="our source port inside the SA")
    p.add_argument("--no-reply", action="store_true", help="do not wait for a reply")


async def _main(args) -> int:
    cfg = config.load(args.config)
    node = await start_node(cfg, verbose=False)
    try:
        t0 = asyncio.get_running_loop().time()
        level = await node.connect(args.addr, timeout=args.timeout)
        ep = node.endpoint(args.sport)
        await ep.send(args.data.encode(), (args.addr, args.port))
        print(f"sent {len(args.data)} bytes at level {LEVEL_NAMES[level]}", file=sys.stderr)
        if args.no_reply:
            return 0
        left = max(0.1, args.timeout - (asyncio.get_running_loop().time() - t0))
        data, addr, lvl = await asyncio.wait_for(ep.recv(), left)
        sys.stdout.write(data.decode(errors="replace") + "\n")
        print(f"reply from {addr[0]} port {addr[1]} at level {LEVEL_NAMES[lvl]}", file=sys.stderr)
        return 0
    except NodeError as e:
        print(f"pnp send: {e}", file=sys.stderr)
        return 1
    except asyncio.TimeoutError:
        print(f"pnp send: no reply within {args.timeout} s", file=sys.stderr)
        return 1
    finally:
        await node.stop()


def run(args) -> int:
    if not 1 <= args.port <= 65535 or not 1 <= args.sport <= 65535:
        print("pnp send: ports must be 1-65535", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(args))
    except config.ConfigError as e:
        print(f"pnp send: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"pnp send: {e}", file=sys.stderr)
        return 1
