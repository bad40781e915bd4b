# AUTH method objects (pnpipsec.ike.auth) under MicroPython (and CPython): each makes an
# AUTH its check accepts, and refuses one made with the wrong key, PSK or octets.
# Plain asserts; imports only pnpipsec and modules MicroPython has.

import hashlib

from pnpipsec import AUTHENTICATED, ENCRYPTED
from pnpipsec.ike import auth as A


def _b(tag, n=32):
    return (hashlib.sha256(tag).digest() * 2)[:n]


OCTETS = _b(b"octets", 64)
SK_P = _b(b"sk_p")


def test_objects():
    assert [m.name for m in (A.NULL, A.PSK, A.ED25519)] == ["null", "psk", "pubkey"]
    assert [m.num for m in (A.NULL, A.PSK, A.ED25519)] == [13, 2, 14]
    for m in (A.NULL, A.PSK, A.ED25519):
        assert A.of(m.name) is m and A.BY_NUM[m.num] is m
    assert A.of("rsa") is None and A.BY_NUM.get(1) is None
    assert A.NULL.level == ENCRYPTED and not A.NULL.trusted
    assert A.PSK.level == AUTHENTICATED and A.PSK.trusted and not A.PSK.signs
    assert A.ED25519.level == AUTHENTICATED and A.ED25519.trusted and A.ED25519.signs


def test_null_round_trip():
    m = A.NULL
    d = m.make(OCTETS, SK_P)
    assert len(d) == 32 and m.check(d, OCTETS, SK_P)
    assert not m.check(d, OCTETS, _b(b"other sk_p"))
    assert not m.check(d, OCTETS + b"x", SK_P)
    assert not m.check(d[:-1], OCTETS, SK_P)
    assert A.make(m, OCTETS, SK_P) == (13, d) and A.make("null", OCTETS, SK_P) == (13, d)


def test_psk_round_trip_and_wrong_psk():
    m = A.PSK
    d = m.make(OCTETS, SK_P, b"right")
    assert m.check(d, OCTETS, SK_P, b"right")
    assert m.check(d, OCTETS, _b(b"sk_p does not matter"), b"right")
    assert not m.check(d, OCTETS, SK_P, b"wrong")
    assert not m.check(d, OCTETS, SK_P, None)
    assert not A.NULL.check(d, OCTETS, SK_P)      # a PSK AUTH is no NULL AUTH
    assert A.check(2, d, OCTETS, SK_P, psk=b"right") and not A.check(13, d, OCTETS, SK_P)


def test_ed25519_round_trip_and_wrong_key():
    from pnpipsec.crypto import ed25519
    seed, other = _b(b"seed a"), _b(b"seed b")
    pub, other_pub = ed25519.public_key(seed), ed25519.public_key(other)
    m = A.ED25519
    d = m.make(OCTETS, None, None, seed)
    assert m.check(d, OCTETS, None, None, pub)
    assert not m.check(d, OCTETS, None, None, other_pub)
    assert not m.check(d, OCTETS, None, None, None)
    assert not m.check(d, OCTETS + b"x", None, None, pub)
    assert not m.check(d[:-1] + bytes((d[-1] ^ 1,)), OCTETS, None, None, pub)
    assert not m.check(m.make(OCTETS, None, None, other), OCTETS, None, None, pub)
    assert not m.check(b"", OCTETS, None, None, pub)
