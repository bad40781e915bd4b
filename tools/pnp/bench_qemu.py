"""Instruction counts on a Cortex-M3 (MicroPython's qemu port, MPS2-AN385) for `pnp bench`.

The firmware is the qemu board's (boards/qemu/build.py, the one qemu builder) in its
`port` profile with pnpipsec frozen in: MicroPython v1.27.0 `ports/qemu`
(BOARD=MPS2_AN385), the port's own 143,360-byte heap, frozen bytecode as a real board
would carry the package (the same firmware the host_tests/mp modules run on).
`python -m pnp.bench_qemu --build` builds it (needs gcc-arm-none-eabi and
libnewlib-arm-none-eabi and the v1.27.0 tarball); the builder keys it on the frozen
sources, and the bench rebuilds a stale firmware when it can. PNP_QEMU_FIRMWARE_FROZEN
(as in host_tests/mpports.py) names another firmware.elf with pnpipsec frozen in; it is
used as is.

Counting: qemu runs with `-icount shift=0`, one guest instruction per virtual
nanosecond, so a difference of time.ticks_us() inside the guest is instructions / 1000
(resolution 1,000 instructions; the 1 ms SysTick interrupt's own instructions are
included, as they would be on a board). Every figure is one run of one operation;
runs under -icount are deterministic, so the bench boots the firmware twice and checks
that both runs give the same counts (`agree`, see AGREE_REL). They are not bit-exact:
code that allocates nothing repeats to the +-1 us truncation of each timed call, but
operations that run the garbage collector differ by up to ~0.3 % between boots. The
likely cause is the conservative GC scan of the C stack, which holds stale words whose
values depend on where the 1 ms SysTick interrupts fell while the script was still
arriving over the serial line (host timing). Each timed call starts on a SysTick edge,
which removed most of it (0.4 % before). Each operation runs twice per boot; the
second call is the figure (the first pays one-time costs: PureAES tables, Ed25519's
comb table; JSON `first_call_instructions`); the viper kernel's compilation, where the
port has native emitters, or its import where the firmware has it frozen as native code,
is counted on its own (env `kernel_compile_kticks`).

Baseline (same run, same board): the plain RFC 7748 section 5 ladder written directly
in Python (PLAIN_LADDER = pnp.bench.RFC_LADDER, the same source the wasm row times), on the
same scalar and u; the X25519 rows show
count / plain-ladder count. Results are checked on the board against expected values
computed on the host (the `cryptography` package when present).

Seconds on real boards are ESTIMATES from the M3 counts (see TARGETS for the CPI
assumption and its sources): the RP2040's Cortex-M0+ runs Thumb-1 (ARMv6-M), so its
instruction counts differ from the M3's Thumb-2 ones; the ESP32 is Xtensa LX6, another
ISA, so its estimate is rougher still.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

from pnp.bench import RFC_LADDER

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
QEMU = "qemu-system-arm"
QEMU_ARGS = ["-machine", "mps2-an385", "-nographic", "-monitor", "null", "-semihosting",
             "-icount", "shift=0", "-serial", "pty"]

# (key, operation label); "ladder" is the baseline.
CASES = [
    ("ladder", "plain RFC 7748 ladder (bench script)"),
    ("x25519_base", "X25519 fixed-base: x25519.public(k)"),
    ("x25519_var", "X25519 variable-base: x25519.x25519(k, u)"),
    ("ed25519_sign", "Ed25519 sign (256 B)"),
    ("ed25519_verify", "Ed25519 verify (256 B)"),
    ("handshake", "IKE NULL handshake, initiator engine (DH + AUTH)"),
    ("proof", "proof make + check (pnpipsec.proof)"),
    ("handshake_proof", "NULL handshake + proof, board side"),
    ("esp_seal", "ESP seal 1 KiB (EspOut.seal)"),
    ("esp_open", "ESP open 1 KiB (EspIn.open)"),
]
LABELS = dict(CASES)
DERIVED = {"handshake_proof": ("handshake", "proof")}   # sums measured on the board

# Two boots "agree" when their counts differ by at most the +-1 us truncation of each
# timed call or AGREE_REL of the count, whichever is larger. Measured: operations that
# never run the GC repeat to the truncation; GC-heavy ones differed by up to 0.26 %.
AGREE_REL = 0.005

# Cortex-M3 cycles per instruction assumed for MicroPython's VM (load- and branch-heavy C):
M3_CPI = 1.4
M3_COREMARK_PER_MHZ = 3.32
TARGETS = [
    {
        "board": "RP2040",
        "core": "Cortex-M0+ (ARMv6-M, Thumb-1)",
        "mhz": 133,
        "coremark_per_mhz": 1.82,
        "cycles_per_m3_instruction": round(M3_CPI * M3_COREMARK_PER_MHZ / 1.82, 2),
        "assumption": (
            "cycles = M3 instructions x %.1f (M3 CPI) x %.2f/1.82 (CoreMark/MHz M3 / RP2040). "
            "M3 CPI %.1f assumed from ARM's Cortex-M3 TRM (DDI 0337) instruction timings: "
            "1 cycle ALU/MUL, 2 for loads (pipelined back-to-back), 1+P (P=1..3) for taken "
            "branches. CoreMark/MHz: Cortex-M3 %.2f (ARM's published figure, e.g. Table 3.2 of "
            "'ARM-Based Microcontroller Projects Using MBED'), RP2040 1.82 (227.96 at 125 MHz, "
            "arduino-pico GCC -Os, github.com/PaulStoffregen/CoreMark pull 15). The ratio "
            "covers Thumb-1's extra instructions (no IT, CBZ, divide, wide immediates, most "
            "ops on r0-r7 only) and the M0+'s 2-cycle loads/taken branches, but not "
            "MicroPython running from XIP flash through a 16 KB cache; rough, probably low"
            % (M3_CPI, M3_COREMARK_PER_MHZ, M3_CPI, M3_COREMARK_PER_MHZ)),
    },
    {
        "board": "ESP32",
        "core": "Xtensa LX6 (another ISA)",
        "mhz": 240,
        "coremark_per_mhz": 1.43,
        "cycles_per_m3_instruction": round(M3_CPI * M3_COREMARK_PER_MHZ / 1.43, 2),
        "assumption": (
            "cycles = M3 instructions x %.1f (M3 CPI, as above) x %.2f/1.43 (CoreMark/MHz M3 / "
            "ESP32 one core). ESP32 1.43 = 688 iterations/s on both cores at 240 MHz, NuttX "
            "GCC 11 (github.com/apache/nuttx pull 8221), halved. Xtensa is another ISA, so the "
            "M3 count is only a proxy; flash-cache misses are not modelled: rough estimate"
            % (M3_CPI, M3_COREMARK_PER_MHZ)),
    },
]


# ------------------------------------------------------------------ firmware
def qemu_build():
    """boards/qemu/build.py as a module."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("pnp_qemu_build", os.path.join(REPO, "boards", "qemu", "build.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def elf_path(rev=None):
    """firmware.elf of the working tree's build, or of the --rev build."""
    return qemu_build().firmware_path("port", True, tag="rev" if rev else None)


