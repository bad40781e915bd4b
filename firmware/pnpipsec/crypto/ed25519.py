"""Ed25519 (RFC 8032, pure Ed25519) in plain Python for MicroPython and CPython.

public_key(seed32) -> 32 bytes; sign(seed32, msg) -> 64 bytes;
verify(pub32, msg, sig64) -> bool (never raises).

Points are kept in extended coordinates (X:Y:Z:T), x = X/Z, y = Y/Z, xy = T/Z, on
-x^2 + y^2 = 1 + d x^2 y^2 over GF(2^255 - 19). Inversion and square roots use pow().

Speed and memory: base-point multiplication uses a 4-tooth comb (one table of 15
precomputed points in affine "niels" form (y+x, y-x, 2dxy), about 4 KB of heap on a
32-bit MicroPython, built lazily on first use; 63 doublings and at most 64 mixed
additions per multiplication). Verification interleaves that comb with a signed
4-bit sliding window (wNAF) over the public key, sharing one chain of doublings.
The last (seed, secret scalar, prefix, public key) is cached so that repeated signing
with one identity key does one base-point multiplication per signature, not two.

Timing side channels: big-integer Python is not constant time and the comb lookups
depend on the secret scalar. Accepted for this project (signing happens once per IKE
SA with a long-term key on a device an attacker reaches only over the network); see
x25519.py for the same stance.

Verification is cofactorless and checks encode([S]B - [k]A) == R byte for byte (as
OpenSSL does); it rejects S >= L, a public key whose y is not canonical (y >= p) or
that is not on the curve, wrong lengths, and anything that raises.
"""

from pnpipsec.crypto.sha512 import sha512

P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
D2 = 2 * D % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
_MASK255 = (1 << 255) - 1
_CLAMP_AND = _MASK255 - 7
_BIT254 = 1 << 254

# base point
_BY = 4 * pow(5, P - 2, P) % P
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202

_COMB_TEETH = 4
_COMB_SPACING = 64  # 4 * 64 = 256 bits cover every scalar we use
_comb = None  # list of 16 entries (index 0 unused): (ypx, ymx, xy2d)
_cache = None  # (seed, a, prefix, public)


def _dbl(pt):
    # RFC 8032 5.1.4 doubling (a = -1), 4M + 4S; T of the input is not used
    p = P
    x1 = pt[0]
    y1 = pt[1]
    z1 = pt[2]
    a = x1 * x1 % p
    b = y1 * y1 % p
    c = 2 * z1 * z1 % p
    h = a + b
    e = x1 + y1
    e = h - e * e % p
    g = a - b
    f = c + g
    return (e * f % p, g * h % p, f * g % p, e * h % p)


def _add_niels(pt, q):
    # add an affine point given as (y+x, y-x, 2dxy); 7M
    p = P
    x1 = pt[0]
    y1 = pt[1]
    a = (y1 - x1) * q[1] % p
    b = (y1 + x1) * q[0] % p
    c = pt[3] * q[2] % p
    d = 2 * pt[2]
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % p, g * h % p, f * g % p, e * h % p)


def _add_cached(pt, q):
    # add a projective point given as (Y+X, Y-X, 2Z, 2dT); 8M
    p = P
    x1 = pt[0]
    y1 = pt[1]
    a = (y1 - x1) * q[1] % p
    b = (y1 + x1) * q[0] % p
    c = pt[3] * q[3] % p
    d = pt[2] * q[2] % p
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % p, g * h % p, f * g % p, e * h % p)


def _sub_cached(pt, q):
    # subtract: -(X,Y,Z,T) = (-X,Y,Z,-T), i.e. swap Y+X/Y-X and negate 2dT
    p = P
    x1 = pt[0]
    y1 = pt[1]
    a = (y1 - x1) * q[0] % p
    b = (y1 + x1) * q[1] % p
    c = -pt[3] * q[3] % p
    d = pt[2] * q[2] % p
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % p, g * h % p, f * g % p, e * h % p)


def _to_cached(pt):
    p = P
    return ((pt[1] + pt[0]) % p, (pt[1] - pt[0]) % p, 2 * pt[2] % p, pt[3] * D2 % p)


def _add(pt, q):
    return _add_cached(pt, _to_cached(q))


