"""X25519 (RFC 7748) in plain Python for MicroPython and CPython.

x25519(k, u) -> 32 bytes; public(k); keypair(rand).

Timing side channels: this is a big-integer implementation and it is not constant
time. The ladder has a fixed structure (255 steps for a clamped scalar, the same field
operations in every step, the swap done by choosing which pair of names to bind, i.e.
an interpreter branch on each bit of k ^ (k >> 1)), but Python/MicroPython big-integer
arithmetic takes time that depends on the values (their lengths and signs, how far a
partial reduction left them above p). The final inversion is the extended Euclidean
algorithm, whose number of steps depends on its input; that input is z * r, where r is
a blinding factor derived from k and u by SHA-256, so the inversion's time depends on
a value the attacker cannot compute rather than on the ladder's projective z (whose
leak would otherwise carry information about k). We accept the remaining leaks: the
keys are ephemeral IKE Diffie-Hellman keys used for one exchange (or a bounded reuse
time, RFC 7296 2.12), the attacker would need fine-grained timing of a
microcontroller over the network, and speed in pure Python matters more here.

Fast path: where the port has native emitters, fe25519.kernel() gives viper field
arithmetic (limbs in one preallocated array, conditional swaps by masks) and the
ladder runs there (fe25519.x25519_ladder); elsewhere the big-integer ladder below.
"""

import hashlib

from pnpipsec.crypto import fe25519

P = 2 ** 255 - 19
_A24 = 121665
_MASK255 = (1 << 255) - 1
# clamp: clear bits 0..2 and bit 255, set bit 254
_CLAMP_AND = _MASK255 - 7
_BIT254 = 1 << 254
_BASE = (9).to_bytes(32, "little")
_MASK254 = (1 << 254) - 1


class X25519Error(ValueError):
    """All-zero shared secret (the peer sent a low-order point)."""


def _ladder(k, x1):
    # Montgomery ladder, RFC 7748 section 5 (k clamped, 0 <= x1 < p), on the two
    # points (x2:z2) and (x3:z3); returns x2 / z2 mod p, fully reduced.
    #
    # Cost model (MicroPython's mpz, where every operation allocates and `%` is a
    # long division): a product that only feeds another product is folded once,
    # x = (x & (2^255 - 1)) + 19 * (x >> 255) (2^255 = 19 mod p), four cheap linear
    # operations instead of a division; that leaves it below about 2^261 (the inputs
    # are below 2p in magnitude, their products below 2^511). The four state values
    # are reduced by `% p` at the end of every step, so the operands never grow and
    # the result does not depend on these bounds at all (folding and `%` both keep the
    # value mod p; negative intermediates are fine, Python's & and >> are floor-exact).
    # The big integer is the left operand of `* 19` and `* a24` (faster dispatch).
    p = P
    m = _MASK255
    a24 = _A24
    x2 = 1
    z2 = 0
    x3 = x1
    z3 = 1
    # The pairs must be swapped before step t when bit t of k differs from bit t + 1:
    # the bits of k ^ (k >> 1), most significant first, as ASCII digits (small ints).
    for s in bin(k ^ (k >> 1)).encode()[2:]:
        if s == 49:  # "1"
            x2, x3 = x3, x2
            z2, z3 = z3, z2
        a = x2 + z2
        b = x2 - z2
        c = x3 + z3
        d = x3 - z3
        da = d * a
        da = (da & m) + (da >> 255) * 19
        cb = c * b
        cb = (cb & m) + (cb >> 255) * 19
        aa = a * a
        aa = (aa & m) + (aa >> 255) * 19
        bb = b * b
        bb = (bb & m) + (bb >> 255) * 19
        x3 = da + cb
        x3 = x3 * x3 % p
        z3 = da - cb
        z3 = z3 * z3
        z3 = ((z3 & m) + (z3 >> 255) * 19) * x1 % p
        x2 = aa * bb % p
        e = aa - bb
        z2 = e * (aa + e * a24) % p
    if k & 1:
        x2 = x3
        z2 = z3
    # 1 / z2 by the extended Euclidean algorithm on w = z2 * r (r secret, 0 < r < p):
    # about 150 division steps instead of the ~500 modular products of z2^(p-2).
    # x2 / z2 = x2 * r / w. z2 = 0 (low-order input) gives w = 0 and the result 0.
    h = hashlib.sha256(b"pnpipsec x25519 blind" + k.to_bytes(32, "little") + x1.to_bytes(32, "little"))
    r = (int.from_bytes(h.digest(), "little") & _MASK254) | 1
    a = z2 * r % p
    b = p
    s0 = 1
    s1 = 0
    while b:
        q, c = divmod(a, b)
        a = b
        b = c
        s0, s1 = s1, s0 - q * s1
    # a == 1 and s0 * w = 1 mod p (or w = 0 and s0 = 0)
    return x2 * r % p * s0 % p


def x25519(k, u):
    """RFC 7748 X25519: scalar k (32 bytes, clamped here), u-coordinate u (32 bytes,
    top bit masked). Raises X25519Error when the result is all zero."""
    if len(k) != 32 or len(u) != 32:
        raise ValueError("x25519: k and u must be 32 bytes")
    n = (int.from_bytes(k, "little") & _CLAMP_AND) | _BIT254
    x1 = (int.from_bytes(u, "little") & _MASK255) % P
    run = fe25519.kernel()
    if run is not None:
        r = fe25519.x25519_ladder(run, n, x1)
    else:
        r = _ladder(n, x1)
    if r == 0:
        raise X25519Error("x25519: all-zero shared secret")
    return r.to_bytes(32, "little")


def public(k):
    """The public key (u = 9 base point) for private key k."""
    return x25519(k, _BASE)


def keypair(rand):
    """(private, public) using rand(n) -> bytes."""
    k = bytes(rand(32))
    if len(k) != 32:
        raise ValueError("x25519: rand returned wrong length")
    return k, public(k)
