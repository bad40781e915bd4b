"""`pnp vboard --state DIR [--link PATH]`: run a virtual board that mpremote can drive.

The board is MicroPython WebAssembly under Node (boards/wasm/board.mjs) behind a
pseudo-terminal made by socat:

    socat PTY,rawer,link=PATH SYSTEM:'exec node boards/wasm/board.mjs --state DIR'

Prints one line `device: /dev/pts/N` on stdout once the board has booted (stderr
names the link PATH, a stable symlink to the pty, default DIR/tty), then runs until
SIGTERM/SIGINT, which stops socat and node (the board writes its file system back to
DIR/fs first). Give mpremote the /dev/pts/N path: there it reads without its 10 ms
polling sleeps (about 4x faster copies than through the symlink).

    pnp vboard --state /tmp/vb &              # device: /dev/pts/3
    mpremote connect /dev/pts/3 exec "print(1+1)"
    mpremote connect /dev/pts/3 fs cp main.py :main.py + reset    # boots into main.py

DIR/fs is the board's file system (it persists across board restarts). Inside the board,
`from board import Board` gives the board object of HACKING.md ("Board interface"),
see boards/wasm/board.py. Needs node (>= 20), node_modules (npm ci) and socat.

Also runnable as `python -m pnp.vboard ...`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BOARD_MJS = os.path.join(REPO, "boards", "wasm", "board.mjs")
WASM_PKG = os.path.join(REPO, "node_modules", "@micropython", "micropython-webassembly-pyscript")


class VboardError(Exception):
    pass


def prerequisites() -> list[str]:
    """What is missing to run a virtual board (empty when nothing is)."""
    missing = []
    if shutil.which("node") is None:
        missing.append("node (Node.js >= 20) not on PATH")
    if not os.path.isdir(WASM_PKG):
        missing.append("node_modules/@micropython/micropython-webassembly-pyscript missing (run `npm ci` or make setup)")
    if shutil.which("socat") is None:
        missing.append("socat not on PATH (Debian package socat)")
    return missing


def command(state: str, link: str, watchdog: float = 2.0, safe: bool = False,
            heapsize: int | None = None) -> tuple[list[str], dict]:
    """(argv, environment) of the socat process that runs the board behind a pty at `link`.

    The paths travel in environment variables, so socat's address syntax (which gives
    meaning to , : ! and quotes) never sees them; only the link path is in the address."""
    for ch in ",:!\"'\\ ":
        if ch in link:
            raise VboardError("the pty path %r contains %r, which socat's address syntax cannot carry" % (link, ch))
    env = dict(os.environ)
    env["VBOARD_NODE"] = shutil.which("node") or "node"
    env["VBOARD_MJS"] = BOARD_MJS
    env["VBOARD_STATE"] = state
    extra = " --watchdog %g" % watchdog
    if safe:
        extra += " --safe"
    if heapsize:
        extra += " --heapsize %d" % int(heapsize)
    inner = 'exec \\"$VBOARD_NODE\\" \\"$VBOARD_MJS\\" --state \\"$VBOARD_STATE\\"' + extra
    return ["socat", "PTY,rawer,link=%s" % link, "SYSTEM:" + inner], env


def start(state: str, link: str | None = None, watchdog: float = 2.0, safe: bool = False,
          heapsize: int | None = None, timeout: float = 20.0, stderr=None, wait_ready: bool = True):
    """Start socat + the board; returns (Popen of socat, device) once the pty exists.

    With wait_ready, returns only once the board has booted (STATE/ready exists).
    device is the pty itself (/dev/pts/N, what `link` points to): mpremote is several
    times faster on a /dev/pts/ path than on a symlink to it.

    The processes run in a new session (process group): stop() signals that group."""
    missing = prerequisites()
    if missing:
        raise VboardError("; ".join(missing))
    state = os.path.abspath(state)
    os.makedirs(state, exist_ok=True)
    link = os.path.abspath(link or os.path.join(state, "tty"))
    if os.path.lexists(link):
        os.unlink(link)
    marker = os.path.join(state, "ready")
    if os.path.exists(marker):
        os.unlink(marker)
    cmd, env = command(state, link, watchdog=watchdog, safe=safe, heapsize=heapsize)
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=stderr, start_new_session=True, cwd=REPO)
    deadline = time.monotonic() + timeout
    while not os.path.exists(link):
        if proc.poll() is not None:
            raise VboardError("socat exited with status %s before the pty appeared" % proc.returncode)
        if time.monotonic() > deadline:
            stop(proc)
            raise VboardError("no pty at %s after %s s" % (link, timeout))
        time.sleep(0.02)
    # board.mjs writes STATE/ready once the first boot is done (boot.py, main.py started)
    while wait_ready and not os.path.exists(marker):
        if proc.poll() is not None:
            raise VboardError("the board exited with status %s while booting" % proc.returncode)
        if time.monotonic() > deadline:
            stop(proc)
            raise VboardError("the board did not finish booting within %s s" % timeout)
        time.sleep(0.02)
    # mpremote reads a /dev/pts/N device byte by byte without its 10 ms polling sleeps
    # (transport_serial._is_pty_device), so hand out the real pty path, not the link.
    return proc, os.path.realpath(link)


def stop(proc, timeout: float = 5.0) -> None:
    """Stop the board started by start(): SIGTERM to its process group, then SIGKILL."""
    if proc is None:
        return
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    if pgid is not None and pgid == proc.pid:
        # node first (it writes the file system back), then socat
        _signal_group(pgid, signal.SIGTERM)
    elif proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if pgid is not None and pgid == proc.pid:
        deadline = time.monotonic() + timeout
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", required=True, metavar="DIR",
                   help="host folder of the board (DIR/fs is its file system; created if absent)")
    p.add_argument("--link", metavar="PATH", help="where the pty appears (default DIR/tty)")
    p.add_argument("--watchdog", type=float, default=2.0, metavar="S",
                   help="hard-reset code that ignores Ctrl-C for S seconds (0: never; default 2)")
    p.add_argument("--safe", action="store_true", help="first boot skips main.py")
    p.add_argument("--heapsize", type=int, metavar="BYTES", help="initial MicroPython heap")


def run(args: argparse.Namespace) -> int:
    try:
        proc, link = start(args.state, args.link, watchdog=args.watchdog, safe=args.safe,
                           heapsize=args.heapsize)
    except VboardError as e:
        print("pnp vboard: %s" % e, file=sys.stderr)
        return 2
    print("device: %s" % link, flush=True)
    print("pnp vboard: link %s -> %s; file system %s; stop with SIGTERM or Ctrl-C"
          % (os.path.abspath(args.link or os.path.join(args.state, "tty")), link,
             os.path.join(os.path.abspath(args.state), "fs")), file=sys.stderr, flush=True)

    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        while not stopping and proc.poll() is None:
            time.sleep(0.1)
    finally:
        rc = proc.poll()
        stop(proc)
    if stopping:
        return 0
    print("pnp vboard: the board exited (socat status %s)" % rc, file=sys.stderr)
    return 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="pnp vboard", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
