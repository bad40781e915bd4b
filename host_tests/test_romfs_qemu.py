"""The package from a ROMFS image on the qemu board (issue 10, item 2: heap frozen or from
ROMFS). Firmware `boards/qemu/build.py --romfs` (MICROPY_VFS_ROM_IOCTL: a 2 MiB ROM
segment in PSRAM, mounted at /rom, written by `mpremote romfs deploy`); the package is
not frozen.

One board, one test:
  * `pnp deploy --board qemu --romfs` builds the image (pnpipsec and pnpboard as .mpy
    under lib/) and writes it over the board's REPL with `mpremote romfs deploy`; its
    self-test runs after a soft reset and reports pnpipsec from /rom;
  * the heap the example app's imports keep (`import pnpipsec; from pnpipsec import
    identity; from pnpipsec.node import Node, zero_config`; gc.collect(), gc.mem_alloc()
    before and after, each after a soft reset) in the same profile three ways: from
    ROMFS (bytecode executed in place), from .mpy files on the file system (the same
    .mpy files, copied on the board from /rom/lib to /lib and /rom unmounted: byte for
    byte what `pnp deploy` puts there, without its ~70 s of serial copying; that path
    itself is test_e2e_qemu's), and frozen (build.py --frozen, a second board);
  * the example app's main.py boots from ROMFS and a CPython node joins it over the
    relay: ENCRYPTED, AUTHENTICATED once its key is approved, echo both ways.

The profile is pico_w (~178 KiB free): from .mpy files the imports do not fit the esp32
profile (MemoryError while loading), so the three figures could not be compared there.
PNP_QEMU_ROMFS_PROFILE=esp32 runs the same on the ESP32 heap (the .mpy figure is then
reported as not fitting). Skipped locally when the toolchain or qemu is missing; under
CI=true that is a failure.
"""

import asyncio
import os
import re
import subprocess
import sys
import time

from host_tests.test_e2e_qemu import _check, _config, _need, _report, stop_board, wait_bound
from host_tests.vboard_util import join_board, mpremote

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILE = os.environ.get("PNP_QEMU_ROMFS_PROFILE", "pico_w")
# ROMFS keeps far less than .mpy files (the bytecode, strings and qstr data stay in the
# image) but more than frozen firmware: MicroPython 1.27 still builds each function's
# raw-code record, each module's qstr and constant tables and the qstr pool entries in
# RAM for a ROMFS .mpy, which frozen firmware has in flash. That share grows with the
# number of functions, not with their size: measured 1.85x frozen (53.6 / 29.0 KB) and,
# with the control, identity and MOBIKE code of issues 11 and 12, 2.1x (66.9 / 31.9 KB),
# when the plain .mpy set no longer fits this profile at all.
MAX_VS_MPY = 0.5
MAX_VS_FROZEN = 2.5

IMPORTS = ("import pnpipsec", "from pnpipsec import identity", "from pnpipsec.node import Node, zero_config")
COPY_TO_LIB = """import os
def _cp(s, d):
    try:
        os.mkdir(d)
    except OSError:
        pass
    for e in os.listdir(s):
        if os.stat(s + '/' + e)[0] & 0x4000:
            _cp(s + '/' + e, d + '/' + e)
        else:
            with open(s + '/' + e, 'rb') as f, open(d + '/' + e, 'wb') as g:
                g.write(f.read())
_cp('/rom/lib', '/lib')
print('copied', os.listdir('/lib'))
"""
REMOVE_LIB = """import os
def _rm(p):
    if os.stat(p)[0] & 0x4000:
        for e in os.listdir(p):
            _rm(p + '/' + e)
        os.rmdir(p)
    else:
        os.remove(p)
for _p in ('/lib/pnpipsec', '/lib/pnpboard'):
    _rm(_p)
print('removed', os.listdir('/lib'))
"""
# unmount the image: the imports then read the .mpy files from /lib (littlefs)
NO_ROM = """import vfs, sys
vfs.umount('/rom')
sys.path[:] = [p for p in sys.path if not p.startswith('/rom')]
"""


def start_board(state, profile, frozen=False, romfs=False):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(REPO, "tools") + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "pnp.vboard", "--board", "qemu", "--state", state, "--profile", profile]
    cmd += ["--frozen"] if frozen else []
    cmd += ["--romfs"] if romfs else []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()      # the firmware is built first when missing or stale
    m = re.match(r"device: (\S+)$", line.strip())
    if not m:
        proc.kill()
        raise AssertionError("pnp vboard printed %r; stderr: %s" % (line, proc.stderr.read()))
    return proc, m.group(1)


