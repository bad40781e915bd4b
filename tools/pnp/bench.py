"""`pnp bench`: medians of repeated measurements, each beside a baseline from the same run.

Model (extend by adding to PROBES and ROWS):

* a *probe* measures one thing on one implementation and yields a Measurement
  (samples in seconds, or a single value in bytes); a probe that cannot run yields
  "n/a (reason)" instead of raising;
* a *row* shows one probe beside a baseline probe (and optionally a second reference
  and a budget: the largest allowed ratio measurement/baseline).

Pure-Python cases are written once as source (PURE_CASES) and run unchanged on CPython
and inside the MicroPython WebAssembly port (boards/wasm/runner.mjs), where time comes
from performance.now() because ticks_us only has millisecond resolution there.
Every pure result is checked against the `cryptography` package before it is timed.

Instruction counts on a Cortex-M3 (MicroPython's qemu port, pnpipsec frozen) are a
section of their own: pnp.bench_qemu (JSON key "qemu"; --no-qemu skips it).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from pnp import paths

REPO = paths.ROOT   # the checkout, or the installed package data (pnp/paths.py)
RUNNER_MJS = os.path.join(REPO, "boards", "wasm", "runner.mjs")
WASM_PKG = paths.wasm_package() or os.path.join(REPO, "node_modules", "@micropython", "micropython-webassembly-pyscript")


# ------------------------------------------------------------------ measurements
class Measurement:
    """samples (seconds per operation) or value (e.g. bytes), or note = why n/a."""

    def __init__(self, samples=None, value=None, unit="s", inner=1, note=None):
        self.samples = list(samples or [])
        self.unit = unit
        self.inner = inner
        self.note = note
        if value is None and self.samples:
            value = statistics.median(self.samples)
        self.value = value

    @property
    def ok(self):
        return self.value is not None and self.note is None

    @property
    def spread(self):
        """Half the interquartile range relative to the median (robust noise figure)."""
        s = sorted(self.samples)
        if len(s) < 4 or not self.value:
            return None
        q1 = statistics.median(s[: len(s) // 2])
        q3 = statistics.median(s[(len(s) + 1) // 2 :])
        return (q3 - q1) / 2 / self.value

    @classmethod
    def na(cls, reason, unit="s"):
        return cls(unit=unit, note=str(reason))

    def to_json(self):
        d = {"unit": self.unit, "median": self.value, "n": len(self.samples), "inner": self.inner}
        if self.samples:
            d["min"] = min(self.samples)
            d["max"] = max(self.samples)
            d["spread"] = self.spread
        if self.note:
            d["na"] = self.note
        return d


def fmt_value(v, unit):
    if v is None:
        return "n/a"
    if unit == "s":
        if v >= 1:
            return "%.3g s" % v
        if v >= 1e-3:
            return "%.3g ms" % (v * 1e3)
        return "%.3g µs" % (v * 1e6)
    if unit == "B":
        return "%.1f KiB" % (v / 1024) if v >= 1024 else "%d B" % v
    return "%.4g %s" % (v, unit)


def time_callable(fn, reps, target_s, clock=time.process_time):
    """Median-friendly samples: each sample runs fn `inner` times (about target_s).

    CPU time of this process by default: the machines are shared, and wall time would
    also count other processes' work (the MicroPython figures are wall time, from
    performance.now(), in a Node process doing nothing else)."""
    t0 = clock()
    fn()  # warm-up (and a first estimate)
    once = max(clock() - t0, 1e-7)
    inner = max(1, int(target_s / once))
    samples = []
    for _ in range(reps):
        gc.collect()
        t0 = clock()
        for _ in range(inner):
            fn()
        samples.append((clock() - t0) / inner)
    return Measurement(samples=samples, inner=inner)


# ------------------------------------------------------------------ inputs
def _det(label, n):
    """Deterministic input bytes, so every implementation signs/multiplies the same data."""
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(b"pnp bench %s %d" % (label.encode(), i)).digest()
        i += 1
    return out[:n]


class Inputs:
    """Inputs and expected outputs (from `cryptography`, the oracle) for the crypto cases."""

    def __init__(self):
        self.k = _det("x25519 scalar", 32)
        self.u = _det("x25519 u", 32)
        self.seed = _det("ed25519 seed", 32)
        # roughly the size of the octets an IKEv2 AUTH payload signs
        self.msg = _det("ed25519 message", 256)
        self.error = None
        try:
            from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
            from cryptography.hazmat.primitives import serialization

            raw = serialization.Encoding.Raw
            sk = ed25519.Ed25519PrivateKey.from_private_bytes(self.seed)
            self.pub = sk.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
            self.sig = sk.sign(self.msg)
            self.shared = x25519.X25519PrivateKey.from_private_bytes(self.k).exchange(
                x25519.X25519PublicKey.from_public_bytes(self.u)
            )
        except Exception as e:  # noqa: BLE001
            self.error = "cryptography unavailable: %s" % e
            self.pub = self.sig = self.shared = None

    def globals(self):
        return {"K": self.k, "U": self.u, "SEED": self.seed, "MSG": self.msg, "PUB": self.pub, "SIG": self.sig}

    def expected(self, case):
        if case.startswith("handshake"):
            return True   # both engines derived the same CHILD SA keys
        return {"x25519": self.shared, "x25519_rfc": self.shared, "ed25519_sign": self.sig,
                "ed25519_verify": True}[case]


# A whole IKE_SA_INIT + IKE_AUTH (with CHILD SA) between two engines in memory, with
# pure-Python X25519 as on a device; AES is the board's (OpenSSL on the host, PureAES
# where nothing else exists). Deterministic randomness: every run does the same work.
HANDSHAKE = """
import hashlib
from pnpipsec.ike.engine import Engine, PeerConfig, LocalIdentity
from pnpipsec.crypto.aes import default_provider
try:
    from pnp_hostboard.crypto import CryptographyAES
    AES = CryptographyAES()
