"""The node's Ed25519 identity: made on first start, stored atomically, never replaced.

Storage is the board's: an object with read(name) -> bytes or None and an atomic
write(name, data). A store that exists but does not parse is an error; we never
generate a new key over it, because that would silently change who this device is.
"""

import binascii
import hashlib

FILE = "identity"
_MAGIC = b"pnpipsec identity v1"
_SPKI_PREFIX = b"\x30\x2a\x30\x05\x06\x03\x2b\x65\x70\x03\x21\x00"
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


class IdentityError(Exception):
    """The identity store cannot be used, or a public key does not parse.

    .problem: what is wrong (one line); .path: the stored file it is about (the
    storage's path(name) when it has one, else the name), or None when the error is not
    about the store (public_from_pem). str(e) is "<path>: <problem>" or the problem."""

    def __init__(self, problem, path=None):
        super().__init__(problem if path is None else "%s: %s" % (path, problem))
        self.problem = problem
        self.path = path


# The file: MAGIC "\n" "seed " <64 hex> "\n" "check " <8 hex> "\n" (106 bytes).
_SEED_AT = len(_MAGIC) + 6
_CHECK_AT = _SEED_AT + 64 + 7
_SIZE = _CHECK_AT + 8 + 1
_LAYOUT = _MAGIC + b"\nseed " + b"0" * 64 + b"\ncheck " + b"0" * 8 + b"\n"


def _check(seed):
    return binascii.hexlify(hashlib.sha256(b"pnpipsec-id" + seed).digest()[:4])


def encode(seed):
    return b"\n".join((_MAGIC, b"seed " + binascii.hexlify(seed), b"check " + _check(seed), b""))


def _is_hex(c):
    return 48 <= c <= 57 or 97 <= c <= 102


def _misfit(blob):
    """Index of the first byte of blob that does not fit the layout, or -1."""
    for i in range(min(len(blob), _SIZE)):
        c = blob[i]
        if _SEED_AT <= i < _SEED_AT + 64 or _CHECK_AT <= i < _CHECK_AT + 8:
            if not _is_hex(c):
                return i
        elif c != _LAYOUT[i]:
            return i
    return -1


def decode(blob):
    """Stored bytes -> the 32-byte seed; IdentityError naming the problem: empty,
    truncated, unknown format, unsupported version, corrupt (which part), checksum."""
    n = len(blob)
    if n == 0:
        raise IdentityError("empty (0 bytes)")
    at = _misfit(blob)
    if at < 0:
        if n < _SIZE - 1:     # (a missing final newline alone loses nothing)
            raise IdentityError("truncated (%d of %d bytes)" % (n, _SIZE))
        if blob[_SIZE:].strip():
            raise IdentityError("corrupt: %d bytes of trailing data after the check line" % (n - _SIZE))
    elif at <= len(_MAGIC):
        head = blob[:len(_MAGIC)]
        if at >= len(_MAGIC) - 2 and head[:len(_MAGIC) - 2] == _MAGIC[:-2]:
            raise IdentityError("unsupported version (first line %r; this build reads %r)"
                                % (blob.split(b"\n")[0][:40], _MAGIC))
        raise IdentityError("unknown format: not a pnpipsec identity (starts with %r)" % blob[:20])
    elif _SEED_AT <= at < _SEED_AT + 64:
        raise IdentityError("corrupt: seed is not hex (byte %d is %r)" % (at, blob[at:at + 1]))
    elif _CHECK_AT <= at < _CHECK_AT + 8:
        raise IdentityError("corrupt: check value is not hex (byte %d is %r)" % (at, blob[at:at + 1]))
    else:
        raise IdentityError("corrupt: byte %d is %r where the layout has %r"
                            % (at, blob[at:at + 1], _LAYOUT[at:at + 1]))
    seed = binascii.unhexlify(blob[_SEED_AT:_SEED_AT + 64])
    if blob[_CHECK_AT:_CHECK_AT + 8] != _check(seed):
        raise IdentityError("corrupt: checksum does not match the seed")
    return seed


class Identity:
    def __init__(self, seed):
        # imported here, not at module level: tools that only read fingerprints or
        # PEM files never load the Ed25519 code
        from pnpipsec.crypto import ed25519
        self.seed = seed
        self.public = ed25519.public_key(seed)
        self.fingerprint = fingerprint(self.public)


def _where(storage, name):
    """The storage's own name for a stored file (a path on boards with files)."""
    try:
        return storage.path(name)
    except Exception:   # a storage without path(): RAM, tests
        return name


def load_or_create(storage, rand):
    """(Identity, created) -- created is True on first boot only.

    A store that is there but unusable raises IdentityError with .path set; it is never
    replaced (that would silently change who this device is). Errors of the storage
    itself (e.g. the host's StoreError) pass through."""
    where = _where(storage, FILE)
    blob = storage.read(FILE)
    if blob is not None:
        try:
            return Identity(decode(blob)), False
        except IdentityError as e:
            raise IdentityError(e.problem, where)
    seed = rand(32)
    storage.write(FILE, encode(seed))
    # Read back what was stored: a flash that lies is caught at first boot, not later.
    back = storage.read(FILE)
    if back is None or _load_back(back) != seed:
        raise IdentityError("read-back differs from what was written", where)
    return Identity(seed), True


def _load_back(blob):
    try:
        return decode(blob)
    except IdentityError:
        return None


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
