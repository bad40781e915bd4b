"""`pnp node --config FILE [--echo PORT] [-v|-q]`: run a node until stopped.

It logs through `logging` (pnp.logs: timestamps, the peer of every event, level names,
why a handshake failed) to stderr: -q warnings only, -v also per-packet detail. While
it runs, its control socket STATE/control.sock (mode 0600, pnp.control) answers
`pnp status`, `pnp events` and `pnp pins approve|revoke`.

Exit status: 0 stopped by SIGTERM/SIGINT, 1 could not start for another reason, 2 the
config, the state folder, the identity or the pin store is unusable (one line naming
the file and the problem; the file is left as it is), a node already runs on this
state folder (its control socket answers), or a port is taken (one line naming the
address and the port: no SO_REUSEADDR, so a second node on the same ports does not
start)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from pnp import config, control, logs
from pnp.problems import STORE_ERRORS, refuse, store_problem
from pnp.runtime import log_stderr, start_node, stop_node
from pnpipsec import LEVEL_NAMES
from pnp_hostboard.board import BindError


def add_arguments(p):
    p.add_argument("--config", required=True, help="node TOML file (see README)")
    p.add_argument("--echo", type=int, metavar="PORT", help="answer datagrams on PORT through the SA")
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_true", help="log per-packet detail too (DEBUG)")
    g.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")


async def _echo(node, port):
    ep = node.endpoint(port)
    while True:
        data, addr, level = await ep.recv()
        log_stderr(f"echo {len(data)} bytes to {addr[0]} port {addr[1]} ({LEVEL_NAMES[level]})",
                   logging.DEBUG)
        try:
            await ep.send(data, addr)
        except Exception as e:  # the node keeps serving other peers
            log_stderr(f"echo to {addr[0]} failed: {e}", logging.WARNING)


async def _main(args) -> int:
    cfg = config.load(args.config)
    sock_path = control.path_for(cfg.state)
    there = control.probe(sock_path)
    if there == "running":
        print(f"pnp node: already running on {cfg.state} (its control socket {sock_path} answers)",
              file=sys.stderr)
        return 2
    if there == "other":
        print(f"pnp node: {sock_path}: not a socket (left as it is; the control socket goes there)",
              file=sys.stderr)
        return 2
    try:
        node = await start_node(cfg)
    except BindError as e:
        print(f"pnp node: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"pnp node: {e}", file=sys.stderr)
        return 1
    hub = control.EventHub()
    logs.LOG.addHandler(hub)
    ctl = control.ControlServer(node, sock_path, hub)
    try:
        await ctl.start()
    except OSError as e:     # e.g. a path longer than a Unix socket's 107 bytes
        log_stderr(f"no control socket at {sock_path}: {e}", logging.WARNING)
        ctl = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(_echo(node, args.echo))] if args.echo else []
    log_stderr(f"node up: identity {node.identity.fingerprint}, IKE port {cfg.ike_port}, "
               f"NAT-T port {cfg.natt_port}, {len(cfg.peers)} peer(s)"
               + (f", control socket {sock_path}" if ctl else ""))
    print("ready", flush=True)
    await stop.wait()
    for t in tasks:
        t.cancel()
    if ctl is not None:
        await ctl.close()
    await stop_node(node)
    logs.LOG.removeHandler(hub)
    log_stderr("node stopped")
    return 0


def run(args) -> int:
    if args.echo is not None and not 1 <= args.echo <= 65535:
        print("pnp node: --echo needs a port 1-65535", file=sys.stderr)
        return 2
    logs.setup(-1 if args.quiet else 1 if args.verbose else 0)
    try:
        return asyncio.run(_main(args))
    except config.ConfigError as e:
        return refuse("pnp node", e)
    except STORE_ERRORS as e:
        if store_problem(e) is None:
            raise
        return refuse("pnp node", e)
