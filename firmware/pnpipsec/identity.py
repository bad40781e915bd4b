"""The node's Ed25519 identity: made on first start, stored atomically, never replaced.

Storage is the board's: an object with read(name) -> bytes or None and an atomic
write(name, data). A store that exists but does not parse is an error; we never
generate a new key over it, because that would silently change who this device is.
"""

import binascii
import hashlib

from pnpipsec.crypto import ed25519

FILE = "identity"
_MAGIC = b"pnpipsec identity v1"
_SPKI_PREFIX = b"\x30\x2a\x30\x05\x06\x03\x2b\x65\x70\x03\x21\x00"
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


class IdentityError(Exception):
    pass


def _check(seed):
    return binascii.hexlify(hashlib.sha256(b"pnpipsec-id" + seed).digest()[:4])


def encode(seed):
    return b"\n".join((_MAGIC, b"seed " + binascii.hexlify(seed), b"check " + _check(seed), b""))


def decode(blob):
    lines = blob.split(b"\n")
    if len(lines) < 3 or lines[0] != _MAGIC:
        raise IdentityError("identity store: unknown format (first line %r)" % lines[0][:40])
    if not lines[1].startswith(b"seed ") or not lines[2].startswith(b"check "):
        raise IdentityError("identity store: missing seed or check line")
    try:
        seed = binascii.unhexlify(lines[1][5:].strip())
    except ValueError:
        raise IdentityError("identity store: seed is not hex")
    if len(seed) != 32:
        raise IdentityError("identity store: seed has %d bytes, not 32" % len(seed))
    if lines[2][6:].strip() != _check(seed):
        raise IdentityError("identity store: check value does not match the seed (corrupt)")
    return seed


class Identity:
    def __init__(self, seed):
        self.seed = seed
        self.public = ed25519.public_key(seed)
        self.fingerprint = fingerprint(self.public)


def load_or_create(storage, rand):
    """(Identity, created) -- created is True on first boot only."""
    blob = storage.read(FILE)
    if blob is not None:
        return Identity(decode(blob)), False
    seed = rand(32)
    storage.write(FILE, encode(seed))
    # Read back what was stored: a flash that lies is caught at first boot, not later.
    if decode(storage.read(FILE)) != seed:
        raise IdentityError("identity store: read-back differs from what was written")
    return Identity(seed), True


def _base32(data):
    out = []
    bits = 0
    acc = 0
    for b in data:
        acc = (acc << 8) | b
        bits += 8
        while bits >= 5:
            bits -= 5
            out.append(_B32[(acc >> bits) & 31])
    if bits:
        out.append(_B32[(acc << (5 - bits)) & 31])
    return "".join(out)


def fingerprint(public):
    """16 base32 characters of SHA-256(public key), grouped by four: short enough for a label."""
    s = _base32(hashlib.sha256(public).digest()[:10])
    return "-".join((s[0:4], s[4:8], s[8:12], s[12:16]))


def spki_der(public):
    return _SPKI_PREFIX + public


def spki_pem(public):
    b64 = binascii.b2a_base64(spki_der(public)).strip()
    return b"-----BEGIN PUBLIC KEY-----\n" + b64 + b"\n-----END PUBLIC KEY-----\n"


def public_from_pem(pem):
    """Raw 32-byte Ed25519 key from a PEM SubjectPublicKeyInfo (what `pki --pub` writes)."""
    body = b"".join(l.strip() for l in pem.split(b"\n") if l.strip() and not l.startswith(b"-----"))
    try:
        der = binascii.a2b_base64(body)
    except ValueError:
        raise IdentityError("public key PEM: bad base64")
    if len(der) != 44 or der[:12] != _SPKI_PREFIX:
        raise IdentityError("public key PEM: not an Ed25519 SubjectPublicKeyInfo")
    return der[12:]
