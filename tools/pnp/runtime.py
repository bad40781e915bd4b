"""Starting and stopping a host node from a NodeConfig: shared by `pnp node`, `pnp send`
and `pnp connect`."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys

from pnp_hostboard.board import HostBoard
from pnp_hostboard.storage import DirStorage
from pnpipsec import identity, inet
from pnpipsec.node import Node
from pnpipsec.pins import PinStore

from pnp import logs
from pnp.keylogdir import KeylogDir

# node.stop() sends DELETEs and waits for their answers, at most its own timeout (1 s by
# default), normally a few ms. STOP_LIMIT is a net over that: a command never waits
# longer for the node to stop, so `pnp send/connect --timeout T` end within
# T + STOP_LIMIT plus interpreter start-up (T + 1.5 s in all, measured in
# host_tests/test_cli_timeouts.py).
STOP_LIMIT = 1.25


def log_stderr(msg: str, level: int = logging.INFO) -> None:
    """A line of the command's own (through the "pnp" logger: see pnp.logs)."""
    logs.LOG.log(level, "%s", msg)


async def start_node(cfg, verbose=True) -> Node:
    """Open the stores, then start the node. An unusable store raises StoreError,
    PinError or IdentityError (with .path and .problem) before anything is written:
    the pin store is read before a missing identity is created."""
    storage = DirStorage(cfg.state)
    pins = PinStore(storage)
    ident, created = identity.load_or_create(storage, os.urandom)
    storage.check_private(identity.FILE)
    if created and verbose:
        log_stderr(f"created identity {ident.fingerprint} in {cfg.state}")
    board = HostBoard.binding(getattr(cfg, "bind", None) or [], state_dir=cfg.state,
                              log=log_stderr if verbose else None)
    node = Node(board, ident, peers=cfg.peers, ike_port=cfg.ike_port, natt_port=cfg.natt_port,
                addresses=cfg.addresses, keylog=KeylogDir(cfg.keylog) if cfg.keylog else None,
                log=logs.node_log if verbose else None, accept_any=cfg.accept_any,
                spd=cfg.spd, tofu=cfg.tofu, pins=pins)
    if verbose:
        node.on_level(logs.on_level)
    await node.start()
    if not cfg.addresses:
        follow_addresses(node, board, log_stderr if verbose else None)
    return node


def describe_address_event(ev) -> str:
    """One line for an address event (kind, address, ifindex, preferred_s, valid_s, flags)."""
    kind, addr, zone, pref, valid, flags = ev

    def life(v):
        return "forever" if v is None else "%d s" % v
    where = ""
    if zone is not None:
        try:
            where = " on %s" % socket.if_indextoname(zone)
        except (OSError, TypeError):
            where = " on if%s" % zone
    return "address %s: %s%s (%s; preferred %s, valid %s)" % (
        kind, addr, where, ", ".join(flags), life(pref), life(valid))


def follow_addresses(node, board, log=None, report=None):
    """The host's board -> node glue for renumbering (SLAAC, privacy addresses, DHCP):
    the node's addresses are the board's preferred ones, stable global IPv6 first
    (board.address_list()); on every change (rtnetlink, pnp_hostboard.netlink) the
    node gets the new list -- and node.local_addresses_changed(addrs), the MOBIKE hook,
    where the node has it -- then each event is logged (`pnp events` shows the lines)
    and report(events) runs. Called only when the configuration names no `addresses`
    (a configured list is the user's). Returns the watcher (None without rtnetlink)."""
    def changed(events):
        try:
            _node_addresses(node, board.address_list())
        except Exception as e:  # noqa: BLE001 - the watcher keeps running
            log_stderr(f"address change: node update failed: {e!r}", logging.WARNING)
        if log is not None:
            for ev in events:
                log(describe_address_event(ev))
        if report is not None:
            report(events)
    board.on_address_change(changed)
    w = board.watch()
    if w is not None:
        node.addresses = board.address_list()
    return w


def _node_addresses(node, addrs):
    """node.local_addresses_changed(addrs) (the MOBIKE hook; it sets node.addresses),
    or node.addresses = addrs for a node without it (as pnpboard.net.node_addresses)."""
    addrs = list(addrs)
    hook = getattr(node, "local_addresses_changed", None)
    if hook is not None:
        hook(addrs)         # sets node.addresses (comparing with the old ones first)
    else:
        node.addresses = addrs


def parse_peer_address(text):
    """The peer address argument as canonical text; ValueError with a message if it is not one."""
    try:
        b = inet.pton(text)
    except (ValueError, IndexError):
        raise ValueError("%r is not an IPv4 or IPv6 address" % text) from None
    if b == bytes(len(b)):
        raise ValueError("%s is the unspecified address, not a peer" % text)
    return inet.ntop(b)


def _is_local(host):
    """True when `host` is an address of this machine (binding to it works)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


def is_own_address(cfg, host):
    """True when IKE sent to `host` would come back to this node's own sockets: it is an
    address we bind, or one of this machine's addresses while we bind all addresses of
    its family, and the peer's IKE port is one of ours. (Without SO_REUSEADDR no other
    socket can hold that port on a local address while we hold it on all of them.)
    The node itself also drops its own IKE_SA_INIT coming back (pnpipsec.node), which
    catches any other way round (NAT hairpin, an alias); this check says so before
    anything is sent."""
    peer = next((p for p in cfg.peers if p.host == host), None)
    port = (peer.ike_port if peer.ike_port != peer.natt_port else peer.natt_port) if peer else cfg.natt_port
    if port not in (cfg.ike_port, cfg.natt_port):
        return False
    bind = list(getattr(cfg, "bind", None) or [])
    if host in bind:
        return True
    fam6 = ":" in host
    mine = [a for a in bind if (":" in a) == fam6]
    wild = "::" if fam6 else "0.0.0.0"
    if bind and mine != [wild]:
        return False        # that family not bound, or bound to another address
    return _is_local(host)


async def stop_node(node, limit=STOP_LIMIT) -> None:
    """node.stop(), never longer than `limit` seconds (the process is about to end)."""
    try:
        await asyncio.wait_for(node.stop(), limit)
    except asyncio.TimeoutError:
        pass
    stop_watch = getattr(node.board, "stop_watch", None)
    if stop_watch is not None:
        stop_watch()
