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

Fast path: where fe25519.kernel() exists (ports with native emitters), the point
arithmetic of the comb, the verification loop and the final encoding run in viper on
limbs in one workspace (_Fast below, built on first use; the comb table is copied into
it as limbs); decoding, the odd multiples of A and the table itself stay big-integer.

Verification is cofactorless and checks encode([S]B - [k]A) == R byte for byte (as
OpenSSL does); it rejects S >= L, a public key whose y is not canonical (y >= p) or
that is not on the curve, wrong lengths, and anything that raises.
"""

from pnpipsec.crypto import fe25519
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
    w = u * v3 % p * v3 % p * v % p
    f = _fast()
    if f is not None:
        w = f.pow22523(w)
    else:
        w = pow(w, (p - 5) // 8, p)
    x = u * v3 % p * w % p
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
    # one inversion for all 15 Z (Montgomery's trick): pre[i] = Z_1 ... Z_i
    pre = [1] * (1 << _COMB_TEETH)
    for i in range(1, 1 << _COMB_TEETH):
        pre[i] = pre[i - 1] * pts[i][2] % p
    inv = [0] * (1 << _COMB_TEETH)
    acc = pow(pre[-1], p - 2, p)
    for i in range((1 << _COMB_TEETH) - 1, 0, -1):
        inv[i] = acc * pre[i - 1] % p
        acc = acc * pts[i][2] % p
    table = [None]
    for i in range(1, 1 << _COMB_TEETH):
        q = pts[i]
        zi = inv[i]
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


def _base_mul_encoded(n):
    f = _fast()
    if f is not None:
        return f.base_mul(n)
    return _encode(_base_mul(n))


# ---------------------------------------------------------------- fast path (viper)
_F = fe25519
_QX = 1
_QY = 2
_QZ = 3
_QT = 4
_TA = 5
_TB = 6
_TC = 7
_TD = 8
_TE = 9
_TF = 10
_TG = 11
_TH = 12
_D2S = 13
_COMB0 = 16  # 15 entries of 3 slots (y+x, y-x, 2dxy)
_ODD0 = 61  # 4 entries of 4 slots (Y+X, Y-X, 2Z, 2dT)
_WS_SLOTS = 77
_fast_state = None


def _p(*ops):
    return _F.program(ops)


def _dbl_prog():
    return _p(
        (_F.SQR, _TA, _QX, 0),
        (_F.SQR, _TB, _QY, 0),
        (_F.SQR, _TC, _QZ, 0),
        (_F.ADD, _TC, _TC, _TC),
        (_F.ADD, _TH, _TA, _TB),
        (_F.ADD, _TE, _QX, _QY),
        (_F.SQR, _TE, _TE, 0),
        (_F.SUB, _TE, _TH, _TE),
        (_F.SUB, _TG, _TA, _TB),
        (_F.ADD, _TF, _TC, _TG),
        (_F.MUL, _QX, _TE, _TF),
        (_F.MUL, _QY, _TG, _TH),
        (_F.MUL, _QZ, _TF, _TG),
        (_F.MUL, _QT, _TE, _TH),
    )


def _finish_prog(neg):
    # E = B - A, F = D - C, G = D + C, H = B + A (F and G exchanged when C is negated)
    f = _F.ADD if neg else _F.SUB
    g = _F.SUB if neg else _F.ADD
    return _p(
        (_F.SUB, _TE, _TB, _TA),
        (f, _TF, _TD, _TC),
        (g, _TG, _TD, _TC),
        (_F.ADD, _TH, _TB, _TA),
        (_F.MUL, _QX, _TE, _TF),
        (_F.MUL, _QY, _TG, _TH),
        (_F.MUL, _QZ, _TF, _TG),
        (_F.MUL, _QT, _TE, _TH),
    )


def _addn_prog(q):
    # + affine niels point in slots q, q+1, q+2
    return _p(
        (_F.SUB, _TA, _QY, _QX),
        (_F.MUL, _TA, _TA, q + 1),
        (_F.ADD, _TB, _QY, _QX),
        (_F.MUL, _TB, _TB, q),
        (_F.MUL, _TC, _QT, q + 2),
        (_F.ADD, _TD, _QZ, _QZ),
    ) + _finish_prog(False)


def _addc_prog(q, neg):
    # +/- cached point in slots q..q+3
    a = q if neg else q + 1
    b = q + 1 if neg else q
    return _p(
        (_F.SUB, _TA, _QY, _QX),
        (_F.MUL, _TA, _TA, a),
        (_F.ADD, _TB, _QY, _QX),
        (_F.MUL, _TB, _TB, b),
        (_F.MUL, _TC, _QT, q + 3),
        (_F.MUL, _TD, _QZ, q + 2),
    ) + _finish_prog(neg)


class _Fast:
    """Workspace, programs and the comb table as limbs, for one kernel."""

    def __init__(self, run):
        global _comb
        if _comb is None:
            _build_comb()
        self.run = run
        ws = _F.workspace(_WS_SLOTS)
        self.ws = ws
        _F.put(ws, _D2S, D2)
        for i in range(1, 16):
            e = _comb[i]
            for j in range(3):
                _F.put(ws, _COMB0 + 3 * (i - 1) + j, e[j])
        # the workspace holds the comb now; the big-integer copy (~4 KB on a 32-bit
        # board) is only for _base_mul without a kernel, which rebuilds it if needed
        _comb = None
        dbl = _dbl_prog()
        self.dbl = dbl
        self.step = [dbl] + [dbl + _addn_prog(_COMB0 + 3 * (i - 1)) for i in range(1, 16)]
        self.addn = [b""] + [_addn_prog(_COMB0 + 3 * (i - 1)) for i in range(1, 16)]
        self.add_odd = [_addc_prog(_ODD0 + 4 * j, False) for j in range(4)]
        self.sub_odd = [_addc_prog(_ODD0 + 4 * j, True) for j in range(4)]
        self.enc = _F.inv_program(_TA, _QZ, _TB, _TC, _TD, _TE) + _p(
            (_F.MUL, _TF, _QX, _TA), (_F.MUL, _TG, _QY, _TA))
        self.p58 = _F.pow22523_program(_TA, _TF, _TB, _TC, _TD, _TE)

    def pow22523(self, w):
        ws = self.ws
        _F.put(ws, _TF, w)
        self.run(ws, ws, ws, ws, self.p58, len(self.p58))
        return _F.get(ws, _TA)

    def _start(self):
        ws = self.ws
        _F.put(ws, _QX, 0)
        _F.put(ws, _QY, 1)
        _F.put(ws, _QZ, 1)
        _F.put(ws, _QT, 0)

    def _encode(self):
        ws = self.ws
        self.run(ws, ws, ws, ws, self.enc, len(self.enc))
        x = _F.get(ws, _TF)
        y = _F.get(ws, _TG)
        return (y | ((x & 1) << 255)).to_bytes(32, "little")

    def base_mul(self, n):
        """encode([n]B) for 0 <= n < 2^256"""
        ws = self.ws
        run = self.run
        step = self.step
        self._start()
        i = _COMB_SPACING - 1
        while i >= 0:
            c = step[_comb_index(n, i)]
            run(ws, ws, ws, ws, c, len(c))
            i -= 1
        return self._encode()

    def verify_point(self, s, odd, digits):
        """encode([s]B - [k]A), odd = cached A, 3A, 5A, 7A; digits = wNAF of k"""
        ws = self.ws
        run = self.run
        for j in range(4):
            for m in range(4):
                _F.put(ws, _ODD0 + 4 * j + m, odd[j][m])
        self._start()
        dbl = self.dbl
        nd = len(digits)
        i = nd - 1
        if i < _COMB_SPACING - 1:
            i = _COMB_SPACING - 1
        while i >= 0:
            run(ws, ws, ws, ws, dbl, len(dbl))
            if i < nd:
                dg = digits[i] - 8
                if dg > 0:
                    c = self.sub_odd[dg >> 1]
                    run(ws, ws, ws, ws, c, len(c))
                elif dg < 0:
                    c = self.add_odd[(-dg) >> 1]
                    run(ws, ws, ws, ws, c, len(c))
            if i < _COMB_SPACING:
                idx = _comb_index(s, i)
                if idx:
                    c = self.addn[idx]
                    run(ws, ws, ws, ws, c, len(c))
            i -= 1
        return self._encode()


def _fast():
    """The _Fast state, or None (no native emitters, or fe25519 disabled)."""
    global _fast_state
    run = fe25519.kernel()
    if run is None:
        return None
    f = _fast_state
    if f is None or f.run is not run:
        f = _Fast(run)
        _fast_state = f
    return f


def _wnaf(n):
    # signed digits (LSB first) of width 4, each nonzero digit odd in -7..7, stored as
    # digit + 8 in a bytearray: 256 bytes in one allocation, where a growing list of
    # ints needs a kilobyte block that a fragmented board heap may not have
    out = bytearray(257)     # n < 2^256 here (k mod L; no int.bit_length on MicroPython)
    i = 0
    while n:
        if n & 1:
            dgt = n & 15
            if dgt > 8:
                dgt -= 16
            n -= dgt
        else:
            dgt = 0
        out[i] = dgt + 8
        i += 1
        n >>= 1
    return memoryview(out)[:i]


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
    pub = _base_mul_encoded(a % L)
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
    rb = _base_mul_encoded(r)
    k = int.from_bytes(sha512(rb + pub + msg), "little") % L
    s = (r + k * a) % L
    return rb + s.to_bytes(32, "little")


def verify(pub, msg, sig):
    """True when sig is a valid signature of msg under pub; False otherwise. Bad input
    never raises; running out of memory does (MemoryError), so that a board short of
    heap is not mistaken for a forged signature."""
    try:
        return _verify(pub, msg, sig)
    except MemoryError:
        raise
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
    # odd multiples A, 3A, 5A, 7A in cached form
    a2 = _dbl(a)
    ca = _to_cached(a)
    odd = [ca]
    cur = a
    for _ in range(3):
        cur = _add(cur, a2)
        odd.append(_to_cached(cur))
    digits = _wnaf(k)
    f = _fast()
    if f is not None:
        return f.verify_point(s, odd, digits) == rb
    if _comb is None:
        _build_comb()
    comb = _comb
    q = (0, 1, 1, 0)
    i = len(digits) - 1
    if i < _COMB_SPACING - 1:
        i = _COMB_SPACING - 1
    nd = len(digits)
    while i >= 0:
        q = _dbl(q)
        if i < nd:
            dg = digits[i] - 8
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
