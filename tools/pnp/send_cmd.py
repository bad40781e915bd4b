"""`pnp send --config FILE ADDR PORT DATA`: one datagram through the SA, print the reply.

--timeout T bounds the whole exchange: bringing the SA up, waiting until the policy lets
the datagram leave, and the reply share one deadline T seconds after the command starts
(before, the endpoint's send had its own 10 s, Node.send_timeout, after the SA came up).
Then the node stops: its DELETEs normally take a few ms, Node.stop bounds them at 1 s and
runtime.STOP_LIMIT (1.25 s) is the net. So the command ends within T + 1.25 s plus
interpreter start-up (about 0.2 s): T + 1.5 s at worst, about T + 0.2 s when there is no
SA to delete or the peer answers (host_tests/test_cli_timeouts.py measures it).

Exit status: 0 sent (and the reply printed), 1 not sent or no reply (the message says
why), 2 bad arguments or an unusable config, state folder, identity or pin store.
"""

from __future__ import annotations

import asyncio
import sys

from pnp import config, status
from pnp.problems import STORE_ERRORS, refuse, store_problem
from pnp.runtime import is_own_address, parse_peer_address, start_node, stop_node
from pnp_hostboard.board import BindError
from pnpipsec import LEVEL_NAMES
from pnpipsec.node import NodeError


def add_arguments(p):
    p.add_argument("--config", required=True, help="node TOML file (see README)")
    p.add_argument("addr", help="peer address (IPv6 or IPv4)")
    p.add_argument("port", type=int, help="destination UDP port")
    p.add_argument("data", help="datagram text")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds for SA + send + reply, all together (default 10)")
    p.add_argument("--sport", type=int, default=40000, help="our source port inside the SA")
    p.add_argument("--no-reply", action="store_true", help="do not wait for a reply")


def _level_name(node, addr):
    try:
        return LEVEL_NAMES[node.level(addr)]
    except Exception:  # noqa: BLE001 - only for the message
        return "unknown"


def no_sa(node, addr, err, timeout=None) -> str:
    """"no SA with ADDR[ within T s]: WHY": why from the node's record of the peer (the
    peer's notify, our refusal, no answer), else the node's error."""
    try:
        why = status.why_not(node, addr)
    except Exception:  # noqa: BLE001 - only for the message
        why = None
    head = f"no SA with {addr}" + (f" within {timeout} s" if timeout is not None else "")
    if why and why not in ("no SA", "no SA yet"):
        return f"{head}: {why}"
    return f"{head}: {err}" if err is not None else head


async def _main(args) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.timeout
    cfg = config.load(args.config)
    if is_own_address(cfg, args.addr):
        print(f"pnp send: {args.addr} is this node's own address (its IKE port is ours): "
              "refusing to negotiate with ourselves", file=sys.stderr)
        return 2
    node = await start_node(cfg, verbose=False)
    phase = "sa"
    try:
        # One deadline for everything; the node's own timeouts (connect, and the
        # endpoint's send, whose default is Node.send_timeout = 10 s) get the full T
        # but never outlive it.
        async with asyncio.timeout_at(deadline):
            level = await node.connect(args.addr, timeout=args.timeout)
            ep = node.endpoint(args.sport)
            phase = "send"
            await ep.send(args.data.encode(), (args.addr, args.port), timeout=args.timeout)
            print(f"sent {len(args.data)} bytes at level {LEVEL_NAMES[level]}", file=sys.stderr)
            if args.no_reply:
                return 0
            phase = "reply"
            data, addr, lvl = await ep.recv()
        sys.stdout.write(data.decode(errors="replace") + "\n")
        print(f"reply from {addr[0]} port {addr[1]} at level {LEVEL_NAMES[lvl]}", file=sys.stderr)
        return 0
    except NodeError as e:
        if phase == "sa":
            print(f"pnp send: {no_sa(node, args.addr, e)}", file=sys.stderr)
        else:
            print(f"pnp send: {e}", file=sys.stderr)
        return 1
    except TimeoutError:
        if phase == "sa":
            why = no_sa(node, args.addr, None, args.timeout)
        elif phase == "send":
            why = (f"not sent to {args.addr}: the SA stayed at level {_level_name(node, args.addr)}, "
                   f"below what the policy requires, for {args.timeout} s; nothing sent in clear")
        else:
            why = f"no reply within {args.timeout} s"
        print(f"pnp send: {why}", file=sys.stderr)
        return 1
    finally:
        await stop_node(node)


def run(args) -> int:
    if not 1 <= args.port <= 65535 or not 1 <= args.sport <= 65535:
        print("pnp send: ports must be 1-65535", file=sys.stderr)
        return 2
    if not args.timeout > 0:
        print("pnp send: --timeout must be more than 0 s", file=sys.stderr)
        return 2
    try:
        args.addr = parse_peer_address(args.addr)
    except ValueError as e:
        print(f"pnp send: address: {e}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(args))
    except BindError as e:
        print(f"pnp send: {e}", file=sys.stderr)
        return 2
    except config.ConfigError as e:
        return refuse("pnp send", e)
    except STORE_ERRORS as e:
        if store_problem(e) is None:
            raise
        return refuse("pnp send", e)
    except OSError as e:
        print(f"pnp send: {e}", file=sys.stderr)
        return 1
