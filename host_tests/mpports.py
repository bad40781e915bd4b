"""MicroPython ports built by scripts/build-micropython.sh (the qemu firmware by
boards/qemu/build.py, which that script calls), and a runner for the qemu board.

    from host_tests import mpports
    mpports.unix_binary()            # 64-bit unix port (standard variant, asyncio frozen)
    mpports.unix32_binary()          # 32-bit unix port (-m32), or None
    mpports.unix32_frozen_binary()   # 32-bit unix port with pnpipsec frozen, or None
    mpports.qemu_firmware()          # bare-metal Cortex-M3 (MPS2_AN385), or None
    mpports.qemu_firmware(frozen=True)   # the same with pnpipsec frozen in
    out = mpports.run_qemu_script(fw, "print(1 + 1)", timeout=60)

Every function returns a path that exists, or None. Environment overrides (a path wins
over the built one): PNP_MICROPYTHON, PNP_MICROPYTHON32, PNP_MICROPYTHON32_FROZEN,
PNP_QEMU_FIRMWARE (any board; the plain firmware), PNP_QEMU_FIRMWARE_FROZEN.

Build outputs (gitignored; `scripts/build-micropython.sh`):

    .deps/micropython/  unix/micropython  unix32/micropython  unix32-frozen/micropython
    .deps/qemu-board/   build-port/firmware.elf  build-port-frozen/firmware.elf

The qemu firmware is the qemu board of boards/qemu (build.py --profile port [--frozen]):
the port's own heap (143,360 bytes), asyncio, a littlefs RAM disk mounted at / by the
frozen _boot.py, and with --frozen the pnpipsec package and pnpboard.

``run_qemu_script`` boots the firmware in ``qemu-system-arm -machine <board machine>
-nographic -monitor null -semihosting -icount shift=0 -serial pty``, runs the script
with stock ``mpremote connect /dev/pts/N [mount DIR] run FILE`` and always kills qemu
afterwards. With ``-icount shift=0`` one guest instruction takes one virtual ns, so
``time.ticks_us()`` differences inside the guest count instructions (divided by 1000).
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, ".deps", "micropython")
BUILD_SCRIPT = os.path.join(REPO, "scripts", "build-micropython.sh")

# MicroPython qemu-port board -> qemu-system-arm machine
QEMU_MACHINES = {"MPS2_AN385": "mps2-an385", "MPS2_AN500": "mps2-an500", "SABRELITE": "sabrelite",
                 "MICROBIT": "microbit"}


class QemuError(RuntimeError):
    """qemu did not start, mpremote could not talk to the board, or the script raised
    (``check=True``). ``.output`` holds what the board printed, ``.returncode`` mpremote's."""

    def __init__(self, msg, output="", returncode=None):
        RuntimeError.__init__(self, msg)
        self.output = output
        self.returncode = returncode


class QemuTimeout(QemuError):
    """The script did not finish within the timeout (qemu was killed)."""


def _existing(path):
    return path if path and os.path.isfile(path) else None


def _env_or(var, built):
    p = os.environ.get(var)
    if p:
        return _existing(p)
    return _existing(built)


def unix_binary():
    """64-bit MicroPython unix port (PNP_MICROPYTHON overrides), or None."""
    return _env_or("PNP_MICROPYTHON", os.path.join(OUT, "unix", "micropython"))


def unix32_binary():
    """32-bit MicroPython unix port (PNP_MICROPYTHON32 overrides), or None."""
    return _env_or("PNP_MICROPYTHON32", os.path.join(OUT, "unix32", "micropython"))


def unix32_frozen_binary():
    """32-bit unix port with firmware/manifest.py frozen (PNP_MICROPYTHON32_FROZEN), or None."""
    return _env_or("PNP_MICROPYTHON32_FROZEN", os.path.join(OUT, "unix32-frozen", "micropython"))


