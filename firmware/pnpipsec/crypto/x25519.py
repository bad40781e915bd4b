"""X25519 (RFC 7748) in plain Python for MicroPython and CPython.

x25519(k, u) -> 32 bytes; public(k); keypair(rand).

Timing side channels: this is a big-integer implementation. The ladder has a fixed
structure (255 steps, the same field operations in every step, the swap done by
choosing which pair of names to bind), but Python/MicroPython big-integer arithmetic
and the interpreter's branch on each scalar bit are not constant time. We accept
that: the keys are ephemeral IKE Diffie-Hellman keys used for one exchange (or a
bounded reuse time, RFC 7296 2.12), the attacker would need fine-grained timing of
a microcontroller over the network, and speed in pure Python matters more here.

Fast path: where the port has native emitters, fe25519.kernel() gives viper field
arithmetic (limbs in one preallocated array, conditional swaps by masks) and the
ladder runs there (fe25519.x25519_ladder); elsewhere the big-integer ladder below.
"""

from pnpipsec.crypto import fe25519

P = 2 ** 255 - 19
_A24 = 121665
_MASK255 = (1 << 255) - 1
# clamp: clear bits 0..2 and bit 255, set bit 254
_CLAMP_AND = _MASK255 - 7
_BIT254 = 1 << 254
_BASE = (9).to_bytes(32, "little")


class X25519Error(ValueError):
    """All-zero shared secret (the peer sent a low-order point)."""


def _ladder(k, x1):
    # Montgomery ladder, RFC 7748 section 5; k already clamped (bit 254 set,
    # bit 255 clear). Working on the two points (x2:z2) and (x3:z3).
    p = P
    a24 = _A24
    x2 = 1
    z2 = 0
    x3 = x1
    z3 = 1
    swap = 0
    t = 254
    while t >= 0:
        bit = (k >> t) & 1
        if swap ^ bit:
            x2, x3 = x3, x2
            z2, z3 = z3, z2
        swap = bit
        a = x2 + z2
        b = x2 - z2
        c = x3 + z3
        d = x3 - z3
        da = d * a % p
        cb = c * b % p
        aa = a * a % p
        bb = b * b % p
        x3 = da + cb
        x3 = x3 * x3 % p
        z3 = da - cb
        z3 = x1 * (z3 * z3 % p) % p
        x2 = aa * bb % p
        e = aa - bb
        z2 = e * (aa + a24 * e) % p
        t -= 1
    if swap:
        x2 = x3
        z2 = z3
    return x2 * pow(z2, p - 2, p) % p


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
