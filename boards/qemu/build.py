"""Build MicroPython's qemu port (Cortex-M3, MPS2-AN385): the one builder of every qemu
firmware of this project.

    python boards/qemu/build.py [--profile esp32|pico_w|pico|large|port] [--frozen] [--romfs]
                                [--check] [--force] [-q]
    -> prints the path of firmware.elf (--check: builds nothing, exit 1 when stale)

Variants (one build folder each, .deps/qemu-board/build-<profile>[-frozen]/):
  * --profile: the GC heap (PROFILES); `port` is the port's own default heap (143,360
    bytes), used by the firmware test modules (host_tests/mpports.py,
    scripts/build-micropython.sh's qemu targets) and `pnp bench` (tools/pnp/bench_qemu.py);
    esp32/pico_w/pico/large stand for real boards (`pnp vboard --board qemu`).
  * --frozen: the pnpipsec package (firmware/manifest.py, native=True: the viper field
    arithmetic as native Thumb-2 code, generated into <build folder>/pnp-gen) and
    pnpboard frozen in; without it only asyncio, _boot.py and board.py
    (boards/qemu/manifest.py).
  * --romfs: a ROM segment mounted at /rom (MICROPY_VFS_ROM_IOCTL=1, cmod/pnpqemu/romfs.c:
    2 MiB of PSRAM at 0x21000000, writable by `mpremote romfs deploy`), in
    build-<profile>[-frozen]-romfs/. The other variants are built without it, as before.
  * build(..., firmware_dir=D, tag=T): freeze D/manifest.py instead of firmware/ (the
    bench's --rev builds a git revision that way), in build-<...>-T/.

Cache: a build is redone only when its key changes (firmware.key beside firmware.elf):
sha256 of the source tarball, the make arguments, `arm-none-eabi-gcc --version`, this
file (the patches), and the content of every frozen input (boards/qemu, and with
--frozen firmware/pnpipsec and boards/common/pnpboard). A current build costs the hash
of those files (~20 ms).

The MicroPython source is the v1.27.0 tarball (MICROPYTHON_TARBALL, else ../shared/
micropython/micropython-1.27.0-min.tar.gz, else the release archive that
scripts/build-micropython.sh downloads and checks; sha256 checked here again, see
TARBALLS), unpacked once into the cache (default .deps/qemu-board/, or $PNP_QEMU_CACHE).
Nothing of MicroPython is kept in this repository; the build changes five things in the
unpacked copy, each by a small text substitution done here (see patch_tree; a tree
unpacked before a substitution was added gets it at the next build):

  * ports/qemu/main.c: after mp_init() run the frozen _boot.py, then boot.py and (from
    the friendly REPL only) main.py, as every other port does (the stock qemu port goes
    straight to the REPL);
  * ports/qemu/modmachine.c: machine.reset() requests a system reset (SCB AIRCR
    SYSRESETREQ) instead of exiting qemu, so the board reboots like hardware and keeps
    its RAM disk (see boards/qemu/_boot.py);
  * ports/qemu/mpconfigport.h: MICROPY_PY_ASYNCIO 1 (the C _asyncio module; the stock
    port has 0);
  * ports/qemu/mpconfigport.h: MICROPY_VFS_ROM_IOCTL stays 0 unless the make command
    defines it (the stock port has a fixed 0): --romfs passes
    CFLAGS_EXTRA=-DMICROPY_VFS_ROM_IOCTL=1, and mp_vfs_rom_ioctl() is in cmod/;
  * make variables: MICROPY_HEAP_SIZE per profile, MICROPY_VFS_LFS2=1 (littlefs for the
    RAM disk), USER_C_MODULES=cmod (mp_hal_time_ns, mp_vfs_rom_ioctl),
    FROZEN_MANIFEST=boards/qemu/manifest.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
# Source archives, first found (the same as scripts/build-micropython.sh uses): the
# minimal git archive of v1.27.0 next to the repository, or the official release
# archive that script downloads into .deps/micropython/ when the former is absent.
MIN_SHA256 = "196177fd59ca28bfe0d9e8a15e71cd6909bedfe7a0dfa644d20ebe85215a572a"
RELEASE_SHA256 = "9874b20646c3bbe81d524f779a16875e5d088b7065e175ffd2aa2a02f50573c9"
TARBALLS = [
    os.environ.get("MICROPYTHON_TARBALL", ""),
    os.path.join(os.path.dirname(REPO), "shared", "micropython", "micropython-1.27.0-min.tar.gz"),
    "/work/shared/micropython/micropython-1.27.0-min.tar.gz",
    os.path.join(REPO, ".deps", "micropython", "micropython-1.27.0.tar.xz"),
]
CACHE = os.environ.get("PNP_QEMU_CACHE", os.path.join(REPO, ".deps", "qemu-board"))
SRC_NAME = "micropython-1.27.0"
FIRMWARE = os.path.join(REPO, "firmware")

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
    # the port's own MICROPY_HEAP_SIZE (143,360, ports/qemu/Makefile): the test modules
    # and the bench run in it
    "port": 136 * 1024,
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
ROMFS_ANCHOR = "#define MICROPY_VFS_ROM_IOCTL       (0)\n"
ROMFS_INSERT = (
    "#ifndef MICROPY_VFS_ROM_IOCTL  /* pnpipsec qemu board: build.py --romfs defines it as 1 */\n"
    "#define MICROPY_VFS_ROM_IOCTL       (0)\n"
    "#endif\n"
)
# what the --romfs variant adds to the make command
ROMFS_MAKE_ARGS = ["CFLAGS_EXTRA=-DMICROPY_VFS_ROM_IOCTL=1"]


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
    if not os.path.exists(os.path.join(CACHE, SRC_NAME, ".pnp-patched")) and _tarball() is None:
        out.append("MicroPython v1.27.0 source missing: none of %s (set MICROPYTHON_TARBALL, or run "
                   "scripts/build-micropython.sh, which downloads the release)" % ", ".join(p for p in TARBALLS if p))
    return out


def _tarball():
    for path in TARBALLS:
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
    """(path, tarball sha256) of the unpacked, patched MicroPython tree in the cache.
    Unpacked again when the tarball found differs from the one unpacked."""
    top = os.path.join(CACHE, SRC_NAME)
    stamp = os.path.join(top, ".pnp-patched")
    done = open(stamp).read().split()[-1] if os.path.exists(stamp) else None
    tarball = _tarball()
    if tarball is None:
        if done:
            _late_patches(top)
            return top, done
        raise BuildError("no MicroPython v1.27.0 source archive (see prerequisites())")
    got = _sha256(tarball)
    if got == done:
        _late_patches(top)
        return top, done
    if got not in (MIN_SHA256, RELEASE_SHA256):
        raise BuildError("%s: sha256 %s is not v1.27.0's (%s or %s)" % (tarball, got, MIN_SHA256, RELEASE_SHA256))
    os.makedirs(CACHE, exist_ok=True)
    if os.path.exists(top):
        shutil.rmtree(top)
    with tarfile.open(tarball) as t:
        t.extractall(CACHE)
    patch_tree(top)
    with open(stamp, "w") as f:
        f.write("patched %s\n" % got)
    return top, got


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
    _late_patches(top)


def _late_patches(top):
    """Substitutions added after trees were unpacked into caches: applied once, to a fresh
    tree and to one unpacked earlier alike (idempotent)."""
    path = os.path.join(top, "ports", "qemu", "mpconfigport.h")
    with open(path) as f:
        if ROMFS_INSERT in f.read():
            return
    _substitute(path, ROMFS_ANCHOR, ROMFS_INSERT)


def _make(args, cwd, log):
    log("make %s  (in %s)" % (" ".join(args), os.path.relpath(cwd, REPO) if cwd.startswith(REPO) else cwd))
    p = subprocess.run(["make"] + args, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise BuildError("make failed in %s:\n%s" % (cwd, (p.stdout[-3000:] + p.stderr[-5000:])))


def variant_name(profile, frozen, tag=None, romfs=False):
    return "%s%s%s%s" % (profile, "-frozen" if frozen else "", "-romfs" if romfs else "", "-" + tag if tag else "")


def build_dir(profile="esp32", frozen=False, tag=None, romfs=False):
    return os.path.join(CACHE, "build-" + variant_name(profile, frozen, tag, romfs))


def firmware_path(profile="esp32", frozen=False, tag=None, romfs=False):
    return os.path.join(build_dir(profile, frozen, tag, romfs), "firmware.elf")


def _frozen_inputs(frozen, firmware_dir):
    """Every file whose content goes into the firmware besides MicroPython's own."""
    files = [os.path.join(HERE, f) for f in ("build.py", "manifest.py", "_boot.py", "board.py")]
    roots = [os.path.join(HERE, "cmod")]
    if frozen:
        roots += [firmware_dir, os.path.join(REPO, "boards", "common", "pnpboard")]
    for r in roots:
        for dp, dn, fn in os.walk(r):
            dn[:] = sorted(d for d in dn if d != "__pycache__")
            files += [os.path.join(dp, x) for x in sorted(fn) if x.endswith((".py", ".c", ".h", ".mk"))]
    return files