def can_build():
    """None when a build is possible, else why not."""
    missing = [m for m in qemu_build().prerequisites() if not m.startswith("qemu-system-arm")]
    return "; ".join(missing) if missing else None


def build(log=None, rev=None):
    """Build (or refresh) the frozen firmware from this working tree, or from git
    revision rev (e.g. "HEAD": committed code only); returns the path of firmware.elf."""
    qb = qemu_build()
    say = (lambda s: print(s, file=log)) if log is not None else (lambda s: None)
    if rev is None:
        return qb.build("port", True, log=say)
    root = os.path.join(qb.CACHE, "rev-src")      # firmware/ of that revision
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    arch = subprocess.run(["git", "-C", REPO, "archive", "--format=tar", rev, "firmware"],
                          capture_output=True, check=True).stdout
    import io
    with tarfile.open(fileobj=io.BytesIO(arch)) as t:
        t.extractall(root)
    git = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", rev], capture_output=True,
                         text=True, check=True).stdout.strip()
    return qb.build("port", True, log=say, firmware_dir=os.path.join(root, "firmware"), tag="rev", git=git)


def read_stamp(elf):
    """What the builder recorded about elf (git, key, built), or None."""
    try:
        with open(os.path.join(os.path.dirname(elf), "firmware.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def firmware(rebuild_stale=True, build_missing=False):
    """(path, note): the frozen firmware, refreshed when stale and buildable; path None
    with the reason when there is none to run."""
    if os.environ.get("PNP_QEMU_FIRMWARE_FROZEN"):
        p = os.environ["PNP_QEMU_FIRMWARE_FROZEN"]
        return (p, None) if os.path.exists(p) else (None, "PNP_QEMU_FIRMWARE_FROZEN=%s not found" % p)
    if shutil.which(QEMU) is None:
        return None, "%s not found (apt-get install qemu-system-arm)" % QEMU
    qb = qemu_build()
    elf = elf_path()
    have = os.path.exists(elf)
    if have and qb.current("port", True):
        return elf, None
    why = can_build()
    if not have and not build_missing:
        return None, "qemu firmware not built (python -m pnp.bench_qemu --build)"
    if why is not None:
        if have:
            return None, "qemu firmware is stale (its sources changed) and cannot be rebuilt: " + why
        return None, why
    if have and not rebuild_stale:
        return None, "qemu firmware is stale (python -m pnp.bench_qemu --build)"
    try:
        build()
    except qb.BuildError as e:
        raise RuntimeError(str(e))
    return elf, None


# ------------------------------------------------------------------ running a script
def mpremote_cmd():
    for d in (os.path.dirname(sys.executable), os.path.join(REPO, ".venv", "bin")):
        p = os.path.join(d, "mpremote")
        if os.path.exists(p):
            return [p]
    p = shutil.which("mpremote")
    if p:
        return [p]
    return [sys.executable, "-m", "mpremote"]


def _mpports():
    """host_tests.mpports (scripts/build-micropython.sh's helpers) when importable."""
    if REPO not in sys.path:
        sys.path.append(REPO)
    try:
        from host_tests import mpports
        return mpports if hasattr(mpports, "run_qemu_script") else None
    except ImportError:
        return None


def run_script(elf, script, timeout=600):
    """Boot elf under qemu (-icount shift=0), run script with `mpremote run` over the
    guest's serial pty, return its stdout. Raises RuntimeError on failure. Uses
    host_tests.mpports.run_qemu_script when the checkout has it, else the same steps here."""
    mp = _mpports()
    if mp is not None:
        return mp.run_qemu_script(elf, script, timeout=timeout)
    with tempfile.TemporaryDirectory(prefix="pnp-qemu-") as tmp:
        path = os.path.join(tmp, "bench.py")
        with open(path, "w") as f:
            f.write(script)
        qlog = open(os.path.join(tmp, "qemu.out"), "w+")
        q = subprocess.Popen([QEMU] + QEMU_ARGS + ["-kernel", elf], stdout=qlog, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        try:
            pty = None
            deadline = time.monotonic() + 20
            while pty is None and time.monotonic() < deadline:
                qlog.seek(0)
                m = re.search(r"(/dev/pts/\d+)", qlog.read())
                if m:
                    pty = m.group(1)
                elif q.poll() is not None:
                    break
                else:
                    time.sleep(0.05)
            if pty is None:
                qlog.seek(0)
                raise RuntimeError("qemu did not start: %s" % qlog.read().strip()[-300:])
            p = subprocess.run(mpremote_cmd() + ["connect", pty, "run", path], capture_output=True,
                               text=True, timeout=timeout)
            if p.returncode != 0:
                tail = (p.stderr.strip() or p.stdout.strip() or "exit %d" % p.returncode).splitlines()[-1]
                raise RuntimeError("mpremote run failed: %s" % tail)
            return p.stdout
        except subprocess.TimeoutExpired:
            raise RuntimeError("qemu run timed out after %d s" % timeout) from None
        finally:
            q.kill()
            q.wait()
            qlog.close()


# ------------------------------------------------------------------ the board script
# The baseline: RFC 7748 section 5's pseudo-code transcribed literally, the same
# source `pnp bench` times on wasm and CPython (pnp.bench.RFC_LADDER: cswap by mask
# arithmetic, every operation reduced mod p, inversion by z^(p-2)).
PLAIN_LADDER = RFC_LADDER + 'plain_x25519 = x25519_rfc\n'

BOARD_SCRIPT = r'''
import gc, sys, time, hashlib, json
from binascii import hexlify, unhexlify
CFG = json.loads(%(cfg)r)
G = {}
for _k in CFG["inputs"]:
    G[_k] = unhexlify(CFG["inputs"][_k])
%(ladder)s

NCALLS = [0]


def count(fn):
    # Start on a SysTick edge: the 1 ms interrupts then land on the same instructions
    # in every boot. Without this, GC-heavy operations differed by up to 0.4 %% between
    # boots (interrupt frames left different stale words on the stack, which the
    # conservative GC scan reads); with it, only the 1 us truncation remains.
    gc.collect()
    NCALLS[0] += 1
    t = time.ticks_ms()
    while time.ticks_ms() == t:
        pass
    t0 = time.ticks_us()
    out = fn()
    return time.ticks_diff(time.ticks_us(), t0), out


class Rand:
    def __init__(self, seed):
        self.seed = seed
        self.n = 0

    def __call__(self, n):
        out = b""
        while len(out) < n:
            self.n += 1
            out += hashlib.sha256(self.seed + self.n.to_bytes(4, "big")).digest()
        return out[:n]


def hexo(b):
    return hexlify(b).decode()


def case_ladder():
    k, r = count(lambda: plain_x25519(G["K"], G["U"]))
    return k, hexo(r) == CFG["expect"]["x25519"]


def case_x25519_base():
    from pnpipsec.crypto import x25519
    k, r = count(lambda: x25519.public(G["K"]))
    return k, hexo(r) == CFG["expect"]["x25519_base"]


def case_x25519_var():
    from pnpipsec.crypto import x25519
    k, r = count(lambda: x25519.x25519(G["K"], G["U"]))
    return k, hexo(r) == CFG["expect"]["x25519"]


def case_ed25519_sign():
    from pnpipsec.crypto import ed25519
    k, r = count(lambda: ed25519.sign(G["SEED"], G["MSG"]))
    return k, hexo(r) == CFG["expect"]["sig"]


def case_ed25519_verify():
    from pnpipsec.crypto import ed25519
    k, r = count(lambda: ed25519.verify(G["PUB"], G["MSG"], G["SIG"]))
    return k, r is True


def case_handshake():
    # Two engines in memory; only the board's (initiator) engine calls are counted:
    # initiate() and each receive() of a responder datagram, which include its X25519
    # keypair and shared secret, the key schedule, AUTH (NULL) and the CHILD SA keys.
    # Then the proof on the board's side: make ours (Ed25519 sign over our AUTH octets)
    # and check the peer's (verify over the peer's AUTH octets), with pnpipsec.proof.
    from pnpipsec.ike.engine import Engine
    from pnpipsec.ike.sa import LocalIdentity, PeerConfig
    from pnpipsec.crypto import ed25519
    from pnpipsec import proof
    aes = AES()
    a = Engine(Rand(b"board"), aes, LocalIdentity())
    b = Engine(Rand(b"peer"), aes, LocalIdentity())
    A = ("fd00::1", 4500)
    B = ("fd00::2", 4500)
    total = 0
    cfg = PeerConfig(auth="null")
    k, _ = count(lambda: a.initiate(B, cfg, 0))
    total += k
    for _ in range(6):
        moved = False
        for d, to in a.pop_datagrams():
            moved = True
            b.receive(d, A, 0)
        for d, to in b.pop_datagrams():
            moved = True
            k, _ = count(lambda: a.receive(d, B, 0))
            total += k
        if not moved:
            break
    ea = [e for e in a.pop_events()]
    eb = [e for e in b.pop_events()]
    ok = [e.kind for e in ea] == ["ike_up", "child_up"] and [e.kind for e in eb] == ["ike_up", "child_up"]
    ok = ok and ea[1].child.enc_out == eb[1].child.enc_in and ea[1].child.int_in == eb[1].child.int_out
    sa_a = ea[0].sa
    sa_b = eb[0].sa
    peer_data = proof.make(ed25519.sign, G["PSEED"], G["PPUB"], b.auth_octets(sa_b, True))
    ours = a.auth_octets(sa_a, True)
    theirs = a.auth_octets(sa_a, False)
    kp, mine = count(lambda: proof.make(ed25519.sign, G["SEED"], G["PUB"], ours))
    kc, got = count(lambda: proof.check(ed25519.verify, peer_data, theirs))
    ok = ok and got == G["PPUB"] and proof.check(ed25519.verify, mine, b.auth_octets(sa_b, False)) == G["PUB"]
    RES["proof"] = {"kticks": kp + kc, "ok": ok, "make": kp, "check": kc, "calls": 2}
    return total, ok


def case_esp(which):
    from pnpipsec import esp
    aes = AES()
    ek = G["EK"]
    ik = G["IK"]
    payload = G["PAYLOAD"]
    out = esp.EspOut(0x1234, ek, ik, aes, Rand(b"esp"))
    inp = esp.EspIn(0x1234, ek, ik, aes)
    # one packet first (PureAES caches the expanded key; the steady state is measured)
    inp.open(out.seal(payload, 17))
    if which == "seal":
        k, pkt = count(lambda: out.seal(payload, 17))
        return k, inp.open(pkt) == (17, payload)
    pkt = out.seal(payload, 17)
    k, r = count(lambda: inp.open(pkt))
    return k, r == (17, payload)


def AES():
    from pnpipsec.crypto import aes
    return aes.default_provider()


RES = {}
ENV = {"machine": sys.implementation._machine, "version": list(sys.implementation.version[:3])}
gc.collect()
ENV["mem_free"] = gc.mem_free()
try:
    from pnpipsec.crypto import fe25519
    _k, _kern = count(fe25519.kernel)
    ENV["field"] = ("big-integer (no native emitter)" if _kern is None else
                    "viper (fe25519, frozen native code)" if "pnpipsec.crypto._fe25519_native" in sys.modules
                    else "viper (fe25519, compiled on the board)")
    if _kern is not None:
        ENV["kernel_compile_kticks"] = _k
except ImportError:
    ENV["field"] = "big-integer (no fe25519 module)"
except Exception as e:
    ENV["field"] = "big-integer (fe25519 failed: %%s: %%s)" %% (type(e).__name__, e)
try:
    ENV["aes"] = AES().__class__.__name__
except Exception as e:
    ENV["aes"] = "error: %%s" %% e
for case in CFG["cases"]:
    try:
        # twice: the first call pays one-time costs (PureAES tables, the viper kernel's
        # compilation where the port has native emitters); the second is the figure
        first = None
        for _ in range(2):
            NCALLS[0] = 0
            if case.startswith("esp_"):
                k, ok = case_esp(case[4:])
            else:
                k, ok = globals()["case_" + case]()
            if first is None:
                first = k
        RES[case] = {"kticks": k, "ok": ok, "calls": NCALLS[0] - (2 if case == "handshake" else 0),
                     "first_kticks": first}
    except Exception as e:
        RES[case] = {"error": "%%s: %%s" %% (type(e).__name__, e)}
    gc.collect()
print("PNPQEMU " + json.dumps({"env": ENV, "res": RES}))
'''


def _det(label, n):
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(b"pnp bench %s %d" % (label.encode(), i)).digest()
        i += 1
    return out[:n]


def inputs():
    """Inputs (same scalar/u/seed/message as the CPython and wasm rows) and expected
    outputs: from `cryptography` when present, else from pnpipsec on CPython."""
    k, u = _det("x25519 scalar", 32), _det("x25519 u", 32)
    seed, msg = _det("ed25519 seed", 32), _det("ed25519 message", 256)
    pseed = _det("ed25519 peer seed", 32)
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
        from cryptography.hazmat.primitives import serialization as s
        raw, rawpub = s.Encoding.Raw, s.PublicFormat.Raw
        sk = x25519.X25519PrivateKey.from_private_bytes(k)
        base = sk.public_key().public_bytes(raw, rawpub)
        shared = sk.exchange(x25519.X25519PublicKey.from_public_bytes(u))
        esk = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        pub = esk.public_key().public_bytes(raw, rawpub)
        sig = esk.sign(msg)
        ppub = ed25519.Ed25519PrivateKey.from_private_bytes(pseed).public_key().public_bytes(raw, rawpub)
        oracle = "cryptography"
    except ImportError:
        from pnpipsec.crypto import ed25519 as E, x25519 as X
        base, shared = X.public(k), X.x25519(k, u)
        pub, sig, ppub = E.public_key(seed), E.sign(seed, msg), E.public_key(pseed)
        oracle = "pnpipsec on CPython"
    ins = {"K": k, "U": u, "SEED": seed, "MSG": msg, "PUB": pub, "SIG": sig, "PSEED": pseed, "PPUB": ppub,
           "EK": _det("esp enc", 16), "IK": _det("esp int", 32), "PAYLOAD": _det("esp payload", 1024)}
    expect = {"x25519": shared, "x25519_base": base, "sig": sig}
    return ins, expect, oracle


def board_script(cases):
    ins, expect, _ = inputs()
    cfg = {"cases": list(cases), "inputs": {k: v.hex() for k, v in ins.items()},
           "expect": {k: v.hex() for k, v in expect.items()}}
    return BOARD_SCRIPT % {"cfg": json.dumps(cfg), "ladder": PLAIN_LADDER}


def run_once(elf, cases, timeout=900):
    out = run_script(elf, board_script(cases), timeout)
    line = [ln for ln in out.splitlines() if ln.startswith("PNPQEMU ")]
    if not line:
        raise RuntimeError("no result from the board: %s" % (out.strip().splitlines() or ["(nothing)"])[-1])
    return json.loads(line[-1][len("PNPQEMU "):])


def _board_cases(keys):
    """Cases the board must run for these row keys (handshake also yields proof)."""
    need = []
    for k in keys:
        for c in DERIVED.get(k, (k,)):
            c = "handshake" if c == "proof" else c
            if c not in need:
                need.append(c)
    return need


def measure(keys=None, runs=2, build_missing=False, timeout=900, elf=None):
    """Counts for the given row keys (default: all) plus the baseline, `runs` boots.

    Returns {"na": reason} or {"firmware": ..., "env": ..., "runs": n, "agree": bool,
    "rows": [{key, operation, instructions, ok, runs: [...], ratio_vs_plain_ladder,
    estimates: [{board, mhz, seconds}]}], "targets": TARGETS, "baseline": "ladder"}."""
    keys = [k for k, _ in CASES] if keys is None else list(keys)
    if "ladder" not in keys:
        keys = ["ladder"] + keys
    if elf is None:
        try:
            elf, why = firmware(build_missing=build_missing)
        except (OSError, subprocess.CalledProcessError, RuntimeError) as e:
            return {"na": "firmware build failed: %s" % e}
        if elf is None:
            return {"na": why}
    cases = _board_cases(keys)
    t0 = time.perf_counter()
    results = []
    try:
        for _ in range(runs):
            results.append(run_once(elf, cases, timeout))
    except (RuntimeError, OSError, ValueError) as e:
        return {"na": str(e)}
    elapsed = time.perf_counter() - t0
    counts = [r["res"] for r in results]

    def figure(res, key):
        """(instructions, timed calls, error) of one boot's results."""
        total = calls = 0
        ok = True
        for p in DERIVED.get(key, (key,)):
            v = res.get(p)
            if v is None or "error" in v:
                return None, 0, (v or {}).get("error", "no result")
            total += v["kticks"] * 1000
            calls += v.get("calls", 1)
            ok = ok and v["ok"]
        return total, calls, (None if ok else "WRONG RESULT (differs from %s)" % oracle)

    oracle = inputs()[2]
    rows = []
    base = figure(counts[0], "ladder")[0]
    for key in keys:
        per_run = [figure(c, key) for c in counts]
        n, calls, err = per_run[0]
        vals = [x[0] for x in per_run]
        # each timed call reads ticks_us twice: +-1 us (1,000 instructions) of truncation
        spread = None if None in vals else max(vals) - min(vals)
        d = {"key": key, "operation": LABELS[key], "unit": "instructions", "instructions": n,
             "runs": vals, "timed_calls": calls, "spread": spread,
             "agree": spread is not None and spread <= max(1000 * calls, AGREE_REL * (n or 0))}
        if err:
            d["na"] = err
        firsts = [counts[0].get(p, {}).get("first_kticks") for p in DERIVED.get(key, (key,))]
        if None not in firsts:
            d["first_call_instructions"] = 1000 * sum(firsts)
        if key == "proof":
            v = counts[0].get("handshake", {}) and counts[0].get("proof", {})
            d["make"] = v.get("make", 0) * 1000
            d["check"] = v.get("check", 0) * 1000
        if n is not None and base and key != "ladder":
            d["ratio_vs_plain_ladder"] = n / base
        if n is not None:
            d["estimates"] = [{"board": t["board"], "mhz": t["mhz"],
                               "seconds": n * t["cycles_per_m3_instruction"] / (t["mhz"] * 1e6)} for t in TARGETS]
        rows.append(d)
    stamp = read_stamp(elf)
    env = dict(results[0]["env"])
    return {"firmware": elf, "stamp": stamp, "env": env, "runs": runs, "elapsed_s": elapsed,
            "agree": all(d["agree"] for d in rows), "baseline": "ladder", "rows": rows,
            "oracle": oracle, "targets": TARGETS, "m3_cpi": M3_CPI,
            "counting": "time.ticks_us() difference x 1000 under qemu -icount shift=0 (1 instruction per virtual ns)"}


def keys_for(only):
    """Row keys whose operation contains `only` (case-insensitive); all when None."""
    if not only:
        return [k for k, _ in CASES]
    o = only.lower()
    return [k for k, label in CASES if o in label.lower() or o in k]


def _mi(n):
    return "%.2f M" % (n / 1e6) if n >= 1e6 else "%.0f k" % (n / 1e3)


def _sec(s):
    return "%.3g s" % s if s >= 1 else "%.3g ms" % (s * 1e3)


def max_spread(q):
    """Largest relative difference between boots over the rows."""
    return max([d["spread"] / d["instructions"] for d in q.get("rows", ())
                if d.get("spread") is not None and d.get("instructions")] or [0.0])


def render(q):
    """Text of the section (list of lines)."""
    title = "Cortex-M3 instruction counts (MicroPython v1.27.0 qemu MPS2-AN385, pnpipsec frozen, -icount shift=0)"
    if "na" in q:
        return [title + ": n/a (%s)" % q["na"]]
    env = q["env"]
    st = q.get("stamp") or {}
    lines = [title,
             "one run per figure; %d boots agree (within 1,000 instructions per timed call or %.1f %%): %s; AES provider on the board: %s; firmware %s (git %s); "
             "results checked against %s" % (q["runs"], AGREE_REL * 100, ("yes, largest difference %.3f %%" % (100 * max_spread(q))) if q["agree"] else "NO",
                                               env.get("aes"), q["firmware"], st.get("git", "?"), q["oracle"])]
    lines.append("field arithmetic: %s%s; mem_free at start %s B" % (
        env.get("field", "?"), "" if "kernel_compile_kticks" not in env else
        " (its one-time set-up: %s instructions)" % _mi(env["kernel_compile_kticks"] * 1000),
        env.get("mem_free")))
    head = ("operation", "M3 instructions", "vs plain ladder (same run)", "RP2040 133 MHz est.",
            "ESP32 240 MHz est.", "first call")
    table = []
    for d in q["rows"]:
        if d.get("instructions") is None or d.get("na"):
            table.append((d["operation"], "n/a", "(%s)" % d.get("na", "?"), "", "", ""))
            continue
        ratio = "baseline" if d["key"] == "ladder" else "%.3gx" % d["ratio_vs_plain_ladder"]
        if not d["agree"]:
            ratio += " (runs differ: %s)" % ", ".join(str(x) for x in d["runs"])
        est = {e["board"]: _sec(e["seconds"]) for e in d["estimates"]}
        first = d.get("first_call_instructions")
        table.append((d["operation"], _mi(d["instructions"]), ratio, est["RP2040"], est["ESP32"],
                      "" if first is None or first == d["instructions"] else _mi(first)))
    widths = [max(len(r[i]) for r in table + [head]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    lines += [fmt(head), fmt(tuple("-" * w for w in widths))] + [fmt(r) for r in table]
    for t in TARGETS:
        lines.append("%s est. (%s, %d MHz): %.2f cycles per M3 instruction; %s." % (
            t["board"], t["core"], t["mhz"], t["cycles_per_m3_instruction"], t["assumption"]))
    return lines


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(prog="python -m pnp.bench_qemu", description=__doc__.split("\n\n")[0])
    p.add_argument("--build", action="store_true", help="build (or refresh) the frozen qemu firmware first")
    p.add_argument("--rev", metavar="REV", help="with --build: freeze firmware/ of this git revision "
                   "(e.g. HEAD) instead of the working tree, and measure that build")
    p.add_argument("--only", metavar="TEXT", help="only operations containing TEXT (the baseline always runs)")
    p.add_argument("--runs", type=int, default=2, help="boots to compare (default 2)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if a.build:
        why = can_build()
        if why:
            print("cannot build: " + why, file=sys.stderr)
            return 2
        print(build(log=sys.stderr, rev=a.rev), file=sys.stderr)
    q = measure(keys_for(a.only), runs=a.runs, elf=elf_path(rev=True) if a.rev else None)
    if a.json:
        json.dump(q, sys.stdout, indent=1)
        print()
    else:
        print("\n".join(render(q)))
    return 0 if "na" not in q else 1


if __name__ == "__main__":
    sys.exit(main())
