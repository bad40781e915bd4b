"""`pnp vboard --state DIR [--link PATH] [--board wasm|qemu]`: run a virtual board that mpremote can drive.

Two virtual boards: `wasm` (default, below) and `qemu` (MicroPython's qemu port on an
emulated Cortex-M3, boards/qemu/README.md): qemu-system-arm with the console UART on a
pty and UDP over a second UART bridged by boards/qemu/relay.py; the firmware is built
on first use (boards/qemu/build.py; --profile esp32|pico_w sets the heap, --frozen
freezes pnpipsec into it). Both print `device: /dev/pts/N` and stop on SIGTERM.

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

The board's addresses (what `board.addresses()` / `address_list()` report; ::1 and
127.0.0.1 at start) change through its control socket DIR/ctl.sock, as a router or a
DHCP server would change a real board's; the board's Python gets each change as an
address event (`board.on_address_change`, `board.watch()`):

    pnp vboard --state /tmp/vb --address added 2001:db8:b::7 --preferred 3600 --valid 7200
    pnp vboard --state /tmp/vb --address deprecated 2001:db8:a::7 --valid 600
    pnp vboard --state /tmp/vb --address removed 2001:db8:a::7
    pnp vboard --state /tmp/vb --addresses            # the board's table

(from Python: set_address(state, kind, address, ...) / addresses(state)). The qemu
board takes the same commands: its relay (boards/qemu/relay.py) listens on DIR/ctl.sock
and passes each change to the board as an A frame over the link.

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

from pnp import paths

REPO = paths.ROOT   # the checkout, or the installed package data (pnp/paths.py)
BOARD_MJS = os.path.join(REPO, "boards", "wasm", "board.mjs")
WASM_PKG = paths.wasm_package() or os.path.join(REPO, "node_modules", "@micropython", "micropython-webassembly-pyscript")


class VboardError(Exception):
    pass


def _state_dir(state: str) -> str:
    """The state folder as an absolute path, created if missing; VboardError if it is
    something else (a file, a path through a file, no permission)."""
    state = os.path.abspath(state)
    if os.path.lexists(state) and not os.path.isdir(state):
        raise VboardError("--state %s: not a directory (a file is there)" % state)
    try:
        os.makedirs(state, exist_ok=True)
    except OSError as e:
        raise VboardError("--state %s: cannot create the folder: %s" % (state, e.strerror or e))
    return state


def prerequisites() -> list[str]:
    """What is missing to run a virtual board (empty when nothing is)."""
    missing = []
    if shutil.which("node") is None:
        missing.append("node (Node.js >= 20) not on PATH")
    if not os.path.isdir(WASM_PKG):
        missing.append(paths.WASM_MISSING)
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
    env = paths.node_env()
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
    state = _state_dir(state)
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


# ------------------------------------------------------------------ the address control socket
CONTROL_SOCK = "ctl.sock"
ADDRESS_KINDS = ("added", "deprecated", "removed")


def control(state: str, request: dict, timeout: float = 5.0) -> dict:
    """Send one request to the running board's control socket (STATE/ctl.sock) and
    return its reply; VboardError when no board listens there or it refuses."""
    import json
    import socket
    path = os.path.join(os.path.abspath(state), CONTROL_SOCK)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except OSError as e:
            raise VboardError("no virtual board listens on %s (%s); start one with pnp vboard --state %s"
                              % (path, e.strerror or e, state))
        s.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise VboardError("the board closed its control socket without a reply")
            buf += chunk
    except socket.timeout:
        raise VboardError("no reply on %s within %s s" % (path, timeout))
    finally:
        s.close()
    reply = json.loads(buf)
    if not reply.get("ok"):
        raise VboardError("the board refused %s: %s" % (request.get("op"), reply.get("error")))
    return reply


def set_address(state: str, kind: str, address: str, preferred: int | None = None,
                valid: int | None = None, flags=None, zone=None, timeout: float = 5.0) -> tuple:
    """Add, deprecate or remove one of the board's addresses; the board's Python sees the
    address event (kind, address, zone, preferred_s, valid_s, flags), returned here.
    flags: e.g. ("temporary",); None keeps the address's flags (or guesses them)."""
    if kind not in ADDRESS_KINDS:
        raise VboardError("address event kind must be one of %s, not %r" % (", ".join(ADDRESS_KINDS), kind))
    req = {"op": "address", "kind": kind, "address": address, "preferred": preferred, "valid": valid}
    if flags is not None:
        req["flags"] = list(flags)
    if zone is not None:
        req["zone"] = zone
    ev = control(state, req, timeout)["event"]
    return (ev[0], ev[1], ev[2], ev[3], ev[4], tuple(ev[5]))


