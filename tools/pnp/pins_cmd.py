"""`pnp pins --state DIR list|approve|revoke|forget`: the trust-on-first-use pin store.

Pins are keyed by the peer's address; a peer whose key changed stays at ENCRYPTED until
its new key is approved here (or with Node.approve from the app).

When a node runs on the state folder (its control socket answers, pnp.control),
approve and revoke/forget act on the running node: its peers change level at once and
the node writes the store. Otherwise they change the store; either way the store is
changed by merging (pnpipsec.pins), so a node and this command never erase each
other's changes.

The state folder must exist: pins never creates one (a typo in --state is an error,
not a new empty store).

Exit status: 0 done, 1 refused (no such pin, nothing pending, the store is full),
2 bad arguments, or a state folder or pin store that is unusable (one line naming the
file and the problem; the file is left as it is).
"""

from __future__ import annotations

import binascii
import sys

from pnp import control
from pnp.problems import STORE_ERRORS, refuse, store_problem
from pnp_hostboard.storage import DirStorage
from pnpipsec import inet
from pnpipsec.identity import fingerprint, public_from_pem
from pnpipsec.pins import PinError, PinStore


def add_arguments(p):
    p.add_argument("--state", required=True, help="the node's state folder (must exist)")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    sub.add_parser("list", help="show every pinned peer")
    a = sub.add_parser("approve", help="trust a key for a peer address")
    a.add_argument("addr")
    g = a.add_mutually_exclusive_group(required=True)
    g.add_argument("--pending", action="store_true", help="approve the changed key the peer last proved")
    g.add_argument("--key", help="the key as 64 hex digits")
    g.add_argument("--pem", help="the key as a PEM public key file (pnp keygen writes one)")
    for name in ("revoke", "forget"):
        f = sub.add_parser(name, help="drop a peer's pin (next proof pins again; a running "
                           "node's SA with it falls below AUTHENTICATED)")
        f.add_argument("addr")


def _on_node(args):
    """Do approve/revoke on the running node: its answer, or None when none runs."""
    path = control.path_for(args.state)
    if control.probe(path) != "running":
        return None
    if args.action == "approve":
        req = {"op": "approve", "addr": args.addr}
        if args.pending:
            req["pending"] = True
        else:
            req["key"] = binascii.hexlify(_key(args, None, None)).decode()
    else:
        req = {"op": "revoke", "addr": args.addr}
    try:
        return control.request(path, req)
    except control.ControlError:
        return None


def _key(args, store, pid):
    if args.pending:
        got = store.get(pid)
        if got is None or got[2] is None:
            raise PinError(f"{args.addr} has no changed key waiting for approval")
        return got[2]
    if args.pem:
        with open(args.pem, "rb") as fh:
            return public_from_pem(fh.read())
    key = binascii.unhexlify(args.key)
    if len(key) != 32:
        raise ValueError("a key is 32 bytes (64 hex digits)")
    return key


def run(args) -> int:
    try:
        store = PinStore(DirStorage(args.state, create=False))
        if args.action == "list":
            items = sorted(store.items())
            if not items:
                print("no pins")
            for pid, key, state in items:
                got = store.get(pid)
                line = f"{inet.ntop(pid):40} {fingerprint(key)}  {state}"
                if got[2] is not None:
                    line += f"  (now presents {fingerprint(got[2])}: approve with --pending)"
                print(line)
            return 0
        pid = inet.pton(args.addr)
        ans = _on_node(args)
        if ans is not None:
            if not ans.get("ok"):
                print(f"pnp pins: {ans.get('error')}", file=sys.stderr)
                return 2 if ans.get("usage") else 1
            if args.action == "approve":
                print(f"approved {ans['fingerprint']} for {args.addr} on the running node: "
                      f"level {ans['level']}")
            else:
                print(f"revoked the pin of {args.addr} on the running node: level {ans['level']}")
            return 0
        if args.action in ("forget", "revoke"):
            if not store.forget(pid):
                print(f"pnp pins: no pin for {args.addr}", file=sys.stderr)
                return 1
            print(f"forgot {args.addr}")
            return 0
        key = _key(args, store, pid)
        store.approve(pid, key)
        print(f"approved {fingerprint(key)} for {args.addr}")
        return 0
    except STORE_ERRORS as e:
        if store_problem(e) is not None:
            return refuse("pnp pins", e)
        print(f"pnp pins: {e}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:
        print(f"pnp pins: {e}", file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1
