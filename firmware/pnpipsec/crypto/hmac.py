"""HMAC-SHA-256 (RFC 2104) and IKEv2 prf+ (RFC 7296 section 2.13, PRF_HMAC_SHA2_256).

hmac_sha256(key, msg) -> 32 bytes. On CPython the stdlib's hmac.digest (OpenSSL) is
used; elsewhere (MicroPython) hmac_sha256_pure, built on hashlib.sha256.
"""

import hashlib

_sha256 = hashlib.sha256
_BLOCK = 64
_IPAD = int.from_bytes(b"\x36" * _BLOCK, "big")
_OPAD = int.from_bytes(b"\x5c" * _BLOCK, "big")
MAX_PRF_PLUS = 255 * 32


def _pads(key):
    if len(key) > _BLOCK:
        key = _sha256(key).digest()
    k = int.from_bytes(bytes(key) + bytes(_BLOCK - len(key)), "big")
    return (k ^ _IPAD).to_bytes(_BLOCK, "big"), (k ^ _OPAD).to_bytes(_BLOCK, "big")


def hmac_sha256_pure(key, msg):
    """HMAC-SHA-256 on hashlib.sha256 alone (what MicroPython runs)."""
    ipad, opad = _pads(key)
    inner = _sha256(ipad)
    inner.update(msg)
    outer = _sha256(opad)
    outer.update(inner.digest())
    return outer.digest()


def _pick():
    try:
        import sys

        if sys.implementation.name != "cpython":
            return hmac_sha256_pure
        import hmac as _std  # the standard library's module (absolute import)

        digest = _std.digest
    except (ImportError, AttributeError):
        return hmac_sha256_pure

    def hmac_sha256_stdlib(key, msg):
        return digest(key, msg, "sha256")

    return hmac_sha256_stdlib


hmac_sha256 = _pick()


def prf_plus(key, seed, length):
    """prf+ (RFC 7296 2.13): T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n);
    returns the first length bytes of T1 | T2 | ... Raises ValueError when
    length > 255 * 32."""
    if length < 0 or length > MAX_PRF_PLUS:
        raise ValueError("prf+: length out of range")
    prf = hmac_sha256
    seed = bytes(seed)
    out = []
    got = 0
    t = b""
    n = 1
    while got < length:
        t = prf(key, t + seed + bytes((n,)))
        out.append(t)
        got += 32
        n += 1
    return b"".join(out)[:length]
