"""`pnp keygen --state DIR`: the node's Ed25519 identity, made once and kept.

An identity store that is there but unusable (truncated, corrupt, unreadable, a
directory...) is refused with one line naming the file and the problem, exit 2: keygen
never writes a new key over it.
"""

from __future__ import annotations

import binascii
import os

from pnp.problems import STORE_ERRORS, refuse, store_problem
from pnp_hostboard.storage import DirStorage
from pnpipsec import identity


def add_arguments(p):
    p.add_argument("--state", required=True, help="state folder (created if missing)")


def run(args) -> int:
    try:
        store = DirStorage(args.state)
        ident, created = identity.load_or_create(store, os.urandom)
        store.check_private(identity.FILE)
        pem_path = store.path("identity.pub.pem")
        store.write("identity.pub.pem", identity.spki_pem(ident.public))
    except STORE_ERRORS as e:
        if store_problem(e) is None:
            raise
        return refuse("pnp keygen", e)
    print(("created" if created else "existing") + " identity in " + args.state)
    print("public key:  " + binascii.hexlify(ident.public).decode())
    print("fingerprint: " + ident.fingerprint)
    print("PEM:         " + pem_path + "  (strongSwan: remote { pubkeys = this file })")
    return 0
