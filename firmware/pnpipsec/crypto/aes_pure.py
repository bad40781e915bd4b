"""PureAES: FIPS-197 AES in Python, for ports without cryptolib (the WebAssembly port,
the qemu board, CPython tests). Byte-oriented with S-box and xtime tables so that all
values stay small ints (no heap allocation per operation on MicroPython); it keeps the
expanded keys of the last few keys. A module of its own, so that boards with cryptolib
never load it (pnpipsec.crypto.aes.default_provider imports it only when needed)."""

from pnpipsec.crypto.aes import _check, _check_iv, _ZERO16

_SBOX = None
_INV_SBOX = None
_X2 = None
_X4 = None


def _xtime(a):
    a <<= 1
    if a & 0x100:
        a ^= 0x11B
    return a


def _make_tables():
    global _SBOX, _INV_SBOX, _X2, _X4
    exp = bytearray(256)
    log = bytearray(256)
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x ^= _xtime(x)  # times 3, a generator of GF(2^8)*
    sbox = bytearray(256)
    inv = bytearray(256)
    for a in range(256):
        b = exp[(255 - log[a]) % 255] if a else 0
        s = b
        for _ in range(4):
            b = ((b << 1) | (b >> 7)) & 0xFF
            s ^= b
        s ^= 0x63
        sbox[a] = s
        inv[s] = a
    x2 = bytearray(256)
    x4 = bytearray(256)
    for a in range(256):
        x2[a] = _xtime(a)
        x4[a] = _xtime(_xtime(a))
    _SBOX = bytes(sbox)
    _INV_SBOX = bytes(inv)
    _X2 = bytes(x2)
    _X4 = bytes(x4)


def _expand_key(key):
    # FIPS-197 5.2: a list of Nr + 1 round keys, each a tuple of 16 ints
    sb = _SBOX
    nk = len(key) // 4
    nr = nk + 6
    w = [[key[4 * i], key[4 * i + 1], key[4 * i + 2], key[4 * i + 3]] for i in range(nk)]
    rcon = 1
    for i in range(nk, 4 * (nr + 1)):
        t = w[i - 1]
        if i % nk == 0:
            t = [sb[t[1]] ^ rcon, sb[t[2]], sb[t[3]], sb[t[0]]]
            rcon = _xtime(rcon)
        elif nk > 6 and i % nk == 4:
            t = [sb[t[0]], sb[t[1]], sb[t[2]], sb[t[3]]]
        p = w[i - nk]
        w.append([p[0] ^ t[0], p[1] ^ t[1], p[2] ^ t[2], p[3] ^ t[3]])
    return [tuple(w[4 * r] + w[4 * r + 1] + w[4 * r + 2] + w[4 * r + 3]) for r in range(nr + 1)]