def addresses(state: str, timeout: float = 5.0) -> list:
    """The board's address table: [(address, state, preferred_s, valid_s, zone, flags)]."""
    return [(a[0], a[1], a[2], a[3], a[4], tuple(a[5])) for a in control(state, {"op": "addresses"}, timeout)["addresses"]]


def _address_command(args) -> int:
    try:
        if args.address:
            kind, addr = args.address
            ev = set_address(args.state, kind, addr, args.preferred, args.valid,
                             flags=("temporary",) if args.temporary else None)
            print("address %s" % " ".join(str(x) for x in ev))
        for a in addresses(args.state):
            print("%s %s (preferred %s, valid %s)%s" % (a[0], a[1], "forever" if a[2] is None else "%s s" % a[2],
                                                       "forever" if a[3] is None else "%s s" % a[3],
                                                       " " + ", ".join(a[5]) if a[5] else ""))
    except VboardError as e:
        print("pnp vboard: %s" % e, file=sys.stderr)
        return 2
    return 0


# ------------------------------------------------------------------ the qemu board
QEMU_DIR = os.path.join(REPO, "boards", "qemu")


def _qemu_build_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("pnp_qemu_build", os.path.join(QEMU_DIR, "build.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def qemu_prerequisites() -> list[str]:
    """What is missing to build and run the qemu board (empty when nothing is)."""
    return _qemu_build_module().prerequisites()


def qemu_firmware(profile: str = "esp32", frozen: bool = False, log=None, romfs: bool = False) -> str:
    """firmware.elf of the profile, built when missing or older than its inputs (romfs: the
    variant with a ROM segment at /rom for `mpremote romfs deploy`)."""
    b = _qemu_build_module()
    try:
        return b.build(profile, frozen, log=log, romfs=romfs)
    except b.BuildError as e:
        raise VboardError("building the qemu firmware: %s" % e)


def qemu_command(firmware: str, link_sock: str, icount=None) -> list[str]:
    """qemu-system-arm for the MPS2-AN385: UART0 (console, REPL, mpremote) on a pty,
    UART1 (the UDP link) on a unix socket server at link_sock that the relay connects to;
    the qemu monitor on monitor.sock next to it (e.g. `info registers` when the board hangs)."""
    for ch in ",":
        if ch in link_sock:
            raise VboardError("the socket path %r contains %r, which qemu's option syntax cannot carry" % (link_sock, ch))
    monitor = os.path.join(os.path.dirname(link_sock), "monitor.sock")
    cmd = ["qemu-system-arm", "-machine", "mps2-an385", "-display", "none",
           "-monitor", "unix:%s,server=on,wait=off" % monitor,
           "-semihosting", "-serial", "pty",
           "-chardev", "socket,id=pnplink,path=%s,server=on,wait=off" % link_sock,
           "-serial", "chardev:pnplink", "-kernel", firmware]
    if icount is not None and icount is not False:
        # align=on: the guest never runs ahead of real time (it may lag behind it when
        # the host cannot keep up), so a peer on the host sees the emulated speed
        cmd[1:1] = ["-icount", "shift=%d,align=on" % (0 if icount is True else int(icount))]
    return cmd


def start_qemu(state: str, link: str | None = None, profile: str = "esp32", frozen: bool = False,
               firmware: str | None = None, bind4: str = "127.0.0.1", bind6: str = "::1",
               icount=None, timeout: float = 20.0, stderr=None, log=None, romfs: bool = False):
    """Start qemu + the relay; returns (Popen of qemu, device /dev/pts/N).

    The relay keeps the board's addresses and answers on STATE/ctl.sock (set_address,
    addresses, `pnp vboard --address`), as the wasm board does.

    Both run in one new process group (qemu leads it): stop() ends both. The relay's
    log goes to STATE/relay.log, qemu's messages to STATE/qemu.log."""
    # running needs qemu only; building (when the firmware is missing or stale) names
    # the compiler it lacks
    missing = [m for m in qemu_prerequisites() if m.startswith("qemu-system-arm")]
    if missing:
        raise VboardError("; ".join(missing))
    state = _state_dir(state)
    fw = firmware or qemu_firmware(profile, frozen, log=log, romfs=romfs)
    link = os.path.abspath(link or os.path.join(state, "tty"))
    if os.path.lexists(link):
        os.unlink(link)
    sock = os.path.join(state, "link.sock")
    if os.path.exists(sock):
        os.unlink(sock)
    qlog_path = os.path.join(state, "qemu.log")
    # One shell in a new session starts the relay in the background (it retries until
    # qemu's socket exists) and then becomes qemu: proc.pid is qemu, and both share the
    # process group that stop() signals. Paths travel in the environment, never quoted.
    env = dict(os.environ)
    env.update({"PNPQ_PY": sys.executable, "PNPQ_RELAY": os.path.join(QEMU_DIR, "relay.py"),
                "PNPQ_SOCK": sock, "PNPQ_B4": bind4 or "", "PNPQ_B6": bind6 or "",
                "PNPQ_CTL": os.path.join(state, CONTROL_SOCK),
                "PNPQ_RLOG": os.path.join(state, "relay.log"), "PNPQ_QLOG": qlog_path})
    script = ('"$PNPQ_PY" "$PNPQ_RELAY" --connect "$PNPQ_SOCK" --bind4 "$PNPQ_B4" --bind6 "$PNPQ_B6" '
              '--control "$PNPQ_CTL" >"$PNPQ_RLOG" 2>&1 </dev/null &\nexec "$@" >"$PNPQ_QLOG" 2>&1 </dev/null\n')
    open(qlog_path, "w").close()
    proc = subprocess.Popen(["sh", "-c", script, "sh"] + qemu_command(fw, sock, icount=icount), env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                            start_new_session=True, cwd=state)
    deadline = time.monotonic() + timeout
    dev = None
    while dev is None:
        with open(qlog_path) as f:
            for line in f:
                if "redirected to /dev/pts/" in line and "serial0" in line:
                    dev = line.split("redirected to ", 1)[1].split()[0]
        if dev is None:
            if proc.poll() is not None:
                raise VboardError("qemu exited with status %s: %s" % (proc.returncode, open(qlog_path).read().strip()))
            if time.monotonic() > deadline:
                stop(proc)
                raise VboardError("qemu named no pty within %s s" % timeout)
            time.sleep(0.02)
    rlog = os.path.join(state, "relay.log")
    while "connected to" not in open(rlog).read() if os.path.exists(rlog) else True:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise VboardError("the UDP relay did not connect to qemu's link socket (see %s)" % rlog)
        time.sleep(0.02)
    os.symlink(dev, link)
    return proc, dev


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--board", choices=("wasm", "qemu"), default="wasm",
                   help="wasm: MicroPython WebAssembly under Node (default); qemu: MicroPython on an "
                        "emulated Cortex-M3 with UDP over a second UART (boards/qemu/README.md)")
    p.add_argument("--profile", choices=("esp32", "pico_w", "pico", "large"), default="esp32",
                   help="qemu: the GC heap of the board it stands for (esp32 ~110 KiB, pico_w ~178 KiB, "
                        "pico ~205 KiB free; large 320 KiB, no real board)")
    p.add_argument("--frozen", action="store_true", help="qemu: firmware with pnpipsec frozen in")
    p.add_argument("--romfs", action="store_true",
                   help="qemu: firmware with a ROMFS segment mounted at /rom (`pnp deploy --romfs`)")
    p.add_argument("--firmware", metavar="ELF", help="qemu: run this firmware.elf instead of building one")
    p.add_argument("--icount", type=int, nargs="?", const=0, default=None, metavar="SHIFT",
                   help="qemu: -icount shift=SHIFT (default 0): each instruction takes 2**SHIFT virtual ns, "
                        "so the guest clock counts instructions, and the guest never runs ahead of real time "
                        "(align=on); 3 is 125 M instructions/s, about an RP2040 at 133 MHz at CPI 1")
    p.add_argument("--state", required=True, metavar="DIR",
                   help="host folder of the board (DIR/fs is its file system; created if absent)")
    p.add_argument("--link", metavar="PATH", help="where the pty appears (default DIR/tty)")
    p.add_argument("--watchdog", type=float, default=2.0, metavar="S",
                   help="hard-reset code that ignores Ctrl-C for S seconds (0: never; default 2)")
    p.add_argument("--safe", action="store_true", help="first boot skips main.py")
    p.add_argument("--heapsize", type=int, metavar="BYTES", help="initial MicroPython heap")
    g = p.add_argument_group("the running board's addresses (through DIR/ctl.sock; prints the table and exits)")
    g.add_argument("--address", nargs=2, metavar=("KIND", "ADDR"),
                   help="send one address event: KIND added, deprecated or removed")
    g.add_argument("--preferred", type=int, metavar="S", help="with --address: preferred lifetime (s)")
    g.add_argument("--valid", type=int, metavar="S", help="with --address: valid lifetime (s)")
    g.add_argument("--temporary", action="store_true", help="with --address added: an RFC 8981 temporary address")
    g.add_argument("--addresses", action="store_true", help="print the board's address table")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "address", None) or getattr(args, "addresses", False):
        return _address_command(args)
    try:
        st = os.path.abspath(args.state)
        if os.path.lexists(st) and not os.path.isdir(st):     # before any prerequisite
            raise VboardError("--state %s: not a directory (a file is there)" % st)
        if getattr(args, "board", "wasm") == "qemu":
            proc, link = start_qemu(args.state, args.link, profile=args.profile, frozen=args.frozen,
                                    firmware=args.firmware, icount=args.icount,
                                    romfs=getattr(args, "romfs", False),
                                    log=lambda m: print("pnp vboard: " + m, file=sys.stderr, flush=True))
        else:
            proc, link = start(args.state, args.link, watchdog=args.watchdog, safe=args.safe,
                               heapsize=args.heapsize)
    except VboardError as e:
        print("pnp vboard: %s" % e, file=sys.stderr)
        return 2
    print("device: %s" % link, flush=True)
    if getattr(args, "board", "wasm") == "qemu":
        print("pnp vboard: qemu board (%s%s); link %s -> %s; UDP relay log %s; stop with SIGTERM or Ctrl-C"
              % (args.profile, (", frozen" if args.frozen else "") + (", romfs" if getattr(args, "romfs", False) else ""),
                 os.path.abspath(args.link or os.path.join(args.state, "tty")), link,
                 os.path.join(os.path.abspath(args.state), "relay.log")), file=sys.stderr, flush=True)
    else:
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
    print("pnp vboard: the board exited (%s status %s)" % (getattr(args, "board", "wasm") == "qemu" and "qemu" or "socat", rc), file=sys.stderr)
    return 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="pnp vboard", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