def heap_after_imports(dev, prologue=""):
    """(bytes the imports keep, pnpipsec.__file__) after a soft reset; (None, error) when
    they do not fit."""
    body = "".join("    %s\n" % s for s in IMPORTS)
    code = ("import gc\n" + prologue + "gc.collect()\n_a = gc.mem_alloc()\ntry:\n" + body +
            "except MemoryError as e:\n    print('HEAP none', repr(e))\nelse:\n"
            "    gc.collect()\n    print('HEAP', gc.mem_alloc() - _a, pnpipsec.__file__)\n")
    out = mpremote(dev, "soft-reset", "+", "exec", code, timeout=60).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("HEAP ")]
    assert line, out
    f = line[-1].split(None, 2)
    return (None, f[2]) if f[1] == "none" else (int(f[1]), f[2])


def test_qemu_romfs_heap_and_join(tmp_path, record_property):
    _need()
    t0 = time.monotonic()
    state = str(tmp_path / "board")
    natt, app, cfg = _config(tmp_path)

    # frozen first (its own board): the reference figure
    fstate = str(tmp_path / "frozen")
    proc, dev = start_board(fstate, PROFILE, frozen=True)
    try:
        frozen, where = heap_after_imports(dev)
        assert frozen is not None and not where.startswith("/"), where   # pnpipsec/__init__.py, frozen
    finally:
        stop_board(proc, fstate)

    proc, dev = start_board(state, PROFILE, romfs=True)
    try:
        r = subprocess.run([sys.executable, "-m", "pnp.cli", "deploy", "--port", dev, "--board", "qemu", "--romfs"],
                           capture_output=True, text=True, timeout=180, cwd=REPO)
        out = r.stdout + r.stderr
        assert r.returncode == 0 and "self-test: ok" in out, out
        assert "ROMFS image deployed" in out, out                        # mpremote romfs deploy did it
        assert "pnpipsec from /rom/lib/pnpipsec/" in out, out
        image = int(re.search(r"ROMFS image: (\d+) bytes", out).group(1))
        record_property(PROFILE + "_romfs_image_bytes", image)

        romfs, where = heap_after_imports(dev)
        assert romfs is not None, where
        assert where.startswith("/rom/"), where                          # (a) imported from /rom

        # the same .mpy files from the file system
        assert "copied" in mpremote(dev, "exec", COPY_TO_LIB, timeout=60).stdout
        mpy, where = heap_after_imports(dev, prologue=NO_ROM)
        assert mpy is None or where.startswith("/lib/pnpipsec/"), where
        assert "removed" in mpremote(dev, "exec", REMOVE_LIB, timeout=60).stdout

        sys.stdout.write("\n[qemu %s] heap kept by the example app's imports: .mpy %s, ROMFS %d, frozen %d bytes"
                         " (ROMFS image %d bytes)\n" % (PROFILE, mpy if mpy is not None else "does not fit (%s)" % where,
                                                         romfs, frozen, image))
        for k, v in (("mpy", mpy), ("romfs", romfs), ("frozen", frozen)):
            if v is not None:
                record_property("%s_heap_%s" % (PROFILE, k), v)
        if mpy is not None:
            assert romfs < MAX_VS_MPY * mpy, (romfs, mpy)                # (b)
        assert romfs < MAX_VS_FROZEN * frozen, (romfs, frozen)

        # (c) the example app from ROMFS: a CPython node joins it
        mpremote(dev, "fs", "cp", cfg, ":pnp.json", "+", "reset")
        wait_bound(state, app)
        res = asyncio.run(join_board(natt, app, timeout=60, patience=30))
        _check(res)
        _report(record_property, PROFILE + "_romfs", res)
    finally:
        stop_board(proc, state)
    sys.stdout.write("[qemu %s] test took %.1f s\n" % (PROFILE, time.monotonic() - t0))


def test_romfs_plan_and_image(tmp_path):
    """Host only: what --romfs puts into the image and what stays on the file system; the
    image is mpremote's format and holds the .mpy files under lib/."""
    from pnp import deploy as d

    items, _dirs = d.make_plan("qemu")
    rom, fs = d.split_romfs(items)
    assert rom and all(it.remote.startswith(("/lib/pnpipsec/", "/lib/pnpboard/")) for it in rom)
    assert {it.remote for it in fs} == {"/board.mpy", "/main.py"}
    assert d.remote_dirs(fs) == []
    root = str(tmp_path / "romfs")
    d.build(rom, root, log=lambda m: None)
    image = str(tmp_path / "x.romfs")
    size = d.romfs_image(root, image)
    data = open(image, "rb").read()
    assert size == len(data) and data.startswith(b"\xd2\xcd\x31")
    # directory and file records name their entry after a length byte
    for name in (b"lib", b"pnpipsec", b"pnpboard", b"__init__.mpy", b"node.mpy", b"identity.mpy"):
        assert bytes([len(name)]) + name in data, name
    # a firmware without ROMFS: mpremote's words become a usage error (nothing changed)
    err = d._explain_failure("/dev/pts/9", ["Image size is 1 bytes", "mpremote: ROMFS is not enabled on this device"])
    assert isinstance(err, d.DeployError) and "--romfs" in str(err) and "nothing was changed" in str(err)