def _enc_block(rks, b, x):
    # b: 16 input ints, x: 16 ints xored into the input (CBC); returns 16 ints
    sb = _SBOX
    x2 = _X2
    k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12, k13, k14, k15 = rks[0]
    s0 = b[0] ^ x[0] ^ k0
    s1 = b[1] ^ x[1] ^ k1
    s2 = b[2] ^ x[2] ^ k2
    s3 = b[3] ^ x[3] ^ k3
    s4 = b[4] ^ x[4] ^ k4
    s5 = b[5] ^ x[5] ^ k5
    s6 = b[6] ^ x[6] ^ k6
    s7 = b[7] ^ x[7] ^ k7
    s8 = b[8] ^ x[8] ^ k8
    s9 = b[9] ^ x[9] ^ k9
    s10 = b[10] ^ x[10] ^ k10
    s11 = b[11] ^ x[11] ^ k11
    s12 = b[12] ^ x[12] ^ k12
    s13 = b[13] ^ x[13] ^ k13
    s14 = b[14] ^ x[14] ^ k14
    s15 = b[15] ^ x[15] ^ k15
    nr = len(rks) - 1
    r = 1
    while r < nr:
        k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12, k13, k14, k15 = rks[r]
        t0 = sb[s0]
        t1 = sb[s5]
        t2 = sb[s10]
        t3 = sb[s15]
        u = t0 ^ t1 ^ t2 ^ t3
        n0 = t0 ^ u ^ x2[t0 ^ t1] ^ k0
        n1 = t1 ^ u ^ x2[t1 ^ t2] ^ k1
        n2 = t2 ^ u ^ x2[t2 ^ t3] ^ k2
        n3 = t3 ^ u ^ x2[t3 ^ t0] ^ k3
        t0 = sb[s4]
        t1 = sb[s9]
        t2 = sb[s14]
        t3 = sb[s3]
        u = t0 ^ t1 ^ t2 ^ t3
        n4 = t0 ^ u ^ x2[t0 ^ t1] ^ k4
        n5 = t1 ^ u ^ x2[t1 ^ t2] ^ k5
        n6 = t2 ^ u ^ x2[t2 ^ t3] ^ k6
        n7 = t3 ^ u ^ x2[t3 ^ t0] ^ k7
        t0 = sb[s8]
        t1 = sb[s13]
        t2 = sb[s2]
        t3 = sb[s7]
        u = t0 ^ t1 ^ t2 ^ t3
        n8 = t0 ^ u ^ x2[t0 ^ t1] ^ k8
        n9 = t1 ^ u ^ x2[t1 ^ t2] ^ k9
        n10 = t2 ^ u ^ x2[t2 ^ t3] ^ k10
        n11 = t3 ^ u ^ x2[t3 ^ t0] ^ k11
        t0 = sb[s12]
        t1 = sb[s1]
        t2 = sb[s6]
        t3 = sb[s11]
        u = t0 ^ t1 ^ t2 ^ t3
        n12 = t0 ^ u ^ x2[t0 ^ t1] ^ k12
        n13 = t1 ^ u ^ x2[t1 ^ t2] ^ k13
        n14 = t2 ^ u ^ x2[t2 ^ t3] ^ k14
        n15 = t3 ^ u ^ x2[t3 ^ t0] ^ k15
        s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15 = n0, n1, n2, n3, n4, n5, n6, n7, n8, n9, n10, n11, n12, n13, n14, n15
        r += 1
    k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12, k13, k14, k15 = rks[nr]
    return (
        sb[s0] ^ k0,
        sb[s5] ^ k1,
        sb[s10] ^ k2,
        sb[s15] ^ k3,
        sb[s4] ^ k4,
        sb[s9] ^ k5,
        sb[s14] ^ k6,
        sb[s3] ^ k7,
        sb[s8] ^ k8,
        sb[s13] ^ k9,
        sb[s2] ^ k10,
        sb[s7] ^ k11,
        sb[s12] ^ k12,
        sb[s1] ^ k13,
        sb[s6] ^ k14,
        sb[s11] ^ k15,
    )


