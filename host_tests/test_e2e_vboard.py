"""End to end on the virtual board: deploy with `pnp deploy` through the real mpremote
over the pseudo-terminal, reset, and the board -- real MicroPython running the real
firmware -- creates its identity at first boot and joins a CPython node over real UDP:
ENCRYPTED first (NULL auth), AUTHENTICATED once the user approves the key the board
proved, datagrams both ways, and the same identity after the board restarts.
"""

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time

from host_tests.conftest import missing
from host_tests.vboard_util import mpremote, start_vboard, stop_vboard, vboard_missing
from pnp_hostboard.board import HostBoard
from pnpipsec import AUTHENTICATED, ENCRYPTED
from pnpipsec.identity import Identity, decode
from pnpipsec.node import Node, PeerEntry, zero_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOARD = "127.0.0.1"


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


def board_identity(state):
    """The identity the board stored, read from the host folder its file system mirrors to."""
    path = os.path.join(state, "fs", "pnpipsec-state", "identity")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if os.path.exists(path):
            try:
                return Identity(decode(open(path, "rb").read()))
            except Exception:   # mirrored half-way: try again
                pass
        time.sleep(0.1)
    raise AssertionError("the board stored no identity in %s" % path)


async def join(natt, app, approve_key=None, timeout=30):
    """A CPython node meets the board; returns (levels seen, proved key, reply, seconds to ENCRYPTED)."""
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
        deadline = time.monotonic() + 10
        while BOARD not in node.proved and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        proved = node.proved.get(BOARD)
        before = node.level(BOARD)
        if approve_key is None and proved is not None:
            node.approve(BOARD, proved)      # the user trusts the fingerprint the board shows
        after = await node.wait_level(BOARD, AUTHENTICATED, timeout=5)
        ep = node.endpoint(free_udp_port())
        await ep.send(b"ping from CPython", (BOARD, app), timeout=10)
        reply = await asyncio.wait_for(ep.recv(), 10)
        return (first, before, after), proved, reply, t_enc
    finally:
        await node.stop()


def test_deploy_boot_and_join(tmp_path):
    why = vboard_missing()
    if why:
        missing("; ".join(why))
    state = str(tmp_path / "board")
    natt, app = free_udp_port(), free_udp_port()
    cfg = tmp_path / "pnp.json"
    cfg.write_text(json.dumps({"natt_port": natt, "app_port": app}))
    proc, dev = start_vboard(state)
    try:
        r = subprocess.run([sys.executable, "-m", "pnp.cli", "deploy", "--port", dev, "--board", "wasm",
                            "--main", os.path.join(REPO, "boards", "wasm", "main.py")],
                           capture_output=True, text=True, timeout=300, cwd=REPO)
        assert r.returncode == 0, r.stdout + r.stderr
        out = r.stdout + r.stderr
        assert "self-test: ok" in out, out
        listing = mpremote(dev, "fs", "ls", ":lib/pnpipsec").stdout
        assert "node.mpy" in listing and "engine" not in listing   # compiled; ike/ is a folder
        assert not os.path.exists(os.path.join(state, "fs", "pnpipsec-state", "identity"))
        mpremote(dev, "fs", "cp", str(cfg), ":pnp.json", "+", "reset")
        ident = board_identity(state)                   # made at first boot by main.py

        (first, before, after), proved, reply, t_enc = asyncio.run(join(natt, app))
        assert first == ENCRYPTED and before == ENCRYPTED    # NULL auth; key not yet trusted
        assert proved == ident.public                       # the board proved its own key
        assert after == AUTHENTICATED                        # ... and the approval lifted it
        data, addr, level = reply
        assert (data, addr[0], level) == (b"echo: ping from CPython", BOARD, AUTHENTICATED)
        print("\n[vboard] handshake to ENCRYPTED in %.0f ms (pure-Python X25519 on the board)" % (t_enc * 1e3))
    finally:
        stop_vboard(proc)

    # The board restarts: same identity from its flash, and an approved key needs no new trust.
    proc, dev = start_vboard(state)
    try:
        mpremote(dev, "reset")
        assert board_identity(state).public == ident.public
        (first, before, after), proved, reply, _ = asyncio.run(join(natt, app, approve_key=ident.public))
        assert proved == ident.public and after == AUTHENTICATED
        assert reply[0] == b"echo: ping from CPython"
    finally:
        stop_vboard(proc)
