"""End to end on the qemu board: MicroPython on an emulated Cortex-M3 (MPS2-AN385), UDP
over its second UART through the host relay (boards/qemu/README.md).

Started as a user starts it (`python -m pnp.vboard --board qemu`, which prints the
device), driven by stock mpremote. Two firmware builds (boards/qemu/build.py), both
built here when missing:

  * pico_w profile (GC heap ~178 KiB free): `pnp deploy` copies the package as .mpy
    files, the board boots main.py, makes its identity, and a CPython node joins it
    over real UDP: ENCRYPTED (NULL auth), AUTHENTICATED once the proved key is approved,
    datagrams both ways; the board's stored identity (read back with mpremote, which
    must interrupt the running node with Ctrl-C) is the key it proved; after
    machine.reset() the same identity comes back from the RAM disk.
  * esp32 profile (GC heap ~110 KiB free) with pnpipsec frozen into the firmware: only
    main.py and pnp.json are copied; the same join. (From .mpy files the package does
    not fit an ESP32's heap: README "Boards".) The pico_w run is throttled to ~125 M
    instructions/s (`--icount 3`), near an RP2040's speed.

Skipped locally when the toolchain or qemu is missing; under CI=true that is a failure.
"""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from host_tests.conftest import missing
from host_tests.vboard_util import BOARD, free_udp_port, join_board, mpremote, mpremote_cmd
from pnp import vboard as _vb
from pnpipsec import AUTHENTICATED, ENCRYPTED
from pnpipsec.identity import Identity, decode

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILE_MPY = os.environ.get("PNP_QEMU_MPY_PROFILE", "large")


def _need():
    why = list(_vb.qemu_prerequisites())
    if mpremote_cmd() is None:
        why.append("mpremote not found")
    if why:
        missing("qemu board: " + "; ".join(why))


