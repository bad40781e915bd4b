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

import contextlib
import os
import subprocess
import sys

from pnp import vboard as _vb

from .conftest import VENV


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
