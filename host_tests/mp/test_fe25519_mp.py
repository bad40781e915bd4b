# The viper field arithmetic (pnpipsec.crypto.fe25519) where the port has native
# emitters, and the fallback elsewhere. Plain asserts: runs under CPython, the
# WebAssembly port (both: kernel() is None, the plain path is checked) and the unix /
# qemu ports (the fast path against the plain big-integer path and RFC 7748 vectors).

import binascii
import hashlib
import sys

from pnpipsec.crypto import fe25519, x25519

P = 2 ** 255 - 19
H = binascii.unhexlify


def _rand_ints(label, n):
    out = []
    i = 0
    while len(out) < n:
        h = hashlib.sha256(("fe25519 %s %d" % (label, i)).encode()).digest()
        h2 = hashlib.sha256(h).digest()
        out.append(int.from_bytes(h + h2, "big") % (1 << 260))
        i += 1
    return out


def _native_expected():
    # ports where the brief requires the fast path: MicroPython with native emitters
    if sys.implementation.name != "micropython":
        return False
    try:
        exec("import micropython\n@micropython.viper\ndef f() -> int:\n    return 1\n", {})
    except SyntaxError:
        return False
    return True


def test_kernel_present_exactly_where_native_emitters_are():
    run = fe25519.kernel()
    assert (run is not None) == _native_expected()


def _limbs_extreme(ws, slot, v):
    o = slot * fe25519.N
    for i in range(fe25519.N):
        ws[o + i] = v
    ws[o + 2] = v + 3  # the carried bound: limb 2 may exceed 8191 by a few units


def _val(ws, slot):
    o = slot * fe25519.N
    n = 0
    for i in range(fe25519.N - 1, -1, -1):
        n = (n << 13) + ws[o + i]
    return n


def test_field_ops_against_big_integers():
    run = fe25519.kernel()
    if run is None:
        return
    ws = fe25519.workspace(6)
    vals = _rand_ints("ops", 24) + [0, 1, P - 1, P, P + 1, (1 << 260) - 1]
    ops = (
        (fe25519.MUL, lambda a, b: a * b),
        (fe25519.SQR, lambda a, b: a * a),
        (fe25519.ADD, lambda a, b: a + b),
        (fe25519.SUB, lambda a, b: a - b),
        (fe25519.MULA24, lambda a, b: a * 121665),
    )
    for i in range(len(vals)):
        a = vals[i]
        b = vals[-1 - i]
        for op, f in ops:
            fe25519.put(ws, 1, a)
            fe25519.put(ws, 2, b)
            run(ws, ws, ws, ws, bytes((op, 3, 1, 2)), 4)
            assert fe25519.get(ws, 3) == f(a, b) % P, (op, a, b)
            # output limbs are carried (the bound every op relies on)
            for j in range(fe25519.N):
                assert 0 <= ws[3 * fe25519.N + j] < 8196
            # in place (d == x == y) on a carried, non-canonical input
            r = fe25519.get(ws, 3)
            run(ws, ws, ws, ws, bytes((op, 3, 3, 3)), 4)
            assert fe25519.get(ws, 3) == f(r, r) % P, (op, "aliased")


def test_field_ops_at_the_limb_bounds():
    run = fe25519.kernel()
    if run is None:
        return
    ws = fe25519.workspace(6)
    for v in (8191, 8192):
        _limbs_extreme(ws, 1, v)
        _limbs_extreme(ws, 2, v)
        a = _val(ws, 1)
        for op, exp in ((fe25519.MUL, a * a), (fe25519.SQR, a * a), (fe25519.SUB, 0),
                        (fe25519.ADD, 2 * a), (fe25519.MULA24, a * 121665)):
            run(ws, ws, ws, ws, bytes((op, 3, 1, 2)), 4)
            assert fe25519.get(ws, 3) == exp % P, (op, v)
    # subtraction of the largest carried limbs from zero stays non-negative
    fe25519.put(ws, 1, 0)
    run(ws, ws, ws, ws, bytes((fe25519.SUB, 3, 1, 2)), 4)
    assert fe25519.get(ws, 3) == (-_val(ws, 2)) % P