except ImportError:
    AES = default_provider()
_n = [0]
def rand(k):
    _n[0] += 1
    out = b""
    i = 0
    while len(out) < k:
        out += hashlib.sha256(b"hs %%d %%d" %% (_n[0], i)).digest()
        i += 1
    return out[:k]
def fn():
    cfg = %s
    a = Engine(rand, AES, LocalIdentity(), policy=lambda addr, pid, m: cfg)
    b = Engine(rand, AES, LocalIdentity(), policy=lambda addr, pid, m: cfg)
    A = ("10.0.0.1", 4500)
    B = ("10.0.0.2", 4500)
    a.initiate(B, cfg, 0)
    for _ in range(3):
        for m, _x in a.pop_datagrams():
            b.receive(m, A, 0)
        for m, _x in b.pop_datagrams():
            a.receive(m, B, 0)
    ca = [e.child for e in a.pop_events() if e.__class__.__name__ == "ChildUp"]
    cb = [e.child for e in b.pop_events() if e.__class__.__name__ == "ChildUp"]
    return len(ca) == 1 and len(cb) == 1 and ca[0].enc_out == cb[0].enc_in and ca[0].int_in == cb[0].int_out
"""

# The baseline for pnpipsec's big-integer X25519: RFC 7748 section 5's pseudo-code
# transcribed literally (cswap by mask arithmetic, every field operation reduced mod p,
# z^(p-2) by pow for the inversion; squares as x * x).
RFC_LADDER = """
def cswap(swap, x_2, x_3):
    dummy = (0 - swap) & (x_2 ^ x_3)
    x_2 = x_2 ^ dummy
    x_3 = x_3 ^ dummy
    return x_2, x_3
def x25519_rfc(k, u):
    p = 2 ** 255 - 19
    a24 = 121665
    kb = bytearray(k)
    kb[0] &= 248
    kb[31] &= 127
    kb[31] |= 64
    k = int.from_bytes(bytes(kb), "little")
    x_1 = (int.from_bytes(u, "little") & ((1 << 255) - 1)) % p
    x_2 = 1
    z_2 = 0
    x_3 = x_1
    z_3 = 1
    swap = 0
    for t in range(254, -1, -1):
        k_t = (k >> t) & 1
        swap ^= k_t
        x_2, x_3 = cswap(swap, x_2, x_3)
        z_2, z_3 = cswap(swap, z_2, z_3)
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
        z_2 = E * ((AA + a24 * E) % p) % p
    x_2, x_3 = cswap(swap, x_2, x_3)
    z_2, z_3 = cswap(swap, z_2, z_3)
    return (x_2 * pow(z_2, p - 2, p) % p).to_bytes(32, "little")
def fn():
    return x25519_rfc(K, U)