def _dec_block(rks, b, x):
    # b: 16 input ints, x: 16 ints xored into the output (CBC); returns 16 ints
    isb = _INV_SBOX
    x2 = _X2
    x4 = _X4
    nr = len(rks) - 1
    k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12, k13, k14, k15 = rks[nr]
    s0 = b[0] ^ k0
    s1 = b[1] ^ k1
    s2 = b[2] ^ k2
    s3 = b[3] ^ k3
    s4 = b[4] ^ k4
    s5 = b[5] ^ k5
    s6 = b[6] ^ k6
    s7 = b[7] ^ k7
    s8 = b[8] ^ k8
    s9 = b[9] ^ k9
    s10 = b[10] ^ k10
    s11 = b[11] ^ k11
    s12 = b[12] ^ k12
    s13 = b[13] ^ k13
    s14 = b[14] ^ k14
    s15 = b[15] ^ k15
    r = nr - 1
    while r > 0:
        k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12, k13, k14, k15 = rks[r]
        t0 = isb[s0] ^ k0
        t1 = isb[s13] ^ k1
        t2 = isb[s10] ^ k2
        t3 = isb[s7] ^ k3
        u = x4[t0 ^ t2]
        v = x4[t1 ^ t3]
        t0 ^= u
        t2 ^= u
        t1 ^= v
        t3 ^= v
        u = t0 ^ t1 ^ t2 ^ t3
        n0 = t0 ^ u ^ x2[t0 ^ t1]
        n1 = t1 ^ u ^ x2[t1 ^ t2]
        n2 = t2 ^ u ^ x2[t2 ^ t3]
        n3 = t3 ^ u ^ x2[t3 ^ t0]
        t0 = isb[s4] ^ k4
        t1 = isb[s1] ^ k5
        t2 = isb[s14] ^ k6
        t3 = isb[s11] ^ k7
        u = x4[t0 ^ t2]
        v = x4[t1 ^ t3]
        t0 ^= u
        t2 ^= u
        t1 ^= v
        t3 ^= v
        u = t0 ^ t1 ^ t2 ^ t3
        n4 = t0 ^ u ^ x2[t0 ^ t1]
        n5 = t1 ^ u ^ x2[t1 ^ t2]
        n6 = t2 ^ u ^ x2[t2 ^ t3]
        n7 = t3 ^ u ^ x2[t3 ^ t0]
        t0 = isb[s8] ^ k8
        t1 = isb[s5] ^ k9
        t2 = isb[s2] ^ k10
        t3 = isb[s15] ^ k11
        u = x4[t0 ^ t2]
        v = x4[t1 ^ t3]
        t0 ^= u
        t2 ^= u
        t1 ^= v
        t3 ^= v
        u = t0 ^ t1 ^ t2 ^ t3
        n8 = t0 ^ u ^ x2[t0 ^ t1]
        n9 = t1 ^ u ^ x2[t1 ^ t2]
        n10 = t2 ^ u ^ x2[t2 ^ t3]
        n11 = t3 ^ u ^ x2[t3 ^ t0]
        t0 = isb[s12] ^ k12
        t1 = isb[s9] ^ k13
        t2 = isb[s6] ^ k14
        t3 = isb[s3] ^ k15
        u = x4[t0 ^ t2]
        v = x4[t1 ^ t3]
        t0 ^= u
        t2 ^= u
        t1 ^= v
        t3 ^= v
        u = t0 ^ t1 ^ t2 ^ t3
        n12 = t0 ^ u ^ x2[t0 ^ t1]
        n13 = t1 ^ u ^ x2[t1 ^ t2]
        n14 = t2 ^ u ^ x2[t2 ^ t3]
        n15 = t3 ^ u ^ x2[t3 ^ t0]
        s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15 = n0, n1, n2, n3, n4, n5, n6, n7, n8, n9, n10, n11, n12, n13, n14, n15
        r -= 1
    k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12, k13, k14, k15 = rks[0]
    return (
        isb[s0] ^ k0 ^ x[0],
        isb[s13] ^ k1 ^ x[1],
        isb[s10] ^ k2 ^ x[2],
        isb[s7] ^ k3 ^ x[3],
        isb[s4] ^ k4 ^ x[4],
        isb[s1] ^ k5 ^ x[5],
        isb[s14] ^ k6 ^ x[6],
        isb[s11] ^ k7 ^ x[7],
        isb[s8] ^ k8 ^ x[8],
        isb[s5] ^ k9 ^ x[9],
        isb[s2] ^ k10 ^ x[10],
        isb[s15] ^ k11 ^ x[11],
        isb[s12] ^ k12 ^ x[12],
        isb[s9] ^ k13 ^ x[13],
        isb[s6] ^ k14 ^ x[14],
        isb[s3] ^ k15 ^ x[15],
    )


class PureAES:
    """FIPS-197 AES in Python (portable reference; slow next to cryptolib)."""

    _CACHE_MAX = 8

    def __init__(self):
        if _SBOX is None:
            _make_tables()
        self._keys = {}

    def _schedule(self, key):
        key = bytes(key)
        rks = self._keys.get(key)
        if rks is None:
            if len(self._keys) >= self._CACHE_MAX:
                self._keys = {}
            rks = _expand_key(key)
            self._keys[key] = rks
        return rks

    def ecb_encrypt(self, key, data):
        _check(key, data)
        rks = self._schedule(key)
        out = []
        for o in range(0, len(data), 16):
            out.append(bytes(_enc_block(rks, data[o:o + 16], _ZERO16)))
        return b"".join(out)

    def ecb_decrypt(self, key, data):
        _check(key, data)
        rks = self._schedule(key)
        out = []
        for o in range(0, len(data), 16):
            out.append(bytes(_dec_block(rks, data[o:o + 16], _ZERO16)))
        return b"".join(out)

    def cbc_encrypt(self, key, iv, data):
        _check(key, data)
        _check_iv(iv)
        rks = self._schedule(key)
        out = []
        prev = iv
        for o in range(0, len(data), 16):
            prev = _enc_block(rks, data[o:o + 16], prev)
            out.append(bytes(prev))
        return b"".join(out)

    def cbc_decrypt(self, key, iv, data):
        _check(key, data)
        _check_iv(iv)
        rks = self._schedule(key)
        out = []
        prev = iv
        for o in range(0, len(data), 16):
            blk = data[o:o + 16]
            out.append(bytes(_dec_block(rks, blk, prev)))
            prev = blk
        return b"".join(out)