def test_sqrn_cswap_copy_and_inverse():
    run = fe25519.kernel()
    if run is None:
        return
    ws = fe25519.workspace(10)
    for a in _rand_ints("inv", 4) + [1, 2, P - 1]:
        a %= P
        fe25519.put(ws, 1, a)
        run(ws, ws, ws, ws, bytes((fe25519.SQRN, 2, 1, 7)), 4)
        assert fe25519.get(ws, 2) == pow(a, 128, P)
        code = fe25519.inv_program(3, 1, 4, 5, 6, 7)
        run(ws, ws, ws, ws, code, len(code))
        assert fe25519.get(ws, 3) * a % P == 1
        code = fe25519.pow22523_program(9, 1, 4, 5, 6, 7)
        run(ws, ws, ws, ws, code, len(code))
        assert fe25519.get(ws, 9) == pow(a, (P - 5) // 8, P)
        run(ws, ws, ws, ws, bytes((fe25519.COPY, 8, 3, 0)), 4)
        assert fe25519.get(ws, 8) == fe25519.get(ws, 3)
    fe25519.put(ws, 1, 5)
    fe25519.put(ws, 2, 7)
    for c, exp in ((0, (5, 7)), (1, (7, 5))):
        fe25519.put(ws, 1, 5)
        fe25519.put(ws, 2, 7)
        ws[0] = c
        run(ws, ws, ws, ws, bytes((fe25519.CSWAP, 0, 1, 2)), 4)
        assert (fe25519.get(ws, 1), fe25519.get(ws, 2)) == exp


def test_x25519_fast_equals_plain_ladder():
    run = fe25519.kernel()
    ks = _rand_ints("k", 6)
    us = _rand_ints("u", 6) + [0, 1, P - 1, 9]
    for i in range(len(us)):
        k = ((ks[i % len(ks)] & ((1 << 255) - 1)) & ~7) | (1 << 254)
        u = us[i] % P
        plain = x25519._ladder(k, u)
        if run is not None:
            assert fe25519.x25519_ladder(run, k, u) == plain, (k, u)


def test_x25519_rfc7748_5_2_iterated_1000():
    # RFC 7748 5.2: k = u = 9, 1000 iterations (the fast path only: the plain path
    # takes minutes on slow ports, and test_crypto_mp covers it with one iteration)
    if fe25519.kernel() is None:
        return
    k = u = b"\x09" + bytes(31)
    for i in range(1000):
        r = x25519.x25519(k, u)
        u = k
        k = r
        if i == 0:
            assert binascii.hexlify(k) == b"422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"
    assert binascii.hexlify(k) == b"684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"


def test_ed25519_fast_equals_plain():
    # sign/verify/public_key through the fast path equal the big-integer path (and a
    # corrupted signature or a non-point key is refused by both)
    from pnpipsec.crypto import ed25519

    if fe25519.kernel() is None:
        return
    seeds = [hashlib.sha256(b"ed fast %d" % i).digest() for i in range(3)]
    msgs = [b"", b"x" * 100, bytes(range(200))]
    fast = []
    for seed, msg in zip(seeds, msgs):
        ed25519._cache = None
        pub = ed25519.public_key(seed)
        sig = ed25519.sign(seed, msg)
        bad = bytearray(sig)
        bad[40] ^= 1
        nonpoint = b"\x02" + bytes(31)  # y = 2 is not on the curve
        fast.append((pub, sig, ed25519.verify(pub, msg, sig), ed25519.verify(pub, msg, bytes(bad)),
                     ed25519.verify(nonpoint, msg, sig)))
    assert ed25519._fast() is not None
    saved = ed25519._fast_state
    try:
        ed25519._fast_state = None
        fe25519._kernel = None  # plain path for the comparison
        plain = []
        for seed, msg in zip(seeds, msgs):
            ed25519._cache = None
            pub = ed25519.public_key(seed)
            sig = ed25519.sign(seed, msg)
            bad = bytearray(sig)
            bad[40] ^= 1
            nonpoint = b"\x02" + bytes(31)
            plain.append((pub, sig, ed25519.verify(pub, msg, sig), ed25519.verify(pub, msg, bytes(bad)),
                          ed25519.verify(nonpoint, msg, sig)))
    finally:
        fe25519._kernel = saved.run
        ed25519._fast_state = saved
        ed25519._cache = None
    assert fast == plain
    for f in fast:
        assert f[2] is True and f[3] is False and f[4] is False