def _cc_version():
    try:
        return subprocess.run(["arm-none-eabi-gcc", "--version"], capture_output=True,
                              text=True).stdout.split("\n")[0]
    except OSError:
        return "none"


def _key(tar_sha, args, frozen, firmware_dir):
    h = hashlib.sha256()
    h.update(("%s\n%s\n%s\n" % (tar_sha, " ".join(args), _cc_version())).encode())
    for f in _frozen_inputs(frozen, firmware_dir):
        h.update(f.encode() + b"\0")
        with open(f, "rb") as fh:
            h.update(hashlib.sha256(fh.read()).digest())
    return h.hexdigest()


def _git_head():
    try:
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "firmware", "boards/qemu",
                                "boards/common"], capture_output=True, text=True).stdout.strip()
        return (head + ("+dirty" if dirty else "")) or None
    except OSError:
        return None


def _plan(profile, frozen, firmware_dir, tag, jobs=2, romfs=False):
    """(make args without -j, key); key None when the source is missing."""
    bdir = build_dir(profile, frozen, tag, romfs)
    top = os.path.join(CACHE, SRC_NAME)
    args = ["BOARD=MPS2_AN385", "BUILD=" + bdir, "MICROPY_HEAP_SIZE=%d" % heap_size(profile),
            "MICROPY_VFS_LFS2=1", "MPY_LIB_DIR=" + os.path.join(CACHE, "no-micropython-lib"),
            "USER_C_MODULES=" + os.path.join(HERE, "cmod"), "FROZEN_MANIFEST=" + os.path.join(HERE, "manifest.py")]
    if romfs:
        args += ROMFS_MAKE_ARGS
    # the manifest reads these from the environment
    env = {"PNP_FREEZE_PACKAGE": "1" if frozen else "0", "PNP_FIRMWARE_DIR": firmware_dir,
           "PNP_GEN_DIR": os.path.join(bdir, "pnp-gen")}
    return top, bdir, args, env