def _encode(pt):
    p = P
    zi = pow(pt[2], p - 2, p)
    x = pt[0] * zi % p
    y = pt[1] * zi % p
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _decode(s):
    # RFC 8032 5.1.3; returns an extended point or None
    if len(s) != 32:
        return None
    p = P
    n = int.from_bytes(s, "little")
    sign = n >> 255
    y = n & _MASK255
    if y >= p:
        return None
    yy = y * y % p
    u = (yy - 1) % p
    v = (D * yy + 1) % p
    v3 = v * v % p * v % p
    x = u * v3 % p * pow(u * v3 % p * v3 % p * v % p, (p - 5) // 8, p) % p
    vxx = v * x % p * x % p
    if vxx != u:
        if vxx == p - u:
            x = x * SQRT_M1 % p
        else:
            return None
    if x == 0 and sign:
        return None
    if (x & 1) != sign:
        x = p - x
    return (x, y, 1, x * y % p)


def _build_comb():
    # entry i (1..15) = sum over j of bit j of i times 2^(64 j) B, in niels form
    global _comb
    p = P
    base = [(_BX, _BY, 1, _BX * _BY % p)]
    for j in range(1, _COMB_TEETH):
        q = base[-1]
        for _ in range(_COMB_SPACING):
            q = _dbl(q)
        base.append(q)
    pts = [None] * (1 << _COMB_TEETH)
    for i in range(1, 1 << _COMB_TEETH):
        q = None
        for j in range(_COMB_TEETH):
            if (i >> j) & 1:
                q = base[j] if q is None else _add(q, base[j])
        pts[i] = q
    table = [None]
    for i in range(1, 1 << _COMB_TEETH):
        q = pts[i]
        zi = pow(q[2], p - 2, p)
        x = q[0] * zi % p
        y = q[1] * zi % p
        table.append(((y + x) % p, (y - x) % p, x * y % p * D2 % p))
    _comb = table


def _comb_index(n, i):
    return ((n >> i) & 1) | (((n >> (i + 64)) & 1) << 1) | (((n >> (i + 128)) & 1) << 2) | (((n >> (i + 192)) & 1) << 3)


def _base_mul(n):
    # [n]B for 0 <= n < 2^256
    if _comb is None:
        _build_comb()
    comb = _comb
    q = (0, 1, 1, 0)
    i = _COMB_SPACING - 1
    while i >= 0:
        q = _dbl(q)
        idx = _comb_index(n, i)
        if idx:
            q = _add_niels(q, comb[idx])
        i -= 1
    return q


def _wnaf(n):
    # signed digits (LSB first) of width 4: each nonzero digit odd in -7..7
    out = []
    while n:
        if n & 1:
            dgt = n & 15
            if dgt > 8:
                dgt -= 16
            n -= dgt
        else:
            dgt = 0
        out.append(dgt)
        n >>= 1
    return out


def _expand(seed):
    global _cache
    seed = bytes(seed)
    c = _cache
    if c is not None and c[0] == seed:
        return c
    if len(seed) != 32:
        raise ValueError("ed25519: seed must be 32 bytes")
    h = sha512(seed)
    a = (int.from_bytes(h[:32], "little") & _CLAMP_AND) | _BIT254
    pub = _encode(_base_mul(a % L))
    c = (seed, a, h[32:], pub)
    _cache = c
    return c


def public_key(seed):
    """Public key (32 bytes) for a 32-byte secret seed."""
    return _expand(seed)[3]


def sign(seed, msg):
    """Pure Ed25519 signature (64 bytes) of msg under the 32-byte seed."""
    c = _expand(seed)
    msg = bytes(msg)
    a = c[1]
    pub = c[3]
    r = int.from_bytes(sha512(c[2] + msg), "little") % L
    rb = _encode(_base_mul(r))
    k = int.from_bytes(sha512(rb + pub + msg), "little") % L
    s = (r + k * a) % L
    return rb + s.to_bytes(32, "little")


def verify(pub, msg, sig):
    """True when sig is a valid signature of msg under pub; False otherwise (never raises)."""
    try:
        return _verify(pub, msg, sig)
    except Exception:
        return False


def _verify(pub, msg, sig):
    if len(pub) != 32 or len(sig) != 64:
        return False
    s = int.from_bytes(sig[32:], "little")
    if s >= L:
        return False
    a = _decode(pub)
    if a is None:
        return False
    rb = bytes(sig[:32])
    k = int.from_bytes(sha512(rb + bytes(pub) + bytes(msg)), "little") % L
    # [s]B - [k]A: one chain of doublings; the comb adds for s at i < 64
    if _comb is None:
        _build_comb()
    comb = _comb
    # odd multiples A, 3A, 5A, 7A in cached form
    a2 = _dbl(a)
    ca = _to_cached(a)
    odd = [ca]
    cur = a
    for _ in range(3):
        cur = _add(cur, a2)
        odd.append(_to_cached(cur))
    digits = _wnaf(k)
    q = (0, 1, 1, 0)
    i = len(digits) - 1
    if i < _COMB_SPACING - 1:
        i = _COMB_SPACING - 1
    nd = len(digits)
    while i >= 0:
        q = _dbl(q)
        if i < nd:
            dg = digits[i]
            if dg > 0:
                q = _sub_cached(q, odd[dg >> 1])
            elif dg < 0:
                q = _add_cached(q, odd[(-dg) >> 1])
        if i < _COMB_SPACING:
            idx = _comb_index(s, i)
            if idx:
                q = _add_niels(q, comb[idx])
        i -= 1
    return _encode(q) == rb
