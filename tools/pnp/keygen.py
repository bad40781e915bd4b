"""`pnp keygen --state DIR`: the node's Ed25519 identity, made once and kept."""

from __future__ import annotations

import binascii
import os
import sys

from pnp_hostboard.storage import DirStorage
from pnpipsec import identity


def add_arguments(p):
    p.add_argument("--state", required=True, help="state folder (created if missing)")


def run(args) -> int:
    try:
        store = DirStorage(args.state)
    except OSError as e:
        print(f"pnp keygen: cannot use state folder {args.state}: {e.strerror}", file=sys.stderr)
        return 2
    try:
        ident, created = identity.load_or_create(store, os.urandom)
    except identity.IdentityError as e:
        print(f"pnp keygen: {e}; the file {store.path(identity.FILE)} was left as it is", file=sys.stderr)
        return 1
    pem_path = store.path("identity.pub.pem")
    store.write("identity.pub.pem", identity.spki_pem(ident.public))
    print(("created" if created else "existing") + " identity in " + args.state)
    print("public key:  " + binascii.hexlify(ident.public).decode())
    print("fingerprint: " + ident.fingerprint)
    print("PEM:         " + pem_path + "  (strongSwan: remote { pubkeys = this file })")
    return 0
