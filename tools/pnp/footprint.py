"""Firmware footprint: the figures of issue 10 ("A core that fits") beside their budgets.

    python -m pnp.footprint [--json] [--no-heap] [--days N]     (`pnp footprint`)

The budgets (issue 10, item 2; docs/architecture.md "Budgets"), measured on the 32-bit
board with the example app, 4 SAs and a handshake in flight:

    heap from .mpy                                   <= 56 KB (HEAP_MPY_BUDGET)
    heap frozen, or from a ROMFS image               <= 24 KB (HEAP_FROZEN_BUDGET)
    .mpy of what the example app imports             <= 40 KB (APP_MPY_BUDGET)
    all of firmware/ as .mpy                         <= 64 KB (MPY_BUDGET)
    the example app on the ESP32 heap profile with 4 peers for a simulated day,
    without MemoryError

The heap figures come from the co-simulation pnp.heapsim: the board is
tools/pnp/heapsim_board.py (the example app, boards/common/pnpboard/app.py, as a plain
MicroPython script) on a 32-bit build of MicroPython's unix port with a fixed heap;
4 CPython peers connect, a 5th is held mid-handshake, and the board's live heap
(gc.collect(); gc.mem_alloc(), above the level before the first pnpipsec import) is the
figure. From .mpy: footprint.unix_port_binary() with a large heap so that it runs
(the row says which heap the ESP32 profile would need: pnp.heapsim --min-heap);
frozen: footprint.frozen_binary() in the ESP32 heap profile (boards/qemu/build.py
PROFILES). The .mpy of the app's import set sums the .mpy files of every pnpipsec
module the board had loaded by the end of that run (lazy imports included).

Secondary figures, kept for comparison with earlier runs (no budget of their own):

* mpy_sizes(compact) -> {relative path: bytes} of firmware/pnpipsec compiled with
  mpy-cross: plain bytecode (compact=False) or `-O2 -X no-source-lines` (compact=True;
  -O2 only drops asserts, of which the firmware has none, so the saving is the line
  tables). size_report() -> both totals beside the 64 KB budget.
* heap_steps(modules) -> the MicroPython snippets (one per runPython call) and
  measure_heap(compact) -> the figures, run in the MicroPython WebAssembly port
  (tools/pnp/mpy_measure.mjs, loading the same npm package as boards/wasm/runner.mjs)
  with ONLY the .mpy files in the VM, so imports load compiled bytecode:
    heap_after_import    live heap after importing every module of the package
                         (except pnpipsec.selftest), bytes;
    handshake_live_peak  largest live heap during an in-memory NULL-auth IKE_SA_INIT +
                         IKE_AUTH between two engines (PureAES, deterministic rand), above
                         the post-import level; both ends share the heap, so a node's
                         share is about half (reported as handshake_live_peak_per_node);
    handshake_step_churn bytes allocated during the busiest engine step (garbage
                         included: this port's gc.collect() only sets a flag and the
                         collection runs between runPython calls, ports/webassembly/main.c
                         gc_collect_top_level), i.e. GC pressure, not a peak; the
                         transient peak inside a step is not observable here;
    heap_by_module       the import increment of each module, in import order;
    heap_after_import_app  the same for what the example main.py imports (APP_MODULES
                         and their dependencies: node, engine, crypto, esp, identity);
    heap_per_sa          live heap one engine holds per established IKE SA + CHILD SA
                         with its two ESP objects (EspOut + EspIn), averaged over 4;
    heap_per_esp_pair    the EspOut + EspIn pair alone, averaged over 4.
  Live heap is "gc.collect(); gc.mem_alloc()" at the start of a runPython call: in this
  port a collection frees nothing inside the call that made the garbage.
* measure_unix_peaks(exe) (PNP_MICROPYTHON32 names a 32-bit build of MicroPython's unix
  port; default: the one scripts/build-micropython.sh builds, .deps/micropython/unix32;
  PNP_MICROPYTHON_PATH adds folders, e.g. one holding extmod/asyncio, for builds
  without frozen modules): the smallest heap that imports the package, and the free
  heap a two-engine handshake needs after the import (balloon + binary search).
* measure_frozen(exe) (PNP_MICROPYTHON32_FROZEN, default .deps/micropython/unix32-frozen,
  names such a binary built with
  FROZEN_MANIFEST=a manifest that includes "$(MPY_DIR)/extmod/asyncio" and
  firmware/manifest.py): heap after importing the frozen package.
* budget_rows(sizes, ...) -> [(what, value, budget, note)]; report() prints them.

Where bytecode can live in flash (so that imports cost little heap): frozen into the
firmware (firmware/manifest.py; any board whose firmware you build), or a ROMFS image
(MicroPython 1.27, MICROPY_VFS_ROM with a romfs partition: e.g. PYBD, alif and some
stm32 / esp8266 builds; ESP32 and RP2 only with a custom build and partition table).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

from pnp import paths

REPO = paths.ROOT   # the checkout, or the installed package data (pnp/paths.py)
FIRMWARE = os.path.join(REPO, "firmware", "pnpipsec")
MEASURE_MJS = os.path.join(REPO, "tools", "pnp", "mpy_measure.mjs")
WASM_PKG = paths.wasm_package() or os.path.join(REPO, "node_modules", "@micropython", "micropython-webassembly-pyscript")

# issue 10, item 2 (docs/architecture.md "Budgets")
MPY_BUDGET = 64 * 1024           # all of firmware/ as .mpy
APP_MPY_BUDGET = 40 * 1024       # .mpy of what the example app imports
HEAP_MPY_BUDGET = 56 * 1024      # app + 4 SAs + a handshake in flight, from .mpy
HEAP_FROZEN_BUDGET = 24 * 1024   # the same, frozen (or from a ROMFS image)
FLASH_NOTE = ("bytecode in flash: frozen (any board whose firmware you build), or ROMFS "
              "(MicroPython 1.27 MICROPY_VFS_ROM + romfs partition: e.g. PYBD, alif, some "
              "stm32/esp8266 builds; ESP32/RP2 only with a custom build and partition)")
COMPACT_FLAGS = ["-O2", "-X", "no-source-lines"]
N_SA = 4
SKIP_IMPORT = ("pnpipsec.selftest",)


def _sources():
    out = []
    for d, dirs, files in os.walk(FIRMWARE):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__" and not x.startswith("."))
        for f in sorted(files):
            if f.endswith(".py"):
                out.append(os.path.join(d, f))
    return out


def modules():
    """Dotted names of every firmware module, packages first."""
    names = []
    for src in _sources():
        rel = os.path.relpath(src, os.path.dirname(FIRMWARE))[:-3].replace(os.sep, ".")
        if rel.endswith(".__init__"):
            rel = rel[:-9]
        names.append(rel)
    return sorted(names, key=lambda n: (n.count("."), n))


def _mpy_cross():
    from pnp.deploy import mpy_cross_cmd
    return mpy_cross_cmd()


def compile_tree(out_dir, compact=False):
    """Compile firmware/pnpipsec into out_dir/pnpipsec/**.mpy; {relative path: size}."""
    cross = _mpy_cross()
    sizes = {}
    base = os.path.dirname(FIRMWARE)
    for src in _sources():
        rel = os.path.relpath(src, base)
        dst = os.path.join(out_dir, rel[:-3] + ".mpy")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        p = subprocess.run(cross + (COMPACT_FLAGS if compact else []) + ["-s", rel, "-o", dst, src],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError("mpy-cross failed on %s: %s" % (rel, (p.stderr or p.stdout).strip()))
        sizes[rel[:-3].replace(os.sep, "/") + ".mpy"] = os.path.getsize(dst)
    return sizes


def mpy_sizes(compact=False):
    tmp = tempfile.mkdtemp(prefix="pnp-fp-")
    try:
        return compile_tree(tmp, compact)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class NoFirmware(RuntimeError):
    """No firmware sources where they should be: nothing to measure (exit status 2)."""


def check_firmware():
    """Raise NoFirmware unless FIRMWARE holds the package's sources (a count of 0 files
    would otherwise sum to 0 bytes and pass every budget)."""
    srcs = _sources()
    if not srcs or not os.path.isfile(os.path.join(FIRMWARE, "__init__.py")):
        raise NoFirmware("no firmware sources under %s (%d .py files): nothing to measure; run it from a "
                         "checkout or an installed pnpipsec package that carries firmware/pnpipsec"
                         % (FIRMWARE, len(srcs)))
    return srcs


def size_report():
    check_firmware()
    plain = mpy_sizes(False)
    compact = mpy_sizes(True)
    return {
        "files": len(plain),
        "plain": sum(plain.values()),
        "compact": sum(compact.values()),
        "budget": MPY_BUDGET,
        "plain_files": plain,
        "compact_files": compact,
    }


# ------------------------------------------------------------------ heap (MicroPython snippets)
_LIVE = "gc.collect()\n_live = gc.mem_alloc()\n"

_HS_HELPERS = """
import hashlib
from pnpipsec import esp as _esp
from pnpipsec.crypto.aes_pure import PureAES
from pnpipsec.ike.engine import Engine
from pnpipsec.ike.sa import LocalIdentity, PeerConfig


class _Rand:
    # deterministic rand(n): SHA-256 in counter mode over a seed
    def __init__(self, seed):
        self.seed = seed
        self.n = 0

    def __call__(self, n):
        out = b""
        while len(out) < n:
            self.n += 1
            out += hashlib.sha256(self.seed + self.n.to_bytes(4, "big")).digest()
        return out[:n]


def _move(src, dst, src_host):
    k = 0
    for d, to in src.pop_datagrams():
        dst.receive(d, (src_host, to[1]), 0)
        k += 1
    return k


def _handshake(e, peer_host, seed):
    b = Engine(_Rand(seed), PureAES(), LocalIdentity())
    e.initiate((peer_host, 500), PeerConfig(), 0)
    for _i in range(6):
        if not (_move(e, b, "fd00:1::1") + _move(b, e, peer_host)):
            break
    return [ev for ev in e.pop_events()]
"""


def heap_steps(module_names=None):
    """The runPython steps (MicroPython source); results are printed as 'FP key v...' lines."""
    mods = [m for m in (module_names or modules()) if m not in SKIP_IMPORT]
    s = []
    s.append("import gc, micropython, sys\ngc.collect()\n")
    s.append(_LIVE + "_base = _live\n")
    # one module per step: the increment of each import (a module's dependencies are
    # charged to the first module that imports them)
    prev = "_base"
    for m in mods:
        s.append("import %s\n" % m)
        s.append(_LIVE + "print('FP heap_module', %r, _live - %s)\n_prev = _live\n" % (m, prev))
        prev = "_prev"
    s.append(_LIVE + "_imp = _live\n_nmods = %d\nprint('FP heap_after_import', _imp - _base, _nmods)\n" % len(mods))
    # helpers for the handshake (their own heap is measured and subtracted)
    s.append(_HS_HELPERS)
    s.append(_LIVE + "_hs0 = _live\n"
             "_ea = Engine(_Rand(b'a'), PureAES(), LocalIdentity())\n"
             "_eb = Engine(_Rand(b'b'), PureAES(), LocalIdentity())\n"
             "_ea.initiate(('fd00:1::2', 500), PeerConfig(), 0)\n"
             "print('FP hs_step', _live - _hs0, gc.mem_alloc() - _live)\n")
    for i in range(8):
        if i % 2 == 0:
            move = "_k = _move(_ea, _eb, 'fd00:1::1')\n"
        else:
            move = "_k = _move(_eb, _ea, 'fd00:1::2')\n"
        s.append(_LIVE + move + "print('FP hs_step', _live - _hs0, gc.mem_alloc() - _live, _k)\n")
    s.append(_LIVE + "_kinds = [ev.kind for ev in _ea.pop_events()]\n"
             "print('FP hs_done', _live - _hs0, ' '.join(_kinds))\n"
             "_ea = None\n_eb = None\n")
    # heap per established SA on one engine (IKE SA + CHILD SA + EspOut + EspIn)
    s.append(_LIVE + "_aes = PureAES()\n_eng = Engine(_Rand(b'n'), _aes, LocalIdentity())\n_held = []\n")
    s.append(_LIVE + "_sa0 = _live\n")
    for i in range(N_SA):
        s.append(
            "for _ev in _handshake(_eng, 'fd00:1::%d', b'peer%d'):\n"
            "    if _ev.kind == 'child_up':\n"
            "        _c = _ev.child\n"
            "        _held.append((_esp.EspOut(_c.spi_out, _c.enc_out, _c.int_out, _aes, _eng.rand),\n"
            "                      _esp.EspIn(_c.spi_in, _c.enc_in, _c.int_in, _aes)))\n"
            "_aes._keys = {}  # PureAES key-schedule cache: cryptolib on the boards keeps none\n"
            % (i + 10, i))
    s.append(_LIVE + "print('FP heap_sas', _live - _sa0, len(_held), %d)\n" % N_SA)
    # the ESP pair alone
    s.append(_LIVE + "_r = _Rand(b'esp')\n_e0 = _live\n"
             "_pairs = [(_esp.EspOut(0x1000 + _i, _r(16), _r(32), _aes, _r),\n"
             "           _esp.EspIn(0x2000 + _i, _r(16), _r(32), _aes)) for _i in range(%d)]\n" % N_SA)
    s.append(_LIVE + "print('FP heap_esp_pairs', _live - _e0, %d)\n" % N_SA)
    s.append(_LIVE + "print('FP heap_final', _live - _base)\n")
    return s


# what boards/esp32/main.py and boards/rp2/main.py import (the node's working set)
APP_MODULES = ("pnpipsec", "pnpipsec.identity", "pnpipsec.ike.sa", "pnpipsec.node")


def import_steps(mods):
    s = ["import gc, sys\ngc.collect()\n", _LIVE + "_base = _live\n"]
    s.append("".join("import %s\n" % m for m in mods))
    s.append(_LIVE + "print('FP heap_import_set', _live - _base, len([m for m in sys.modules if m.startswith('pnpipsec')]))\n")
    return s


def _run_steps(steps, compact, timeout):
    node = _node()
    tmp = tempfile.mkdtemp(prefix="pnp-fp-heap-")
    try:
        sizes = compile_tree(tmp, compact)
        plan = os.path.join(tmp, "plan.json")
        with open(plan, "w") as f:
            json.dump({"mpy_dir": tmp, "steps": steps, "heapsize": 4 * 1024 * 1024}, f)
        p = subprocess.run([node, MEASURE_MJS, plan], capture_output=True, text=True,
                           timeout=timeout, cwd=REPO, env=paths.node_env())
        if p.returncode != 0:
            raise RuntimeError("heap measurement failed (exit %d):\n%s%s" % (p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
        return sizes, parse_fp(p.stdout.splitlines())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _node():
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node not found (Node.js >= 20 runs the MicroPython WebAssembly port)")
    if not os.path.isdir(WASM_PKG):
        raise RuntimeError(paths.WASM_MISSING)
    return node


def parse_fp(lines):
    """{key: [values...]} from 'FP key v1 v2 ...' lines (repeated keys -> list of lists)."""
    out = {}
    for line in lines:
        if not line.startswith("FP "):
            continue
        parts = line.split()
        vals = []
        for v in parts[2:]:
            try:
                vals.append(int(v))
            except ValueError:
                vals.append(v)
        out.setdefault(parts[1], []).append(vals)
    return out


def measure_heap(compact=False, timeout=600):
    """Run heap_steps() on the .mpy build inside MicroPython WebAssembly; a dict of figures."""
    sizes, fp = _run_steps(heap_steps(), compact, timeout)
    _s, fp_app = _run_steps(import_steps(APP_MODULES), compact, timeout)
    copied = fp["copied_mpy"][0][0]
    imp, nmods = fp["heap_after_import"][0][:2]
    steps = fp.get("hs_step", [])
    live_peak = max(v[0] for v in steps + fp["hs_done"])
    churn = max(v[1] for v in steps)
    done_kinds = [str(x) for x in fp["hs_done"][0][1:]]
    sas, held, n = fp["heap_sas"][0][:3]
    pairs, n2 = fp["heap_esp_pairs"][0][:2]
    return {
        "variant": "compact" if compact else "plain",
        "mpy_files": copied,
        "mpy_total": sum(sizes.values()),
        "modules_imported": nmods,
        "heap_after_import": imp,
        "heap_after_import_app": fp_app["heap_import_set"][0][0],
        "handshake_live_peak": live_peak,
        "handshake_live_peak_per_node": live_peak // 2,
        "handshake_step_churn": churn,
        "heap_by_module": dict((v[0], v[1]) for v in fp.get("heap_module", [])),
        "handshake_events": done_kinds,
        "heap_per_sa": sas // n,
        "sas_established": held,
        "heap_per_esp_pair": pairs // n2,
        "heap_import_plus_4_sa": imp + N_SA * (sas // n),
    }


# ------------------------------------------------------------------ optional: 32-bit unix port
_UNIX_HS = """
import sys, gc
sys.path[:0] = %(libs)r
mode = sys.argv[1]
gc.collect()
b0 = gc.mem_alloc()
%(imports)s
gc.collect()
print("FP import", gc.mem_alloc() - b0)
if mode != "import":
    if mode == "balloon":
        free = gc.mem_free()
        balloon = bytearray(max(0, free - int(sys.argv[2]) - 64))
%(helpers)s
    gc.collect()
    h0 = gc.mem_alloc()
    ea = Engine(_Rand(b"a"), PureAES(), LocalIdentity())
    eb = Engine(_Rand(b"b"), PureAES(), LocalIdentity())
    ea.initiate(("fd00:1::2", 500), PeerConfig(), 0)
    peak = 0
    for i in range(8):
        if i %% 2 == 0:
            _move(ea, eb, "fd00:1::1")
        else:
            _move(eb, ea, "fd00:1::2")
        gc.collect()
        peak = max(peak, gc.mem_alloc() - h0)
    kinds = [e.kind for e in ea.pop_events()]
    assert kinds == ["ike_up", "child_up"], kinds
    print("FP hs_live_peak", peak)
print("FP ok 1")
"""


BUILT = os.path.join(REPO, ".deps", "micropython")   # scripts/build-micropython.sh


def unix_port_binary():
    """A 32-bit MicroPython unix-port binary: PNP_MICROPYTHON32, else the one
    scripts/build-micropython.sh built (.deps/micropython/unix32), or None."""
    exe = os.environ.get("PNP_MICROPYTHON32") or os.path.join(BUILT, "unix32", "micropython")
    if not exe or not os.path.exists(exe):
        return None
    p = subprocess.run([exe, "-c", "import sys; print(sys.maxsize)"], capture_output=True, text=True, timeout=30)
    return exe if p.stdout.strip() == str(2 ** 31 - 1) else None


def measure_unix_peaks(exe, compact=False, timeout=60):
    """True peaks on MicroPython's 32-bit unix port, where gc works inside running code
    and the heap has a fixed size (-X heapsize): the smallest heap in which importing the
    package succeeds, and the free heap a two-engine NULL handshake needs after the import
    (a bytearray 'balloon' eats the rest; binary search to 256 bytes). Figures include
    fragmentation; both ends of the handshake share the heap."""
    tmp = tempfile.mkdtemp(prefix="pnp-fp-unix-")
    try:
        compile_tree(tmp, compact)
        mods = [m for m in modules() if m not in SKIP_IMPORT]
        helpers = "\n".join("    " + l if l.strip() else "" for l in _HS_HELPERS.splitlines())
        libs = [tmp] + [p for p in os.environ.get("PNP_MICROPYTHON_PATH", "").split(":") if p]
        src = _UNIX_HS % {"libs": libs, "imports": "".join("import %s\n" % m for m in mods), "helpers": helpers}
        script = os.path.join(tmp, "hs.py")
        with open(script, "w") as f:
            f.write(src)

        def ok(heap, *args):
            p = subprocess.run([exe, "-X", "heapsize=%d" % heap, script] + list(args),
                               capture_output=True, text=True, timeout=timeout)
            return p.returncode == 0 and "FP ok 1" in p.stdout, p

        good, p = ok(4 * 1024 * 1024, "full")
        if not good:
            raise RuntimeError("unix-port run failed:\n" + p.stdout[-2000:] + p.stderr[-2000:])
        fp = parse_fp(p.stdout.splitlines())

        def search(lo, hi, pred):
            while hi - lo > 256:
                mid = (lo + hi) // 2
                if pred(mid):
                    hi = mid
                else:
                    lo = mid
            return hi

        min_import = search(16 * 1024, 1024 * 1024, lambda h: ok(h, "import")[0])
        hs_free = search(1024, 256 * 1024, lambda x: ok(1024 * 1024, "balloon", str(x))[0])
        return {
            "variant": "compact" if compact else "plain",
            "unix_heap_after_import": fp["import"][0][0],
            "unix_min_heap_for_import": min_import,
            "unix_handshake_live_peak": fp["hs_live_peak"][0][0],
            "unix_handshake_free_heap_needed": hs_free,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def frozen_binary():
    """PNP_MICROPYTHON32_FROZEN, else .deps/micropython/unix32-frozen/micropython; or None."""
    exe = os.environ.get("PNP_MICROPYTHON32_FROZEN") or os.path.join(BUILT, "unix32-frozen", "micropython")
    return exe if os.path.exists(exe) else None


def measure_frozen(exe, timeout=60):
    """Heap after importing the package FROZEN into a 32-bit unix-port binary
    (PNP_MICROPYTHON32_FROZEN; built with FROZEN_MANIFEST including firmware/manifest.py):
    the figure that matters for boards flashed with boards/esp32|rp2/manifest.py."""
    mods = [m for m in modules() if m not in SKIP_IMPORT]
    src = ("import gc, sys\nsys.path[:] = ['.frozen']\ngc.collect()\nb0 = gc.mem_alloc()\n"
           + "".join("import %s\n" % m for m in mods)
           + "gc.collect()\nprint('FP frozen_import', gc.mem_alloc() - b0)\nprint('FP ok 1')\n")
    tmp = tempfile.mkdtemp(prefix="pnp-fp-frozen-")
    try:
        script = os.path.join(tmp, "frozen.py")
        with open(script, "w") as f:
            f.write(src)

        def run_(heap):
            p = subprocess.run([exe, "-X", "heapsize=%d" % heap, script], capture_output=True,
                               text=True, timeout=timeout, cwd=tmp)
            return p.returncode == 0 and "FP ok 1" in p.stdout, p

        good, p = run_(4 * 1024 * 1024)
        if not good:
            raise RuntimeError("frozen run failed (is pnpipsec frozen in %s?):\n%s%s" % (exe, p.stdout[-2000:], p.stderr[-2000:]))
        lo, hi = 4096, 1024 * 1024
        while hi - lo > 256:
            mid = (lo + hi) // 2
            if run_(mid)[0]:
                hi = mid
            else:
                lo = mid
        return {"frozen_heap_after_import": parse_fp(p.stdout.splitlines())["frozen_import"][0][0],
                "frozen_min_heap_for_import": hi}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def budget_rows(sizes, heap=(), unix=(), frozen=None, per_sa=None):
    """The secondary rows: .mpy totals and the earlier heap figures (wasm port, unix
    port peaks, frozen import); only the whole-firmware size has a budget here."""
    rows = [
        ("all of firmware/ as .mpy, plain bytecode", sizes["plain"], MPY_BUDGET, "%d files" % sizes["files"]),
        ("all of firmware/ as .mpy, -O2 -X no-source-lines", sizes["compact"], MPY_BUDGET, ""),
    ]
    for h in heap:
        tag = "(%s .mpy, wasm)" % h["variant"]
        rows += [
            ("heap after import %s" % tag, h["heap_after_import"], None, "%d modules" % h["modules_imported"]),
            ("heap after import, app's set %s" % tag, h["heap_after_import_app"], None,
             "pnpipsec.node + identity + ike.sa and deps"),
            ("heap per SA (IKE+CHILD+ESP) %s" % tag, h["heap_per_sa"], None, "mean of %d" % N_SA),
            ("heap per ESP pair %s" % tag, h["heap_per_esp_pair"], None, ""),
            ("heap after import + 4 SAs %s" % tag, h["heap_import_plus_4_sa"], None, ""),
            ("handshake live peak, both ends %s" % tag, h["handshake_live_peak"], None,
             "above import; ~%d per node" % h["handshake_live_peak_per_node"]),
            ("handshake churn, largest step %s" % tag, h["handshake_step_churn"], None,
             "bytes allocated in one engine step, garbage incl."),
        ]
    for u in unix:
        tag = "(%s .mpy, unix32)" % u["variant"]
        rows += [
            ("heap after import %s" % tag, u["unix_heap_after_import"], None, "cross-check of the wasm figure"),
            ("smallest heap that imports %s" % tag, u["unix_min_heap_for_import"], None, "import transient + fragmentation"),
            ("handshake live peak, both ends %s" % tag, u["unix_handshake_live_peak"], None, ""),
            ("handshake needs free heap, both ends %s" % tag, u["unix_handshake_free_heap_needed"], None,
             "true peak incl. transients, fragmentation"),
        ]
    if frozen:
        rows += [
            ("heap after import, FROZEN (unix32)", frozen["frozen_heap_after_import"], None,
             "every module; bytecode in flash"),
            ("smallest heap that imports, FROZEN", frozen["frozen_min_heap_for_import"], None, ""),
        ]
    return rows


# modules the unix port loads only because it has no cryptolib (ESP32 / RP2 have it)
NOT_ON_BOARDS = ("pnpipsec.crypto.aes_pure",)


def app_mpy_size(module_names, sizes):
    """Sum of the .mpy files (sizes: compile_tree's {rel path: bytes}) of the modules."""
    total = 0
    for m in module_names:
        rel = m.replace(".", "/")
        n = sizes.get(rel + ".mpy", sizes.get(rel + "/__init__.mpy"))
        if n is None:
            raise KeyError("no .mpy for module %s" % m)
        total += n
    return total


def rebuild_frozen(out=None):
    """scripts/build-micropython.sh unix32-frozen (quick when current), unless
    PNP_MICROPYTHON32_FROZEN names a binary: the frozen figures are of today's firmware."""
    if os.environ.get("PNP_MICROPYTHON32_FROZEN"):
        return None
    p = subprocess.run(["bash", os.path.join(REPO, "scripts", "build-micropython.sh"), "-q", "unix32-frozen"],
                       capture_output=True, text=True, timeout=1800, cwd=REPO)
    if p.returncode != 0:
        return "unix32-frozen rebuild failed: " + (p.stderr.strip() or p.stdout.strip())[-500:]
    return None


def app_figures(days=1.0, rebuild=True):
    """Issue 10's figures from the co-simulation (pnp.heapsim): a dict with the .mpy
    run (unix32, large heap), the frozen run (unix32-frozen, ESP32 heap) and its day,
    the .mpy of the app's import set, and errors (one line each)."""
    from pnp import heapsim
    out = {"errors": []}
    exe = unix_port_binary()
    if exe is None:
        out["errors"].append("no 32-bit MicroPython unix port (scripts/build-micropython.sh or PNP_MICROPYTHON32)")
    else:
        for heap in ("large", "huge"):
            r = heapsim.run("mpy", heap, 0, exe=exe)
            if r["ok"]:
                break
        out["mpy"] = r
        if r["ok"]:
            mods = [m for m in r["modules_at_end"] if m not in NOT_ON_BOARDS]
            out["app_mpy"] = {"modules": mods, "plain": app_mpy_size(mods, r["mpy_sizes"]),
                              "left_out": [m for m in r["modules_at_end"] if m in NOT_ON_BOARDS]}
            tmp = tempfile.mkdtemp(prefix="pnp-fp-")
            try:
                out["app_mpy"]["compact"] = app_mpy_size(mods, compile_tree(tmp, True))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            r2 = heapsim.run("mpy", "esp32", 0, exe=exe)
            out["mpy_esp32_ok"] = r2["ok"]
            out["mpy_esp32_error"] = r2["memory_error"] or (r2["failures"][0].splitlines()[0] if r2["failures"] else None)
            out["mpy_min_heap"] = heapsim.min_heap("mpy", 0, lo=r["heap_in_flight"]["alloc"], hi=r["heapsize"],
                                                   exe=exe, hi_ok=True)
        else:
            out["errors"].append("heapsim .mpy: " + (r["memory_error"] or r["failures"][0].splitlines()[0]))
    if rebuild:
        err = rebuild_frozen()
        if err:
            out["errors"].append(err)
    fexe = frozen_binary()
    if fexe is None:
        out["errors"].append("no 32-bit unix port with pnpipsec frozen (scripts/build-micropython.sh "
                             "or PNP_MICROPYTHON32_FROZEN)")
    else:
        r = heapsim.run("frozen", "esp32", days, exe=fexe)
        out["frozen"] = r
        if not r.get("heap_in_flight"):
            out["errors"].append("heapsim frozen (ESP32 heap): " + (r["memory_error"] or r["failures"][0].splitlines()[0]))
        else:
            out["frozen_min_heap"] = heapsim.min_heap("frozen", 0, lo=r["heap_in_flight"]["alloc"],
                                                      hi=heapsim.HEAPS["huge"], exe=fexe, hi_ok=True)
    return out


def app_rows(app):
    """(what, value, budget, note) rows of app_figures()."""
    rows = []
    r = app.get("mpy")
    if r and r.get("heap_in_flight"):
        fit = "runs in the ESP32 heap" if app.get("mpy_esp32_ok") else \
            "does NOT run in the ESP32 heap (%s)" % (app.get("mpy_esp32_error") or "failed")
        rows.append(("heap: app + 4 SAs + handshake in flight, .mpy", r["heap_in_flight"]["alloc"],
                     HEAP_MPY_BUDGET, "unix32, heap %d; %s; incl. %d of %s (no cryptolib here)"
                     % (r["heapsize"], fit, r.get("aes_alloc", 0), r.get("aes_provider", "?"))))
    f = app.get("frozen")
    if f and f.get("heap_in_flight"):
        rows.append(("heap: app + 4 SAs + handshake in flight, FROZEN", f["heap_in_flight"]["alloc"],
                     HEAP_FROZEN_BUDGET, "unix32-frozen, ESP32 heap %d; incl. %d of %s (no cryptolib here)"
                     % (f["heapsize"], f.get("aes_alloc", 0), f.get("aes_provider", "?"))))
    for key, what in (("mpy_min_heap", ".mpy"), ("frozen_min_heap", "FROZEN")):
        if app.get(key):
            rows.append(("smallest heap found that runs it, %s" % what, app[key], None,
                         "binary search to 1 KiB; transients + fragmentation (ESP32: %d)"
                         % heapsim_heaps()["esp32"]))
    a = app.get("app_mpy")
    if a:
        rows.append((".mpy of what the example app imports", a["plain"], APP_MPY_BUDGET,
                     "%d modules by the end of the run%s; %d with -O2 -X no-source-lines"
                     % (len(a["modules"]), (", without " + " ".join(a["left_out"]) + " (boards have cryptolib)")
                        if a.get("left_out") else "", a["compact"])))
    return rows


def heapsim_heaps():
    from pnp import heapsim
    return heapsim.HEAPS


def day_lines(f):
    """The ESP32-profile day of app_figures()['frozen'], in words."""
    if not f:
        return []
    if f["days"] <= 0:
        return []
    rk = f.get("peer_rekeys") or {}
    child = [v["ChildRekeyed"] for v in rk.values()][:4]
    ike = [v["IkeRekeyed"] for v in rk.values()][:4]
    verdict = "ok" if f["ok"] else "FAILED"
    line = ("ESP32 heap %d, frozen, 4 peers, %g simulated day(s): %s; MemoryError: %s; "
            % (f["heapsize"], f["days"], verdict, f["memory_error"] or "no"))
    if "echoes_sent" in f:
        line += ("echoes %d/%d; peak live heap %d, at the end %d; rekeys per peer: CHILD %s, IKE %s"
                 % (f["echoes_ok"], f["echoes_sent"], f["peak"], f["heap_final"]["alloc"], child, ike))
    out = [line]
    for x in f["failures"]:
        out.append("  FAILURE: " + x.splitlines()[0])
    return out


def _row(out, what, val, budget, note):
    b = "" if budget is None else "%d" % budget
    verdict = "" if budget is None else ("ok" if val <= budget else "OVER by %d" % (val - budget))
    out("%-56s %8d %8s  %s%s" % (what, val, b, verdict, ("  " + note) if note else ""))


def report(out=print, as_json=False, heap=True, days=1.0):
    sizes = size_report()
    errors = []
    app = {"errors": []}
    if heap:
        try:
            app = app_figures(days)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            app["errors"].append("heapsim: %s" % e)
        errors += app["errors"]
    hs = []
    if heap:
        for compact in (False, True):
            try:
                hs.append(measure_heap(compact))
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                errors.append(str(e))
    unix = []
    exe = unix_port_binary() if heap else None
    if exe:
        for compact in (False, True):
            try:
                unix.append(measure_unix_peaks(exe, compact))
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                errors.append(str(e))
    frozen = None
    fexe = frozen_binary() if heap else None
    if fexe:
        try:
            frozen = measure_frozen(fexe)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            errors.append(str(e))
    day_ok = (app.get("frozen") or {}).get("ok")
    if heap and days > 0 and app.get("frozen") and not day_ok:
        errors.append("the ESP32-profile day failed")
    if as_json:
        def slim(r):
            return None if r is None else {k: v for k, v in r.items() if k not in ("mpy_sizes", "heap_samples")}
        out(json.dumps({"budgets": {"heap_mpy": HEAP_MPY_BUDGET, "heap_frozen": HEAP_FROZEN_BUDGET,
                                    "app_mpy": APP_MPY_BUDGET, "mpy": MPY_BUDGET},
                        "rows": [list(r) for r in app_rows(app)],
                        "app": {"mpy": slim(app.get("mpy")), "frozen": slim(app.get("frozen")),
                                "app_mpy": app.get("app_mpy"), "mpy_esp32_ok": app.get("mpy_esp32_ok"),
                                "mpy_min_heap": app.get("mpy_min_heap"),
                                "frozen_min_heap": app.get("frozen_min_heap")},
                        "sizes": {k: v for k, v in sizes.items() if not k.endswith("_files")},
                        "heap": hs, "unix_port": unix, "frozen": frozen, "errors": errors}, indent=2))
        return 0 if not errors else 1
    out("%-56s %8s %8s" % ("footprint (issue 10: the example app, 4 SAs, a handshake in flight)", "", ""))
    out("%-56s %8s %8s" % ("", "bytes", "budget"))
    for what, val, budget, note in app_rows(app):
        _row(out, what, val, budget, note)
    main_rows = budget_rows(sizes)
    _row(out, *main_rows[0])
    for line in day_lines(app.get("frozen")):
        out(line)
    out(FLASH_NOTE)
    out("")
    out("secondary figures (no budget of their own; earlier measurements, for comparison)")
    for what, val, budget, note in budget_rows(sizes, hs, unix, frozen)[1:]:
        _row(out, what, val, None, note)
    for e in errors:
        out("n/a: %s" % e.splitlines()[0])
    return 0 if not errors else 1


def add_arguments(p):
    """`pnp footprint` (when registered in pnp/cli.py SUBCOMMANDS)."""
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-heap", action="store_true", help="sizes only (no MicroPython run)")
    p.add_argument("--days", type=float, default=1.0,
                   help="simulated days of the ESP32-profile run (0: none; default 1)")


def run(args):
    try:
        check_firmware()
    except NoFirmware as e:
        print("pnp footprint: %s" % e, file=sys.stderr)
        return 2
    return report(as_json=args.json, heap=not args.no_heap, days=getattr(args, "days", 1.0))


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(prog="python -m pnp.footprint")
    add_arguments(p)
    return run(p.parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