"""

# Pure-Python cases: source that defines fn() from the globals of Inputs.globals();
# it runs as is on CPython and on MicroPython.
PURE_CASES = {
    "x25519": "from pnpipsec.crypto import x25519\ndef fn():\n    return x25519.x25519(K, U)\n",
    "x25519_rfc": RFC_LADDER,
    "ed25519_sign": "from pnpipsec.crypto import ed25519\ndef fn():\n    return ed25519.sign(SEED, MSG)\n",
    "ed25519_verify": "from pnpipsec.crypto import ed25519\ndef fn():\n    return ed25519.verify(PUB, MSG, SIG)\n",
    "handshake_null": HANDSHAKE % "PeerConfig(auth='null')",
    "handshake_psk": HANDSHAKE % "PeerConfig(auth='psk', psk=b'bench secret', local_id=(2, b'a'), remote_id=None)",
}


# ------------------------------------------------------------------ probes
class Context:
    def __init__(self, reps, target_s, wasm=True, wasm_timeout=600, wasm_target_s=None):
        self.reps = reps
        self.target_s = target_s
        self.wasm = wasm
        self.wasm_timeout = wasm_timeout
        self.wasm_target_s = target_s if wasm_target_s is None else wasm_target_s
        self.inputs = Inputs()
        self.cache = {}
        self._wasm_results = None
        self.wasm_cases = None  # cases the wasm run measures (None: all of PURE_CASES)
        self.env = {}


def cpython_pure(case):
    def probe(ctx):
        if ctx.inputs.error:
            return Measurement.na(ctx.inputs.error)
        ns = dict(ctx.inputs.globals())
        try:
            exec(PURE_CASES[case], ns)
            out = ns["fn"]()
        except ImportError as e:
            return Measurement.na("missing: %s" % e)
        except Exception as e:  # noqa: BLE001
            return Measurement.na("%s: %s" % (type(e).__name__, e))
        if out != ctx.inputs.expected(case):
            return Measurement.na("WRONG RESULT (differs from cryptography)")
        return time_callable(ns["fn"], ctx.reps, ctx.target_s)

    return probe


def cpython_cryptography(case):
    def probe(ctx):
        if ctx.inputs.error:
            return Measurement.na(ctx.inputs.error)
        from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

        i = ctx.inputs
        if case == "x25519":
            # key objects built outside the timing: the scalar multiplication alone
            sk = x25519.X25519PrivateKey.from_private_bytes(i.k)
            pk = x25519.X25519PublicKey.from_public_bytes(i.u)
            fn = lambda: sk.exchange(pk)  # noqa: E731
        elif case == "ed25519_sign":
            sk = ed25519.Ed25519PrivateKey.from_private_bytes(i.seed)
            fn = lambda: sk.sign(i.msg)  # noqa: E731
        elif case == "ed25519_verify":
            pk = ed25519.Ed25519PublicKey.from_public_bytes(i.pub)

            def fn():
                pk.verify(i.sig, i.msg)  # raises InvalidSignature on failure
                return True

        else:
            return Measurement.na("unknown case %s" % case)
        return time_callable(fn, ctx.reps, ctx.target_s)

    return probe


WASM_SCRIPT = r'''
import gc, json, sys
from binascii import hexlify, unhexlify
from pnpwasm import perf_ms

CFG = json.loads(sys.argv[1])
G = {}
for k, v in CFG["globals"].items():
    G[k] = unhexlify(v) if v is not None else None


def inner_for(fn, target_ms):
    t0 = perf_ms()
    fn()
    once = max(perf_ms() - t0, 0.001)
    return max(1, int(target_ms / once))


def sample(fn, inner):
    gc.collect()
    t0 = perf_ms()
    for _ in range(inner):
        fn()
    return (perf_ms() - t0) / inner


# Every case is checked and calibrated first; then the samples are taken round-robin
# (one per case per round, the order reversed every other round), so slow drift in the
# VM (the JIT tiering up, other load) falls on every case alike and ratios between
# cases of this run compare like with like.
res = {"_env": {"version": list(sys.implementation.version[:3])}}
ready = []
for case, src in CFG["cases"].items():
    ns = dict(G)
    try:
        exec(src, ns)
        out = ns["fn"]()
        exp = CFG["expected"][case]
        if (hexlify(out).decode() if isinstance(out, bytes) else out) != exp:
            res[case] = {"na": "WRONG RESULT (differs from cryptography)"}
            continue
        gc.collect()
        inner = inner_for(ns["fn"], CFG["target_ms"])
        ready.append((case, ns["fn"], inner))
        res[case] = {"samples_ms": [], "inner": inner}
    except ImportError as e:
        res[case] = {"na": "missing: %s" % e}
    except Exception as e:
        res[case] = {"na": "%s: %s" % (type(e).__name__, e)}
for r in range(CFG["reps"]):
    for case, fn, inner in (ready if r % 2 == 0 else ready[::-1]):
        if "samples_ms" not in res[case]:
            continue
        try:
            res[case]["samples_ms"].append(sample(fn, inner))
        except Exception as e:
            res[case] = {"na": "%s: %s" % (type(e).__name__, e)}
print("PNPBENCH " + json.dumps(res))
'''


def _wasm_results(ctx):
    if ctx._wasm_results is not None:
        return ctx._wasm_results
    res = {"_na": None}
    node = shutil.which("node")
    if not ctx.wasm:
        res["_na"] = "skipped (--no-wasm)"
    elif ctx.inputs.error:
        res["_na"] = ctx.inputs.error
    elif node is None:
        res["_na"] = "node not found"
    elif not os.path.isdir(WASM_PKG):
        res["_na"] = "node_modules missing (run scripts/setup.sh)"
    else:
        g = {k: (v.hex() if isinstance(v, bytes) else None) for k, v in ctx.inputs.globals().items()}
        exp = {}
        for case in PURE_CASES:
            e = ctx.inputs.expected(case)
            exp[case] = e.hex() if isinstance(e, bytes) else e
        cfg = {
            "globals": g,
            "expected": exp,
            "cases": {c: src for c, src in PURE_CASES.items() if ctx.wasm_cases is None or c in ctx.wasm_cases},
            "reps": ctx.reps,
            "target_ms": ctx.wasm_target_s * 1000.0,
        }
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(WASM_SCRIPT)
            script = f.name
        try:
            p = subprocess.run(
                [node, RUNNER_MJS, "--timeout", str(ctx.wasm_timeout), "--script", script, json.dumps(cfg)],
                capture_output=True,
                text=True,
                timeout=ctx.wasm_timeout + 30,
                env=paths.node_env(),
            )
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("PNPBENCH ")]
            if p.returncode != 0 or not line:
                tail = (p.stderr.strip().splitlines() or ["exit status %d" % p.returncode])[-1]
                res["_na"] = "MicroPython run failed: %s" % tail
            else:
                res.update(json.loads(line[-1][len("PNPBENCH ") :]))
        except subprocess.TimeoutExpired:
            res["_na"] = "MicroPython run timed out"
        finally:
            os.unlink(script)
    env = res.get("_env")
    if env:
        ctx.env["micropython"] = ".".join(str(x) for x in env["version"])
    ctx._wasm_results = res
    return res


def wasm_pure(case):
    def probe(ctx):
        res = _wasm_results(ctx)
        if res["_na"]:
            return Measurement.na(res["_na"])
        r = res.get(case)
        if r is None:
            return Measurement.na("no result")
        if "na" in r:
            return Measurement.na(r["na"])
        return Measurement(samples=[ms / 1000.0 for ms in r["samples_ms"]], inner=r["inner"])

    return probe


# key -> (implementation label, probe function)
PROBES = {}
for _case in PURE_CASES:
    PROBES[_case + "/cryptography"] = ("CPython cryptography (OpenSSL)", cpython_cryptography(_case))
    PROBES[_case + "/cpython"] = ("CPython pure Python", cpython_pure(_case))
    PROBES[_case + "/wasm"] = ("MicroPython wasm pure Python", wasm_pure(_case))


PROBES["x25519_rfc/cpython"] = ("plain RFC 7748 ladder, CPython", cpython_pure("x25519_rfc"))
PROBES["x25519_rfc/wasm"] = ("plain RFC 7748 ladder, MicroPython wasm", wasm_pure("x25519_rfc"))


class Row:
    """One line of the table: probe beside baseline (None: this row is the baseline)."""

    def __init__(self, operation, probe, baseline=None, also=None, budget=None):
        self.operation = operation
        self.probe = probe
        self.baseline = baseline
        self.also = also  # a second reference shown after the baseline ratio
        self.budget = budget  # max ratio probe/baseline, or None


DERIVED = {}   # derived probe -> the probe it is computed from


def scaled(key, factor, label):
    """A derived baseline: another probe's samples times `factor` (e.g. 4 X25519 operations)."""
    def probe(ctx):
        m = measure(ctx, key)
        if not m.ok:
            return Measurement.na(m.note or "n/a")
        return Measurement(samples=[x * factor for x in m.samples], inner=m.inner)
    return (label, probe)


