"""Virtual boards for tests: start one, drive it with the real mpremote, stop it.

    from host_tests.vboard_util import vboard, mpremote

    with vboard(tmp_path / "board") as dev:            # dev: /dev/pts/N
        mpremote(dev, "fs", "cp", "main.py", ":main.py", "+", "reset")
        print(mpremote(dev, "exec", "print(1+1)").stdout)   # "2\\n"

or start_vboard(state_dir) -> (proc, device) and stop_vboard(proc). The board's
file system lives in state_dir/fs (it survives stop/start with the same state_dir);
the board's stderr goes to state_dir/vboard.log. Every process started here is in one
process group that stop_vboard ends (SIGTERM, then SIGKILL after 5 s).

Prerequisites (node, node_modules, socat): vboard_missing() lists what is absent;
tests call conftest.missing() with it (skip locally, fail when CI=true).
"""

import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import time

from pnp import vboard as _vb

from pnp_hostboard.board import HostBoard
from pnpipsec import AUTHENTICATED
from pnpipsec.identity import Identity
from pnpipsec.node import Node, PeerEntry, zero_config

from .conftest import VENV

BOARD = "127.0.0.1"      # where the boards' UDP ends up (the wasm bridge, the qemu relay)


def vboard_missing():
    """Reasons a virtual board cannot run here (empty list when it can)."""
    out = list(_vb.prerequisites())
    if mpremote_cmd() is None:
        out.append("mpremote not found (scripts/setup.sh installs it into .venv)")
    return out


def mpremote_cmd():
    exe = VENV.bin("mpremote")
    if exe:
        return [exe]
    try:
        import mpremote  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "mpremote"]


def mpremote(device, *args, timeout=60, check=True, input=None):
    """Run `mpremote connect DEVICE ARGS...`; returns the CompletedProcess (text)."""
    cmd = mpremote_cmd() + ["connect", device] + [str(a) for a in args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise AssertionError("%s -> %d\nstdout: %s\nstderr: %s"
                             % (" ".join(cmd), r.returncode, r.stdout, r.stderr))
    return r


def start_vboard(state_dir, watchdog=2.0, safe=False, ready=True, timeout=30.0):
    """Start a virtual board on state_dir; returns (proc, device path /dev/pts/N).

    With ready=True, returns once the board has booted (board.mjs writes STATE/ready;
    waiting for it sends nothing to the board, which an mpremote probe would: its
    Ctrl-C would stop a main.py app)."""
    state_dir = os.fspath(state_dir)
    os.makedirs(state_dir, exist_ok=True)
    log = open(os.path.join(state_dir, "vboard.log"), "ab")
    try:
        proc, device = _vb.start(state_dir, watchdog=watchdog, safe=safe, stderr=log,
                                 wait_ready=ready, timeout=timeout)
    finally:
        log.close()
    return proc, device


def stop_vboard(proc):
    """Stop a board from start_vboard (its whole process group); idempotent."""
    _vb.stop(proc)


@contextlib.contextmanager
def vboard(state_dir, **kw):
    """Context manager: yields the device path; the board is stopped on exit."""
    proc, device = start_vboard(state_dir, **kw)
    try:
        yield device
    finally:
        stop_vboard(proc)


def free_udp_port():
    for _ in range(100):
        p = random.randint(20000, 60000)
        socks = []
        try:
            for fam, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
                s = socket.socket(fam, socket.SOCK_DGRAM)
                socks.append(s)
                if fam == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((host, p))
            return p
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port")


async def join_board(natt, app, approve_key=None, timeout=30, patience=10):
    """A CPython node meets a board (virtual or qemu) at BOARD:natt and echoes through
    app: {"levels": (first, before approval, after), "proved": key, "reply": (data,
    addr, level), "t_enc", "t_auth", "t_echo"} (s). patience bounds each later wait."""
    ours = free_udp_port()
    node = Node(HostBoard(bind6=None, bind4="127.0.0.1"), Identity(os.urandom(32)),
                peers=[PeerEntry(BOARD, zero_config(), ike_port=natt, natt_port=natt)],
                ike_port=ours, natt_port=ours, tofu=False)
    await node.start()
    try:
        if approve_key is not None:
            node.approve(BOARD, approve_key)
        t0 = time.monotonic()
        first = await node.connect(BOARD, timeout=timeout)
        t_enc = time.monotonic() - t0
        deadline = time.monotonic() + patience
        while BOARD not in node.proved and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        proved = node.proved.get(BOARD)
        before = node.level(BOARD)
        if approve_key is None and proved is not None:
            node.approve(BOARD, proved)      # the user trusts the fingerprint the board shows
        after = await node.wait_level(BOARD, AUTHENTICATED, timeout=patience)
        t_auth = time.monotonic() - t0
        ep = node.endpoint(free_udp_port())
        t1 = time.monotonic()
        await ep.send(b"ping from CPython", (BOARD, app), timeout=patience)
        reply = await asyncio.wait_for(ep.recv(), patience)
        t_echo = time.monotonic() - t1
        return {"levels": (first, before, after), "proved": proved, "reply": reply,
                "t_enc": t_enc, "t_auth": t_auth, "t_echo": t_echo}
    finally:
        await node.stop()
