"""Fast field arithmetic mod p = 2^255 - 19 for ports with native emitters.

`kernel()` returns a @micropython.viper function, or None where there is none (CPython,
the WebAssembly port, ports built without native emitters); x25519.py and ed25519.py
then keep their plain big-integer code.

Where the viper code comes from, first found:
  1. the module pnpipsec.crypto._fe25519_native: source() as a module, compiled to
     native code with mpy-cross -march. firmware/manifest.py (native=True) generates
     and freezes it into firmware builds (boards/esp32, rp2, qemu); the code then stays
     in flash: no compilation and no heap for it. Not in firmware/ itself: mpy-cross
     compiles viper code only with -march, and firmware/ is deployed as plain bytecode
     for every board (the WebAssembly port cannot load native .mpy files).
  2. the string _fe25519_src.SRC (generated from source() below), compiled on the board
     at first use (exec): about 59 M instructions and ~21 KB of heap for the code, for
     good, on a Cortex-M3; it needs some 50 KB free while compiling. Generating the text
     on the board instead needs more contiguous heap than a 128 KB board has after boot.
  3. None: no native emitter (SyntaxError of the probe), or no heap to compile.
Then no allocation per field operation.

Representation: 20 limbs of 13 bits (260 bits; 2^260 = 608 mod p) in 32-bit words of
one array('i') workspace, N = 20 words per slot (slot 0 is reserved: word 0 holds the
CSWAP condition). Bounds: a carried limb is < 8196 (limbs 0..1 < 8192, limb 2 at most a
few units above), so a column of a product sums at most 20 * 8196^2 < 2^30.33, and
with the 608-fold of the upper half and the carry it stays < 2^31: a 32-bit viper int
never overflows. Subtraction adds 4p + 2^260 - 608 (= 0 mod p), whose every limb is
>= 9212, so no limb is ever negative. Results are not canonical (they may exceed p);
`get` reduces.

One viper function, _run, interprets a program of 4-byte instructions (op, d, x, y) on
slots, so a whole ladder step, a point addition or an inversion is one call from Python.
Ops: MUL d=x*y, SQR d=x^2, ADD d=x+y, SUB d=x-y, MULA24 d=121665*x, CSWAP x<->y when
ws[0] is 1 (by masks, no branch on the condition), COPY d=x, SQRN d=x^(2^y).
Aliasing (d equal to x or y) is allowed for every op.
"""

N = 20
BITS = 13
MASK = (1 << BITS) - 1
FOLD = 608  # 2^260 mod p
P = 2 ** 255 - 19

MUL = 0
SQR = 1
ADD = 2
SUB = 3
MULA24 = 4
CSWAP = 5
COPY = 6
SQRN = 7

_kernel = None
_tried = False


def _sub_bias():
    # 4p + 2^260 - 608 as 20 limbs, each >= 9212 (> any carried limb)
    c = [4 * ((P >> (BITS * i)) & MASK) for i in range(N)]
    c[0] -= FOLD
    c[N - 1] += 1 << BITS
    return c


def _fold_top(out, ind):
    out.append(ind + "t = d[0] + (t >> %d) * %d" % (BITS, FOLD))
    out.append(ind + "d[0] = t & %d" % MASK)
    out.append(ind + "t = d[1] + (t >> %d)" % BITS)
    out.append(ind + "d[1] = t & %d" % MASK)
    out.append(ind + "d[2] = d[2] + (t >> %d)" % BITS)


def _carry_store(out, ind, names):
    # names: the 20 column expressions, ascending; carry them into d and fold the top
    for k in range(N):
        if k == 0:
            out.append(ind + "t = %s" % names[k])
        else:
            out.append(ind + "t = %s + (t >> %d)" % (names[k], BITS))
        out.append(ind + "d[%d] = t & %d" % (k, MASK))
    _fold_top(out, ind)