PROBES["4x25519/cpython"] = scaled("x25519/cpython", 4, "4 × X25519 CPython pure")
PROBES["4x25519/wasm"] = scaled("x25519/wasm", 4, "4 × X25519 MicroPython wasm pure")
DERIVED["4x25519/cpython"] = "x25519/cpython"
DERIVED["4x25519/wasm"] = "x25519/wasm"

ROWS = []
for _case, _op in (
    ("x25519", "X25519 scalar mult"),
    ("ed25519_sign", "Ed25519 sign (256 B)"),
    ("ed25519_verify", "Ed25519 verify (256 B)"),
):
    ROWS.append(Row(_op, _case + "/cryptography"))
    ROWS.append(Row(_op, _case + "/cpython", baseline=_case + "/cryptography"))
    ROWS.append(Row(_op, _case + "/wasm", baseline=_case + "/cryptography", also=_case + "/cpython"))
# pnpipsec's big-integer ladder (what runs where the port has no native emitters) beside
# RFC 7748's pseudo-code transcribed literally (RFC_LADDER), timed in the same process
# and interleaved; goal: at most 0.7x on the wasm port.
X25519_RFC_GOAL = 0.7
ROWS.append(Row("X25519 vs plain RFC ladder (wasm)", "x25519_rfc/wasm"))
ROWS.append(Row("X25519 vs plain RFC ladder (wasm)", "x25519/wasm", baseline="x25519_rfc/wasm",
                budget=X25519_RFC_GOAL))