def start_board(state, profile, frozen, icount=None):
    """`python -m pnp.vboard --board qemu ...`; returns (proc, device)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(REPO, "tools") + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "pnp.vboard", "--board", "qemu", "--state", state, "--profile", profile]
    if frozen:
        cmd.append("--frozen")
    if icount is not None:
        cmd += ["--icount", str(icount)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()      # the firmware is built first when missing (~1 min)
    m = re.match(r"device: (\S+)$", line.strip())
    if not m:
        proc.kill()
        raise AssertionError("pnp vboard printed %r; stderr: %s" % (line, proc.stderr.read()))
    return proc, m.group(1)


def stop_board(proc, state):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    assert rc == 0, "pnp vboard exited with %s" % rc
    # qemu and the relay are gone with it
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = open("/proc/%s/cmdline" % pid, "rb").read()
            except OSError:
                continue
            assert state.encode() not in cmd, "left running: %r" % cmd


def wait_bound(state, port, timeout=90):
    """Wait until the board asked the relay for `port` (its node started)."""
    log = os.path.join(state, "relay.log")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(log) and ("bound UDP %d " % port) in open(log).read():
            return time.monotonic()
        time.sleep(0.1)
    raise AssertionError("the board never bound UDP %d; relay log:\n%s" % (port, open(log).read()))


def _check(r, expect_key=None):
    first, before, after = r["levels"]
    assert first == ENCRYPTED                       # NULL auth first
    assert r["proved"] is not None                  # the board proved a key
    if expect_key is not None:
        assert r["proved"] == expect_key
    assert after == AUTHENTICATED
    data, addr, level = r["reply"]
    assert (data, addr[0], level) == (b"echo: ping from CPython", BOARD, AUTHENTICATED)


def _report(record_property, tag, r):
    for k in ("t_enc", "t_auth", "t_echo"):
        record_property("%s_%s_s" % (tag, k), round(r[k], 3))
    sys.stdout.write("\n[qemu %s] ENCRYPTED after %.2f s, AUTHENTICATED after %.2f s, echo %.0f ms\n"
                     % (tag, r["t_enc"], r["t_auth"], r["t_echo"] * 1e3))


def _config(tmp_path):
    natt, app = free_udp_port(), free_udp_port()
    cfg = tmp_path / "pnp.json"
    cfg.write_text(json.dumps({"natt_port": natt, "app_port": app}))
    return natt, app, str(cfg)


def reset_and_rejoin(dev, state, natt, app, tmp_path, proved):
    """mpremote takes the board over (Ctrl-C into the running node) and reads the key the
    board stored: the one it proved. Then machine.reset() (a system reset): the RAM disk
    keeps the identity, and the pre-approved key is AUTHENTICATED at once."""
    ident_file = str(tmp_path / "identity")
    mpremote(dev, "fs", "cp", ":pnpipsec-state/identity", ident_file, timeout=60)
    ident = Identity(decode(open(ident_file, "rb").read()))
    assert ident.public == proved
    log = os.path.join(state, "relay.log")
    seen = len(open(log).read())
    mpremote(dev, "reset")
    deadline = time.monotonic() + 90
    while not re.search(r"board hello[\s\S]*bound UDP %d " % app, open(log).read()[seen:]):
        assert time.monotonic() < deadline, open(log).read()
        time.sleep(0.1)
    res2 = asyncio.run(join_board(natt, app, approve_key=ident.public, timeout=60, patience=30))
    _check(res2, expect_key=ident.public)
    return res2


def test_qemu_mpy_deploy_boot_and_join(tmp_path, record_property):
    _need()
    state = str(tmp_path / "board")
    natt, app, cfg = _config(tmp_path)
    proc, dev = start_board(state, PROFILE_MPY, frozen=False)
    try:
        assert dev.startswith("/dev/pts/") and os.path.realpath(os.path.join(state, "tty")) == dev
        r = subprocess.run([sys.executable, "-m", "pnp.cli", "deploy", "--port", dev, "--board", "qemu"],
                           capture_output=True, text=True, timeout=180, cwd=REPO)
        out = r.stdout + r.stderr
        assert r.returncode == 0 and "self-test: ok" in out, out
        assert "aes-PureAES" in out                # no cryptolib in the qemu port
        free = mpremote(dev, "exec", "import gc; gc.collect(); print(gc.mem_free())").stdout.split()[-1]
        record_property(PROFILE_MPY + "_free_heap_after_deploy", int(free))
        mpremote(dev, "fs", "cp", cfg, ":pnp.json", "+", "reset")
        t_boot = time.monotonic()
        wait_bound(state, app)
        sys.stdout.write("\n[qemu %s] main.py up (identity made, node started) %.1f s after reset\n"
                         % (PROFILE_MPY, time.monotonic() - t_boot))
        res = asyncio.run(join_board(natt, app, timeout=60, patience=30))
        _check(res)
        _report(record_property, PROFILE_MPY + "_mpy", res)

        reset_and_rejoin(dev, state, natt, app, tmp_path, res["proved"])
    finally:
        stop_board(proc, state)


@pytest.mark.parametrize("profile,icount", [("esp32", None), ("pico_w", 3)])
def test_qemu_frozen_join(profile, icount, tmp_path, record_property):
    """pico_w runs with -icount shift=3,align=on: 125 M instructions per second of real
    time at most, about an RP2040 at 133 MHz, so the timings approach a real board's."""
    _need()
    state = str(tmp_path / "board")
    natt, app, cfg = _config(tmp_path)
    proc, dev = start_board(state, profile, frozen=True, icount=icount)
    try:
        out = mpremote(dev, "exec", "import gc, os, pnpipsec, board; gc.collect(); "
                                    "print(os.listdir('/'), gc.mem_free())").stdout.split()
        assert out[-2] == "[]", out      # an empty file system: the package is in the firmware
        record_property(profile + "_frozen_free_heap", int(out[-1]))
        mpremote(dev, "fs", "cp", os.path.join(REPO, "boards", "qemu", "main.py"), ":main.py",
                 "+", "fs", "cp", cfg, ":pnp.json", "+", "reset")
        wait_bound(state, app)
        res = asyncio.run(join_board(natt, app, timeout=60, patience=30))
        _check(res)
        _report(record_property, profile + "_frozen" + ("_icount%d" % icount if icount is not None else ""), res)
        reset_and_rejoin(dev, state, natt, app, tmp_path, res["proved"])
    finally:
        stop_board(proc, state)
