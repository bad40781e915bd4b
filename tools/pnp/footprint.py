"""Firmware footprint: .mpy size and MicroPython heap, beside the DESIGN section 12 budgets.

    python -m pnp.footprint [--json]

Functions the bench calls:

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
    heap_per_sa          live heap one engine holds per established IKE SA + CHILD SA
                         with its two ESP objects (EspOut + EspIn), averaged over 4;
    heap_per_esp_pair    the EspOut + EspIn pair alone, averaged over 4.
  Live heap is "gc.collect(); gc.mem_alloc()" at the start of a runPython call: in this
  port a collection frees nothing inside the call that made the garbage.
* budget_rows(sizes, heap) -> [(what, value, budget, note)] and report() prints them.

The board figures will differ somewhat (32-bit MCU object sizes equal the wasm32 ones,
but the ports' heaps differ in block accounting only slightly); frozen firmware
(firmware/manifest.py) keeps bytecode in flash and imports with far less heap.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIRMWARE = os.path.join(REPO, "firmware", "pnpipsec")
MEASURE_MJS = os.path.join(REPO, "tools", "pnp", "mpy_measure.mjs")
WASM_PKG = os.path.join(REPO, "node_modules", "@micropython", "micropython-webassembly-pyscript")

MPY_BUDGET = 64 * 1024
HEAP_BUDGET = 32 * 1024          # heap after import plus four SAs
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


def size_report():
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
from pnpipsec.crypto.aes import PureAES
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
        dst.receive(d, (src_host, to[1]), 0.0)
        k += 1
    return k


def _handshake(e, peer_host, seed):
    b = Engine(_Rand(seed), PureAES(), LocalIdentity())
    e.initiate((peer_host, 500), PeerConfig(), 0.0)
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
             "_ea.initiate(('fd00:1::2', 500), PeerConfig(), 0.0)\n"
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


def _node():
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node not found (Node.js >= 20 runs the MicroPython WebAssembly port)")
    if not os.path.isdir(WASM_PKG):
        raise RuntimeError("node_modules missing: run scripts/setup.sh (npm ci)")
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
    node = _node()
    tmp = tempfile.mkdtemp(prefix="pnp-fp-heap-")
    try:
        sizes = compile_tree(tmp, compact)
        plan = os.path.join(tmp, "plan.json")
        with open(plan, "w") as f:
            json.dump({"mpy_dir": tmp, "steps": heap_steps(), "heapsize": 4 * 1024 * 1024}, f)
        p = subprocess.run([node, MEASURE_MJS, plan], capture_output=True, text=True,
                           timeout=timeout, cwd=REPO)
        if p.returncode != 0:
            raise RuntimeError("heap measurement failed (exit %d):\n%s%s" % (p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
        fp = parse_fp(p.stdout.splitlines())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
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


def budget_rows(sizes, heap):
    rows = [
        ("firmware .mpy, plain bytecode", sizes["plain"], MPY_BUDGET, "%d files" % sizes["files"]),
        ("firmware .mpy, -O2 -X no-source-lines", sizes["compact"], MPY_BUDGET, ""),
    ]
    for h in heap:
        tag = "(%s .mpy)" % h["variant"]
        rows += [
            ("heap after import %s" % tag, h["heap_after_import"], None, "%d modules" % h["modules_imported"]),
            ("heap per SA (IKE+CHILD+ESP) %s" % tag, h["heap_per_sa"], None, "mean of %d" % N_SA),
            ("heap per ESP pair %s" % tag, h["heap_per_esp_pair"], None, ""),
            ("heap after import + 4 SAs %s" % tag, h["heap_import_plus_4_sa"], HEAP_BUDGET, ""),
            ("handshake live peak, both ends %s" % tag, h["handshake_live_peak"], None,
             "above import; ~%d per node" % h["handshake_live_peak_per_node"]),
            ("handshake churn, largest step %s" % tag, h["handshake_step_churn"], None,
             "bytes allocated in one engine step, garbage incl."),
        ]
    return rows


def report(out=print, as_json=False, heap=True):
    sizes = size_report()
    hs = []
    errors = []
    if heap:
        for compact in (False, True):
            try:
                hs.append(measure_heap(compact))
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                errors.append(str(e))
    if as_json:
        out(json.dumps({"sizes": {k: v for k, v in sizes.items() if not k.endswith("_files")},
                        "heap": hs, "errors": errors}, indent=2))
        return 0 if not errors else 1
    out("%-52s %10s %10s  %s" % ("footprint (DESIGN section 12)", "bytes", "budget", ""))
    for what, val, budget, note in budget_rows(sizes, hs):
        b = "" if budget is None else "%d" % budget
        verdict = "" if budget is None else ("within" if val <= budget else "OVER by %d" % (val - budget))
        out("%-52s %10d %10s  %s%s" % (what, val, b, verdict, ("  " + note) if note else ""))
    for e in errors:
        out("heap: n/a (%s)" % e.splitlines()[0])
    return 0 if not errors else 1


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    return report(as_json="--json" in argv, heap="--no-heap" not in argv)


if __name__ == "__main__":
    sys.exit(main())
