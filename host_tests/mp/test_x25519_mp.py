# pnpipsec's big-integer X25519 ladder (x25519._ladder: folded partial reductions,
# blinded Euclidean inversion) against RFC 7748 section 5 transcribed literally.
# Runs under pytest (CPython) and inside MicroPython (host_tests/mp runner): the fold
# relies on Python's floor semantics of & and >> on negative big integers, which
# MicroPython's mpz must share.

import hashlib

from pnpipsec.crypto import x25519

P = 2 ** 255 - 19
M = (1 << 255) - 1


def _ints(label, n):
    return [int.from_bytes(hashlib.sha256(("x25519 mp %s %d" % (label, i)).encode()).digest(), "little") for i in range(n)]


def _rfc(k, x_1):
    # RFC 7748 section 5 (cswap by mask, everything mod p, z^(p-2)); k, x_1 integers
    p = P
    x_2, z_2, x_3, z_3, swap = 1, 0, x_1, 1, 0
    for t in range(254, -1, -1):
        k_t = (k >> t) & 1
        swap ^= k_t
        dummy = (0 - swap) & (x_2 ^ x_3)
        x_2, x_3 = x_2 ^ dummy, x_3 ^ dummy
        dummy = (0 - swap) & (z_2 ^ z_3)
        z_2, z_3 = z_2 ^ dummy, z_3 ^ dummy
        swap = k_t
        A = (x_2 + z_2) % p
        AA = A * A % p
        B = (x_2 - z_2) % p
        BB = B * B % p
        E = (AA - BB) % p
        C = (x_3 + z_3) % p
        D = (x_3 - z_3) % p
        DA = D * A % p
        CB = C * B % p
        x_3 = (DA + CB) * (DA + CB) % p
        z_3 = x_1 * ((DA - CB) * (DA - CB) % p) % p
        x_2 = AA * BB % p
        z_2 = E * ((AA + 121665 * E) % p) % p
    if swap:
        x_2, z_2 = x_3, z_3
    return x_2 * pow(z_2, p - 2, p) % p


def test_fold_is_exact_for_negative_and_large_values():
    for x in _ints("fold", 4):
        for v in (x * x, -(x * x), x << 250, -(x << 250), x - (x << 1), -1, 0):
            f = (v & M) + (v >> 255) * 19
            assert (v >> 255 << 255) + (v & M) == v
            assert f % P == v % P
            assert f < 2 ** 262 and f > -(2 ** 262) or abs(v) >= 2 ** 513


def test_ladder_equals_rfc_literal():
    ks = _ints("k", 2)
    us = _ints("u", 2)
    # low-order points give 0 (z = 0: the blinded inversion must return 0, not fail)
    cases = [(ks[i], us[i] % P) for i in range(2)] + [(ks[0], 0), (ks[1], P - 1)]
    for k, u in cases:
        k = ((k & M) & ~7) | (1 << 254)
        got = x25519._ladder(k, u)
        assert 0 <= got < P
        assert got == _rfc(k, u), (k, u)


def test_ladder_bit_patterns():
    # the swaps follow k ^ (k >> 1): alternating bits swap every step, runs never
    u = _ints("pattern u", 1)[0] % P
    for k in (((1 << 255) - 1) // 3, 1 << 254):
        k = ((k & M) & ~7) | (1 << 254)
        assert x25519._ladder(k, u) == _rfc(k, u), k