def _col(k, sq):
    if sq:
        cross = []
        for i in range(N):
            j = k - i
            if 0 <= j < N and i < j:
                cross.append("x[%d] * x[%d]" % (i, j))
        s = ""
        if cross:
            s = "((" + " + ".join(cross) + ") << 1)"
        if k % 2 == 0 and k // 2 < N:
            if s:
                s += " + "
            s += "x[%d] * x[%d]" % (k // 2, k // 2)
        return s
    terms = []
    for i in range(N):
        j = k - i
        if 0 <= j < N:
            terms.append("x[%d] * y[%d]" % (i, j))
    return " + ".join(terms)


def _mul_body(out, ind, sq):
    # columns 20..38 into h0..h18, carried into 13-bit limbs h0..h19; then the low
    # columns plus 608 * h into l0..l19 (all read before any store: aliasing is fine)
    for k in range(N, 2 * N - 1):
        out.append(ind + "h%d = %s" % (k - N, _col(k, sq)))
    for k in range(N - 1):
        if k == N - 2:
            out.append(ind + "h%d = h%d >> %d" % (k + 1, k, BITS))
        else:
            out.append(ind + "h%d = h%d + (h%d >> %d)" % (k + 1, k + 1, k, BITS))
        out.append(ind + "h%d = h%d & %d" % (k, k, MASK))
    for k in range(N):
        out.append(ind + "l%d = %s + h%d * %d" % (k, _col(k, sq), k, FOLD))
    _carry_store(out, ind, ["l%d" % k for k in range(N)])


def source():
    """The viper source text of _run (also used by the host tests)."""
    bias = _sub_bias()
    ind = "            "
    out = [
        "import micropython",
        "@micropython.viper",
        "def _run(x: ptr32, y: ptr32, d: ptr32, ws: ptr32, code: ptr8, n: int):",
        "    base = uint(ws)",
        "    pc = 0",
        "    while pc < n:",
        "        op = code[pc]",
        "        d = ptr32(base + uint(code[pc + 1]) * %d)" % (4 * N),
        "        x = ptr32(base + uint(code[pc + 2]) * %d)" % (4 * N),
        "        y = ptr32(base + uint(code[pc + 3]) * %d)" % (4 * N),
        "        pc += 4",
        "        if op == 0:",
    ]
    _mul_body(out, ind, False)
    out.append("        elif op == 1 or op == 7:")
    out.append("            cnt = 1")
    out.append("            if op == 7:")
    out.append("                cnt = int(code[pc - 1])")
    out.append("            while cnt > 0:")
    _mul_body(out, ind + "    ", True)
    out.append("                x = d")
    out.append("                cnt -= 1")
    out.append("        elif op == 2:")
    _carry_store(out, ind, ["x[%d] + y[%d]" % (k, k) for k in range(N)])
    out.append("        elif op == 3:")
    _carry_store(out, ind, ["x[%d] - y[%d] + %d" % (k, k, bias[k]) for k in range(N)])
    out.append("        elif op == 4:")
    _carry_store(out, ind, ["x[%d] * 121665" % k for k in range(N)])
    out.append("        elif op == 5:")
    out.append("            m = 0 - ws[0]")
    out.append("            i = 0")
    out.append("            while i < %d:" % N)
    out.append("                t = (x[i] ^ y[i]) & m")
    out.append("                x[i] = x[i] ^ t")
    out.append("                y[i] = y[i] ^ t")
    out.append("                i += 1")
    out.append("        elif op == 6:")
    out.append("            i = 0")
    out.append("            while i < %d:" % N)
    out.append("                d[i] = x[i]")
    out.append("                i += 1")
    out.append("")
    return "\n".join(out)


_PROBE = "import micropython\n@micropython.viper\ndef f(a: ptr32) -> int:\n    return a[0]\n"


def kernel():
    """The viper interpreter _run(ws, ws, ws, ws, code, len(code)), or None."""
    global _kernel, _tried
    if _tried:
        return _kernel
    _tried = True
    try:
        import sys

        if sys.implementation.name != "micropython":
            return None
        try:
            # frozen native code (firmware/manifest.py, native=True): no compilation,
            # and the code stays in flash, not in the GC heap
            from pnpipsec.crypto._fe25519_native import _run

            _kernel = _run
            return _kernel
        except Exception:  # noqa: BLE001 (ImportError; ValueError: .mpy of another arch)
            pass
        g = {}
        exec(_PROBE, g)  # SyntaxError (cheap) where there are no native emitters
        import gc

        from pnpipsec.crypto import _fe25519_src

        src = _fe25519_src.SRC
        del _fe25519_src.SRC
        sys.modules.pop("pnpipsec.crypto._fe25519_src", None)
        gc.collect()
        g = {}
        exec(src, g)
        src = None
        _kernel = g["_run"]
        gc.collect()
    except Exception:  # noqa: BLE001 (SyntaxError, MemoryError, ImportError)
        _kernel = None
    return _kernel


def disable():
    """Force the plain path (tests and benchmarks compare both paths)."""
    global _kernel, _tried
    _kernel = None
    _tried = True


def workspace(slots):
    from array import array

    return array("i", bytes(4 * N * slots))


def put(ws, slot, n):
    """Store the integer 0 <= n < 2^260 into slot."""
    o = slot * N
    for i in range(N):
        ws[o + i] = n & MASK
        n >>= BITS


def get(ws, slot):
    """The canonical value (mod p) of slot."""
    o = slot * N + N - 1
    n = 0
    for _ in range(N):
        n = (n << BITS) + ws[o]
        o -= 1
    return n % P


def program(ops):
    """bytes of a program from (op, d, x, y) tuples."""
    b = bytearray()
    for o in ops:
        b.extend(bytes(o))
    return bytes(b)


def _chain250(z, t0, t1, t2, t3):
    # t2 = z^(2^250 - 1), t0 = z^11 (the ref10 addition chain)
    return (
        (SQR, t0, z, 0),          # z^2
        (SQRN, t1, t0, 2),        # z^8
        (MUL, t1, t1, z),         # z^9
        (MUL, t0, t0, t1),        # z^11
        (SQR, t2, t0, 0),         # z^22
        (MUL, t1, t1, t2),        # z^(2^5 - 1)
        (SQRN, t2, t1, 5),
        (MUL, t1, t2, t1),        # 2^10 - 1
        (SQRN, t2, t1, 10),
        (MUL, t2, t2, t1),        # 2^20 - 1
        (SQRN, t3, t2, 20),
        (MUL, t2, t3, t2),        # 2^40 - 1
        (SQRN, t2, t2, 10),
        (MUL, t1, t2, t1),        # 2^50 - 1
        (SQRN, t2, t1, 50),
        (MUL, t2, t2, t1),        # 2^100 - 1
        (SQRN, t3, t2, 100),
        (MUL, t2, t3, t2),        # 2^200 - 1
        (SQRN, t2, t2, 50),
        (MUL, t2, t2, t1),        # 2^250 - 1
    )


def inv_program(d, z, t0, t1, t2, t3):
    """d = z^(p-2) (= 1/z), using temporaries t0..t3 (all distinct from z and d)."""
    return program(_chain250(z, t0, t1, t2, t3) + (
        (SQRN, t2, t2, 5),        # 2^255 - 32
        (MUL, d, t2, t0),         # 2^255 - 21 = p - 2
    ))


def pow22523_program(d, z, t0, t1, t2, t3):
    """d = z^((p-5)/8) = z^(2^252 - 3) (square roots), temporaries as inv_program."""
    return program(_chain250(z, t0, t1, t2, t3) + (
        (SQRN, t2, t2, 2),        # 2^252 - 4
        (MUL, d, t2, z),          # 2^252 - 3
    ))


# X25519 ladder (RFC 7748 section 5) on slots
_X1 = 1
_X2 = 2
_Z2 = 3
_X3 = 4
_Z3 = 5
_A = 6
_AA = 7
_B = 8
_BB = 9
_E = 10
_C = 11
_D = 12
_DA = 13
_CB = 14
_T = 15
_SLOTS = 18

_STEP = program((
    (CSWAP, 0, _X2, _X3),
    (CSWAP, 0, _Z2, _Z3),
    (ADD, _A, _X2, _Z2),
    (SQR, _AA, _A, 0),
    (SUB, _B, _X2, _Z2),
    (SQR, _BB, _B, 0),
    (SUB, _E, _AA, _BB),
    (ADD, _C, _X3, _Z3),
    (SUB, _D, _X3, _Z3),
    (MUL, _DA, _D, _A),
    (MUL, _CB, _C, _B),
    (ADD, _T, _DA, _CB),
    (SQR, _X3, _T, 0),
    (SUB, _T, _DA, _CB),
    (SQR, _T, _T, 0),
    (MUL, _Z3, _X1, _T),
    (MUL, _X2, _AA, _BB),
    (MULA24, _T, _E, 0),
    (ADD, _T, _AA, _T),
    (MUL, _Z2, _E, _T),
))
_FINAL = program(((CSWAP, 0, _X2, _X3), (CSWAP, 0, _Z2, _Z3))) + inv_program(
    _A, _Z2, _B, _C, _D, _E) + program(((MUL, _T, _X2, _A),))


_ladder_ws = None


def x25519_ladder(run, k, x1):
    """x-coordinate of [k](x1) for a clamped scalar k and 0 <= x1 < p (a Python int)."""
    # One workspace for every ladder, made at the first: a new 1.4 KB block per DH (and
    # its bytes() twin) is what a board's fragmented heap fails to find.
    global _ladder_ws
    ws = _ladder_ws
    if ws is None:
        ws = _ladder_ws = workspace(_SLOTS)
    else:
        for i in range(len(ws)):
            ws[i] = 0
    put(ws, _X1, x1)
    put(ws, _X2, 1)
    put(ws, _X3, x1)
    put(ws, _Z3, 1)
    step = _STEP
    ns = len(step)
    swap = 0
    t = 254
    while t >= 0:
        bit = (k >> t) & 1
        ws[0] = swap ^ bit
        swap = bit
        run(ws, ws, ws, ws, step, ns)
        t -= 1
    ws[0] = swap
    run(ws, ws, ws, ws, _FINAL, len(_FINAL))
    return get(ws, _T)