def qemu_build():
    """boards/qemu/build.py as a module (the one qemu firmware builder)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("pnp_qemu_build", os.path.join(REPO, "boards", "qemu", "build.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def qemu_firmware(board="MPS2_AN385", frozen=False):
    """firmware.elf of MicroPython's qemu port for ``board`` (plain, or with pnpipsec
    frozen in); PNP_QEMU_FIRMWARE / PNP_QEMU_FIRMWARE_FROZEN override; None if absent
    (only MPS2_AN385 is built here)."""
    var = "PNP_QEMU_FIRMWARE_FROZEN" if frozen else "PNP_QEMU_FIRMWARE"
    built = qemu_build().firmware_path("port", frozen) if board == "MPS2_AN385" else None
    return _env_or(var, built)


def qemu_system():
    return shutil.which("qemu-system-arm")


def mpremote():
    for p in (os.path.join(REPO, ".venv", "bin", "mpremote"), shutil.which("mpremote")):
        if p and os.path.exists(p):
            return p
    return None


def _kill(proc):
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def start_qemu(firmware, board="MPS2_AN385", extra_args=(), timeout=10):
    """Boot ``firmware``; returns (Popen, "/dev/pts/N"). The caller must kill the Popen
    (``stop_qemu``). qemu runs in its own process group."""
    exe = qemu_system()
    if exe is None:
        raise QemuError("qemu-system-arm not found: install qemu-system-arm (scripts/setup.sh as root)")
    machine = QEMU_MACHINES.get(board, board.lower().replace("_", "-"))
    cmd = [exe, "-machine", machine, "-nographic", "-monitor", "null", "-semihosting",
           "-icount", "shift=0", "-serial", "pty", "-kernel", firmware] + list(extra_args)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    seen = b""
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
            i = line.find(b"/dev/pts/")
            if i >= 0:
                pts = line[i:].split()[0].decode()
                return proc, pts
        raise QemuError("qemu did not open its serial pty: %s" % seen.decode(errors="replace")[-500:])
    except BaseException:
        _kill(proc)
        raise


def stop_qemu(proc):
    _kill(proc)


def run_qemu_script(firmware, script_text, timeout=120, board="MPS2_AN385", mount=None, check=True):
    """Run ``script_text`` on the qemu board booted from ``firmware`` and return what it
    printed (str). ``mount``: a host directory that mpremote mounts at /remote (the
    current directory of the script; read over the serial line). Raises QemuTimeout when
    the script runs longer than ``timeout`` s, QemuError when qemu/mpremote fail or, with
    ``check``, when the script raised (the output is in ``.output``). qemu is always killed."""
    mp = mpremote()
    if mp is None:
        raise QemuError("mpremote not found: run scripts/setup.sh (it is in requirements.txt)")
    if not os.path.isfile(firmware):
        raise QemuError("no firmware at %s: run scripts/build-micropython.sh" % firmware)
    tmp = tempfile.mkdtemp(prefix="pnp-qemu-")
    proc = mpr = None
    try:
        script = os.path.join(tmp, "script.py")
        with open(script, "w") as f:
            f.write(script_text)
        proc, pts = start_qemu(firmware, board)
        cmd = [mp, "connect", pts] + (["mount", mount] if mount else []) + ["run", script]
        mpr = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            out, _ = mpr.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(mpr)
            out = mpr.stdout.read() if mpr.stdout else b""
            raise QemuTimeout("script did not finish within %s s on %s" % (timeout, board),
                              out.decode(errors="replace"))
        text = out.decode(errors="replace").replace("\r\n", "\n")
        if mount and text.startswith("Local directory "):
            text = text.split("\n", 1)[1] if "\n" in text else ""
        if check and mpr.returncode != 0:
            raise QemuError("script failed on %s (mpremote exit %d):\n%s" % (board, mpr.returncode, text[-3000:]),
                            text, mpr.returncode)
        return text
    finally:
        _kill(mpr)
        _kill(proc)
        shutil.rmtree(tmp, ignore_errors=True)