ROWS.append(Row("X25519 vs plain RFC ladder (cpython)", "x25519_rfc/cpython"))
ROWS.append(Row("X25519 vs plain RFC ladder (cpython)", "x25519/cpython", baseline="x25519_rfc/cpython"))
# DESIGN section 12: handshake CPU per node <= 1.3x the X25519 operations it must do
# (2 per node: 4 for the pair both rows measure).
for _case, _op in (("handshake_null", "IKE handshake NULL, 2 nodes"),
                   ("handshake_psk", "IKE handshake PSK, 2 nodes")):
    ROWS.append(Row(_op, _case + "/cpython", baseline="4x25519/cpython", budget=1.3))
    ROWS.append(Row(_op, _case + "/wasm", baseline="4x25519/wasm", budget=1.3))

from pnp import bench_esp as _bench_esp  # noqa: E402  (ESP per-packet rows)
_bench_esp.register(PROBES, ROWS, Row, time_callable, Measurement)


# ------------------------------------------------------------------ running
def measure(ctx, key):
    if key not in ctx.cache:
        label, fn = PROBES[key]
        try:
            m = fn(ctx)
        except Exception as e:  # noqa: BLE001 - a probe must never crash the bench
            m = Measurement.na("%s: %s" % (type(e).__name__, e))
        ctx.cache[key] = m
    return ctx.cache[key]


def _ratio(m, b):
    if m.ok and b is not None and b.ok and b.value:
        return m.value / b.value
    return None


def collect(ctx, rows):
    out = []
    for row in rows:
        m = measure(ctx, row.probe)
        d = {
            "operation": row.operation,
            "implementation": PROBES[row.probe][0],
            "probe": row.probe,
            **m.to_json(),
            "baseline": row.baseline,
        }
        if row.baseline:
            b = measure(ctx, row.baseline)
            d["baseline_implementation"] = PROBES[row.baseline][0]
            d["baseline_median"] = b.value
            d["ratio"] = _ratio(m, b)
            if row.budget is not None:
                d["budget"] = row.budget
                d["within_budget"] = None if d["ratio"] is None else d["ratio"] <= row.budget
        if row.also:
            a = measure(ctx, row.also)
            d["also"] = row.also
            d["also_implementation"] = PROBES[row.also][0]
            d["also_ratio"] = _ratio(m, a)
        out.append(d)
    return out


def _short(label):
    return label.replace(" (OpenSSL)", "").replace(" pure Python", " pure")


