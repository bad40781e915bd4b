"""Build MicroPython's qemu port (Cortex-M3, MPS2-AN385) as the pnpipsec qemu board.

    python boards/qemu/build.py [--profile esp32|pico_w] [--frozen] [--out DIR]
    -> prints the path of firmware.elf

The MicroPython source is the v1.27.0 tarball (MICROPYTHON_TARBALL, else ../shared/
micropython/micropython-1.27.0-min.tar.gz, else the release archive that
scripts/build-micropython.sh downloads; sha256 checked, see TARBALLS), unpacked once
into the cache (default .deps/qemu-board/, or $PNP_QEMU_CACHE). Nothing of MicroPython is
kept in this repository; the build changes four things in the unpacked copy, each by a
small text substitution done here (see patch_tree):


  * ports/qemu/main.c: after mp_init() run the frozen _boot.py, then boot.py and (from
    the friendly REPL only) main.py, as every other port does (the stock qemu port goes
    straight to the REPL);
  * ports/qemu/modmachine.c: machine.reset() requests a system reset (SCB AIRCR
    SYSRESETREQ) instead of exiting qemu, so the board reboots like hardware and keeps
    its RAM disk (see boards/qemu/_boot.py);
  * ports/qemu/mpconfigport.h: MICROPY_PY_ASYNCIO 1 (the C _asyncio module; the stock
    port has 0);
  * make variables: MICROPY_HEAP_SIZE per profile, MICROPY_VFS_LFS2=1 (littlefs for the RAM disk), and FROZEN_MANIFEST =
    boards/qemu/manifest.py (asyncio, _boot.py, board.py; with --frozen also the pnpipsec
    package and pnpboard).

Heap profiles (MICROPY_HEAP_SIZE, the GC heap; see PROFILES and boards/qemu/README.md).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
# Source archives, first found (the same as scripts/build-micropython.sh uses): the
# minimal git archive of v1.27.0 next to the repository, or the official release
# archive that script downloads into .deps/micropython/ when the former is absent.
MIN_SHA256 = "196177fd59ca28bfe0d9e8a15e71cd6909bedfe7a0dfa644d20ebe85215a572a"
RELEASE_SHA256 = "9874b20646c3bbe81d524f779a16875e5d088b7065e175ffd2aa2a02f50573c9"
TARBALLS = [
    (os.environ.get("MICROPYTHON_TARBALL", ""), None),
    (os.path.join(os.path.dirname(REPO), "shared", "micropython", "micropython-1.27.0-min.tar.gz"), MIN_SHA256),
    ("/work/shared/micropython/micropython-1.27.0-min.tar.gz", MIN_SHA256),
    (os.path.join(REPO, ".deps", "micropython", "micropython-1.27.0.tar.xz"), RELEASE_SHA256),
]
CACHE = os.environ.get("PNP_QEMU_CACHE", os.path.join(REPO, ".deps", "qemu-board"))
SRC_NAME = "micropython-1.27.0"

# GC heap sizes. The figure is what the real board leaves to Python after boot
# (../shared/recipes/platform-facts.md: ESP32 without PSRAM ~110 KiB usable once the heap
# has grown; plain Pico ~205 KiB free, Pico W ~27 KB less for lwIP + Wi-Fi). The qemu
# board's own boot (RAM-disk mount, sys modules) takes BOOT_OVERHEAD of the heap, which
# is added so that gc.mem_free() after boot is close to the figure.
BOOT_OVERHEAD = 4 * 1024
PROFILES = {
    "esp32": 110 * 1024,     # 112,640 bytes free after boot
    "pico_w": 178 * 1024,    # 182,272 bytes free after boot (205 KiB - ~27 KB)
    "pico": 205 * 1024,      # 209,920 bytes free after boot (plain Pico, no Wi-Fi)
    # no real board: room for the whole package imported from .mpy files (pnp deploy),
    # which at the time of writing does not run in the heaps above (README, qemu board)
    "large": 320 * 1024,
}

MAIN_ANCHOR = "        mp_init();\n"
MAIN_INSERT = (
    "        mp_init();\n"
    "        /* pnpipsec qemu board: boot files as on the other ports */\n"
    "        pyexec_frozen_module(\"_boot.py\", false);\n"
    "        pyexec_file_if_exists(\"boot.py\");\n"
    "        if (pyexec_mode_kind == PYEXEC_MODE_FRIENDLY_REPL) {\n"
    "            pyexec_file_if_exists(\"main.py\");\n"
    "        }\n"
)
RESET_ANCHOR = "    exit(0);\n"
RESET_INSERT = (
    "    /* pnpipsec qemu board: a system reset (SCB AIRCR SYSRESETREQ), qemu keeps running */\n"
    "    *(volatile uint32_t *)0xE000ED0C = 0x05FA0004;\n"
    "    for (;;) {\n"
    "    }\n"
)
ASYNCIO_ANCHOR = "#define MICROPY_PY_ASYNCIO          (0)\n"
ASYNCIO_INSERT = "#define MICROPY_PY_ASYNCIO          (1)  /* pnpipsec qemu board: C _asyncio */\n"


class BuildError(Exception):
    pass


def heap_size(profile):
    if profile not in PROFILES:
        raise BuildError("unknown profile %r (choose %s)" % (profile, ", ".join(PROFILES)))
    return PROFILES[profile] + BOOT_OVERHEAD


def prerequisites():
    """What is missing to build or run the qemu board (empty when nothing is)."""
    out = []
    for tool, pkg in (("arm-none-eabi-gcc", "gcc-arm-none-eabi libnewlib-arm-none-eabi"),
                      ("qemu-system-arm", "qemu-system-arm"), ("make", "make")):
        if shutil.which(tool) is None:
            out.append("%s not on PATH (Debian: apt-get install %s)" % (tool, pkg))
    if not os.path.exists(os.path.join(CACHE, SRC_NAME, "ports", "qemu")) and _tarball() is None:
        out.append("MicroPython v1.27.0 source missing: none of %s (set MICROPYTHON_TARBALL, or run "
                   "scripts/build-micropython.sh, which downloads the release)" % ", ".join(p for p, _ in TARBALLS if p))
    return out


def _tarball():
    for path, _sha in TARBALLS:
        if path and os.path.exists(path):
            return path
    return None


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_tree():
    """The unpacked, patched MicroPython tree in the cache."""
    top = os.path.join(CACHE, SRC_NAME)
    stamp = os.path.join(top, ".pnp-patched")
    if os.path.exists(stamp):
        return top
    tarball = _tarball()
    if tarball is None:
        raise BuildError("no MicroPython v1.27.0 source archive (see prerequisites())")
    got = _sha256(tarball)
    if got not in (MIN_SHA256, RELEASE_SHA256):
        raise BuildError("%s: sha256 %s is not v1.27.0's (%s or %s)" % (tarball, got, MIN_SHA256, RELEASE_SHA256))
    os.makedirs(CACHE, exist_ok=True)
    if os.path.exists(top):
        shutil.rmtree(top)
    with tarfile.open(tarball) as t:
        t.extractall(CACHE)
    patch_tree(top)
    with open(stamp, "w") as f:
        f.write("patched\n")
    return top


def _substitute(path, anchor, new):
    with open(path) as f:
        text = f.read()
    if text.count(anchor) != 1:
        raise BuildError("%s: expected exactly one %r (MicroPython version changed?)" % (path, anchor))
    with open(path, "w") as f:
        f.write(text.replace(anchor, new))


def patch_tree(top):
    port = os.path.join(top, "ports", "qemu")
    _substitute(os.path.join(port, "main.c"), MAIN_ANCHOR, MAIN_INSERT)
    _substitute(os.path.join(port, "modmachine.c"), RESET_ANCHOR, RESET_INSERT)
    _substitute(os.path.join(port, "mpconfigport.h"), ASYNCIO_ANCHOR, ASYNCIO_INSERT)


def _make(args, cwd, log):
    log("make %s  (in %s)" % (" ".join(args), os.path.relpath(cwd, REPO) if cwd.startswith(REPO) else cwd))
    p = subprocess.run(["make"] + args, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise BuildError("make failed in %s:\n%s" % (cwd, (p.stdout[-3000:] + p.stderr[-5000:])))


def variant_name(profile, frozen):
    return "%s%s" % (profile, "-frozen" if frozen else "")


def firmware_path(profile="esp32", frozen=False):
    return os.path.join(CACHE, "build-" + variant_name(profile, frozen), "firmware.elf")


def _inputs_mtime(frozen):
    """Newest modification time of the files frozen into a build (rebuild when newer)."""
    roots = [os.path.join(HERE, f) for f in ("manifest.py", "_boot.py", "board.py", "build.py",
                                            "cmod/pnpqemu/time_ns.c")]
    if frozen:
        for d in (os.path.join(REPO, "firmware", "pnpipsec"), os.path.join(REPO, "boards", "common", "pnpboard")):
            for dp, _dn, fn in os.walk(d):
                roots += [os.path.join(dp, x) for x in fn if x.endswith(".py")]
    return max(os.path.getmtime(p) for p in roots if os.path.exists(p))


def build(profile="esp32", frozen=False, jobs=2, log=None, force=False):
    """Build (when stale) and return the path of firmware.elf for this variant."""
    log = log or (lambda s: print(s, file=sys.stderr))
    heap = heap_size(profile)
    out = firmware_path(profile, frozen)
    if not force and os.path.exists(out) and os.path.getmtime(out) >= _inputs_mtime(frozen):
        return out
    missing = [m for m in prerequisites() if "qemu-system-arm" not in m]
    if missing:
        raise BuildError("; ".join(missing))
    top = source_tree()
    if not os.path.exists(os.path.join(top, "mpy-cross", "build", "mpy-cross")):
        _make(["-j%d" % jobs], os.path.join(top, "mpy-cross"), log)
    port = os.path.join(top, "ports", "qemu")
    # the manifest require()s nothing from micropython-lib (not in the tarball); make
    # only checks that the folder has a README.md
    mpylib = os.path.join(CACHE, "no-micropython-lib")
    os.makedirs(mpylib, exist_ok=True)
    with open(os.path.join(mpylib, "README.md"), "w") as f:
        f.write("empty: the qemu board's manifest requires nothing from micropython-lib\n")
    build_dir = os.path.join(CACHE, "build-" + variant_name(profile, frozen))
    args = ["-j%d" % jobs, "BOARD=MPS2_AN385", "BUILD=" + build_dir,
            "MICROPY_HEAP_SIZE=%d" % heap, "MICROPY_VFS_LFS2=1", "MPY_LIB_DIR=" + mpylib,
            "USER_C_MODULES=" + os.path.join(HERE, "cmod"),
            "FROZEN_MANIFEST=" + os.path.join(HERE, "manifest.py"),
            "PNP_REPO=" + REPO, "PNP_FREEZE_PACKAGE=%d" % (1 if frozen else 0)]
    # the manifest reads PNP_REPO / PNP_FREEZE_PACKAGE from the environment
    env_backup = dict(os.environ)
    os.environ["PNP_REPO"] = REPO
    os.environ["PNP_FREEZE_PACKAGE"] = "1" if frozen else "0"
    try:
        # a frozen-content change is not seen by make: drop the frozen outputs first
        shutil.rmtree(os.path.join(build_dir, "frozen_mpy"), ignore_errors=True)
        for f in ("frozen_content.c", "frozen_content.o"):
            p = os.path.join(build_dir, f)
            if os.path.exists(p):
                os.unlink(p)
        _make(args, port, log)
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    if not os.path.exists(out):
        raise BuildError("make succeeded but %s is missing" % out)
    os.utime(out)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", choices=sorted(PROFILES), default="esp32")
    p.add_argument("--frozen", action="store_true", help="freeze pnpipsec and pnpboard into the firmware")
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    try:
        print(build(a.profile, a.frozen, force=a.force))
    except BuildError as e:
        print("build: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
