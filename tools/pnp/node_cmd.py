"""`pnp node --config FILE [--echo PORT]`: run a node until stopped.

Exit status: 0 stopped by SIGTERM/SIGINT, 1 could not start for another reason, 2 the
config, the state folder, the identity or the pin store is unusable (one line naming
the file and the problem; the file is left as it is), or a port is taken (one line
naming the address and the port: no SO_REUSEADDR, so a second node on the same ports
does not start)."""

from __future__ import annotations

import asyncio
import signal
import sys

from pnp import config
from pnp.problems import STORE_ERRORS, refuse, store_problem
from pnp.runtime import log_stderr, start_node, stop_node
from pnp_hostboard.board import BindError


def add_arguments(p):
    p.add_argument("--config", required=True, help="node TOML file (see README)")
    p.add_argument("--echo", type=int, metavar="PORT", help="answer datagrams on PORT through the SA")


async def _echo(node, port):
    ep = node.endpoint(port)
    while True:
        data, addr, level = await ep.recv()
        log_stderr(f"echo {len(data)} bytes to {addr[0]} port {addr[1]} (level {level})")
        try:
            await ep.send(data, addr)
        except Exception as e:  # the node keeps serving other peers
            log_stderr(f"echo to {addr[0]} failed: {e}")


async def _main(args) -> int:
    cfg = config.load(args.config)
    try:
        node = await start_node(cfg)
    except BindError as e:
        print(f"pnp node: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"pnp node: {e}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(_echo(node, args.echo))] if args.echo else []
    log_stderr(f"node up: IKE port {cfg.ike_port}, NAT-T port {cfg.natt_port}, {len(cfg.peers)} peer(s)")
    print("ready", flush=True)
    await stop.wait()
    for t in tasks:
        t.cancel()
    await stop_node(node)
    log_stderr("node stopped")
    return 0


def run(args) -> int:
    if args.echo is not None and not 1 <= args.echo <= 65535:
        print("pnp node: --echo needs a port 1-65535", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(args))
    except config.ConfigError as e:
        return refuse("pnp node", e)
    except STORE_ERRORS as e:
        if store_problem(e) is None:
            raise
        return refuse("pnp node", e)