def render(results, ctx):
    head = ("operation", "implementation", "median", "±", "vs baseline (same run)")
    lines = []
    prev_op = None
    for d in results:
        op = d["operation"] if d["operation"] != prev_op else ""
        prev_op = d["operation"]
        if d.get("na"):
            lines.append((op, d["implementation"], "n/a", "", "(%s)" % d["na"]))
            continue
        med = fmt_value(d["median"], d["unit"])
        spread = "" if d.get("spread") is None else "%.0f%%" % (d["spread"] * 100)
        if not d["baseline"]:
            cmp_ = "baseline"
        elif d.get("ratio") is None:
            cmp_ = "baseline n/a"
        else:
            cmp_ = "%.3gx %s" % (d["ratio"], _short(d["baseline_implementation"]))
            if "budget" in d:
                cmp_ += " (budget ≤%.3gx: %s)" % (d["budget"], "ok" if d["within_budget"] else "OVER")
        if d.get("also_ratio") is not None:
            cmp_ += ", %.3gx %s" % (d["also_ratio"], _short(d["also_implementation"]))
        lines.append((op, d["implementation"], med, spread, cmp_))
    widths = [max(len(r[i]) for r in lines + [head]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    out = [fmt(head), fmt(tuple("-" * w for w in widths))]
    out += [fmt(r) for r in lines]
    return "\n".join(out)


def environment(ctx):
    env = {"python": platform.python_version(), "machine": platform.machine()}
    try:
        import cryptography

        env["cryptography"] = cryptography.__version__
    except ImportError:
        pass
    node = shutil.which("node")
    if node and ctx.wasm:
        try:
            env["node"] = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    env.update(ctx.env)
    return env


def add_arguments(p):
    p.add_argument("--reps", type=int, default=9, help="repetitions per measurement; the median is shown (default 9)")
    p.add_argument("--target-ms", type=float, default=30.0,
                   help="approximate duration of one sample; fast operations are looped (default 30)")
    p.add_argument("--only", metavar="TEXT", help="only rows whose operation contains TEXT (case-insensitive)")
    p.add_argument("--no-wasm", action="store_true", help="skip the MicroPython WebAssembly measurements")
    p.add_argument("--wasm-timeout", type=float, default=600, help="seconds allowed for the MicroPython run")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--no-footprint", action="store_true", help="skip the .mpy size and heap figures")
    p.add_argument("--no-qemu", action="store_true",
                   help="skip the Cortex-M3 instruction counts (qemu, pnpipsec frozen; shown when "
                        "the firmware exists: python -m pnp.bench_qemu --build)")


def run(args) -> int:
    if args.reps < 1:
        print("pnp bench: --reps must be at least 1", file=sys.stderr)
        return 2
    ctx = Context(args.reps, args.target_ms / 1000.0, wasm=not args.no_wasm, wasm_timeout=args.wasm_timeout)
    rows = ROWS
    if args.only:
        rows = [r for r in ROWS if args.only.lower() in r.operation.lower()]
    qemu = None
    qkeys = None
    if not getattr(args, "no_qemu", False):
        from pnp import bench_qemu
        qkeys = bench_qemu.keys_for(args.only)
    keys = [k for r in rows for k in (r.probe, r.baseline, r.also) if k]
    ctx.wasm_cases = {DERIVED.get(k, k).split("/")[0] for k in keys if k.endswith("/wasm")}
    t0 = time.perf_counter()
    results = collect(ctx, rows)
    if qkeys:
        # Cortex-M3 instruction counts, each beside the plain RFC 7748 ladder run on the
        # same board in the same boot (pnp.bench_qemu)
        qemu = bench_qemu.measure(qkeys)
    elapsed = time.perf_counter() - t0
    env = environment(ctx)
    footprint = None
    if not args.no_footprint and not args.only:
        # DESIGN section 12: firmware .mpy size and MicroPython heap beside their budgets
        from pnp import footprint as fp
        lines = []
        fp.report(out=lines.append, as_json=args.json, heap=not args.no_wasm)
        footprint = json.loads(lines[0]) if args.json else lines
    if args.json:
        json.dump({"reps": args.reps, "env": env, "elapsed_s": elapsed, "rows": results,
                   "footprint": footprint, "qemu": qemu}, sys.stdout, indent=1)
        print()
    else:
        print("pnp bench: median of %d samples per figure; ± = half the interquartile range;" % args.reps)
        print("ratios are against a baseline measured in the same run. %s" % ", ".join(
            "%s %s" % kv for kv in sorted(env.items())))
        print()
        print(render(results, ctx))
        print()
        if qemu is not None:
            for line in bench_qemu.render(qemu):
                print(line)
            print()
        for line in footprint or ():
            print(line)
        if footprint:
            print()
        print("(%.1f s)" % elapsed)
    return 0