def info(profile="esp32", frozen=False, tag=None, romfs=False):
    """What firmware.json beside firmware.elf says (key, git, built), or None."""
    try:
        with open(os.path.join(build_dir(profile, frozen, tag, romfs), "firmware.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def current(profile="esp32", frozen=False, firmware_dir=FIRMWARE, tag=None, romfs=False):
    """True when firmware.elf exists and its key matches the inputs now."""
    out = firmware_path(profile, frozen, tag, romfs)
    stamp = os.path.join(CACHE, SRC_NAME, ".pnp-patched")
    if not os.path.exists(out) or not os.path.exists(stamp):
        return False
    tar_sha = open(stamp).read().split()[-1]
    tarball = _tarball()
    if tarball is not None and _sha256(tarball) != tar_sha:
        return False
    _top, _bdir, args, _env = _plan(profile, frozen, firmware_dir, tag, romfs=romfs)
    return (info(profile, frozen, tag, romfs) or {}).get("key") == _key(tar_sha, args, frozen, firmware_dir)


def build(profile="esp32", frozen=False, jobs=2, log=None, force=False, firmware_dir=FIRMWARE, tag=None,
          git=None, romfs=False):
    """Build (when its key changed) and return the path of firmware.elf for this variant
    (git: what firmware.json records as the source revision; default: this checkout's).
    One build at a time per cache (a lock file)."""
    import fcntl
    log = log or (lambda s: print(s, file=sys.stderr))
    heap_size(profile)
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        out = firmware_path(profile, frozen, tag, romfs)
        if not force and current(profile, frozen, firmware_dir, tag, romfs):
            return out
        missing = [m for m in prerequisites() if "qemu-system-arm" not in m]
        if missing:
            raise BuildError("; ".join(missing))
        top, tar_sha = source_tree()
        if not os.path.exists(os.path.join(top, "mpy-cross", "build", "mpy-cross")):
            _make(["-j%d" % jobs], os.path.join(top, "mpy-cross"), log)
        # the manifest require()s nothing from micropython-lib (not in the tarball); make
        # only checks that the folder has a README.md
        mpylib = os.path.join(CACHE, "no-micropython-lib")
        os.makedirs(mpylib, exist_ok=True)
        with open(os.path.join(mpylib, "README.md"), "w") as f:
            f.write("empty: the qemu board's manifest requires nothing from micropython-lib\n")
        _top, bdir, args, env = _plan(profile, frozen, firmware_dir, tag, romfs=romfs)
        key = _key(tar_sha, args, frozen, firmware_dir)
        env_backup = dict(os.environ)
        os.environ.update(env)
        try:
            # makemanifest reuses a frozen .mpy newer than its source (mtime), which misses
            # e.g. a git-archive snapshot: drop the frozen outputs and the key first
            shutil.rmtree(os.path.join(bdir, "frozen_mpy"), ignore_errors=True)
            for f in ("frozen_content.c", "frozen_content.o", "firmware.json"):
                p = os.path.join(bdir, f)
                if os.path.exists(p):
                    os.unlink(p)
            _make(["-j%d" % jobs] + args, os.path.join(top, "ports", "qemu"), log)
        finally:
            os.environ.clear()
            os.environ.update(env_backup)
        if not os.path.exists(out):
            raise BuildError("make succeeded but %s is missing" % out)
        with open(os.path.join(bdir, "firmware.json"), "w") as f:
            json.dump({"key": key, "profile": profile, "frozen": frozen, "romfs": romfs, "firmware_dir": firmware_dir,
                       "git": git or (_git_head() if firmware_dir == FIRMWARE else None),
                       "micropython": "v1.27.0", "tarball_sha256": tar_sha, "board": "MPS2_AN385",
                       "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, f)
        return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", choices=sorted(PROFILES), default="esp32")
    p.add_argument("--frozen", action="store_true", help="freeze pnpipsec and pnpboard into the firmware")
    p.add_argument("--romfs", action="store_true",
                   help="a ROM segment at /rom for `mpremote romfs deploy` (MICROPY_VFS_ROM_IOCTL)")
    p.add_argument("--force", action="store_true")
    p.add_argument("--check", action="store_true", help="build nothing; exit 1 when missing or stale")
    p.add_argument("-q", action="store_true", help="no make progress lines")
    a = p.parse_args(argv)
    if a.check:
        if current(a.profile, a.frozen, romfs=a.romfs):
            print(firmware_path(a.profile, a.frozen, romfs=a.romfs))
            return 0
        print("build: qemu firmware %s is not built or stale" % variant_name(a.profile, a.frozen, romfs=a.romfs),
              file=sys.stderr)
        return 1
    try:
        print(build(a.profile, a.frozen, jobs=os.cpu_count() or 2, force=a.force, romfs=a.romfs,
                    log=(lambda s: None) if a.q else None))
    except BuildError as e:
        text = str(e).strip()
        if a.q:   # one line: the first and the first compiler error
            errs = [ln for ln in text.splitlines()[1:] if "error" in ln.lower()]
            text = text.splitlines()[0] + (": " + errs[0].strip()[:200] if errs else "")
        print("build: %s" % text, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
