"""End to end on the virtual board: deploy with `pnp deploy` through the real mpremote
over the pseudo-terminal, reset, and the board -- real MicroPython running the real
firmware -- creates its identity at first boot and joins a CPython node over real UDP:
ENCRYPTED first (NULL auth), AUTHENTICATED once the user approves the key the board
proved, datagrams both ways, and the same identity after the board restarts.
"""

import asyncio
import json
import os
import subprocess
import sys
import time

from host_tests.conftest import missing
from host_tests.vboard_util import (BOARD, free_udp_port, join_board, mpremote, start_vboard,
                                    stop_vboard, vboard_missing)
from pnpipsec import AUTHENTICATED, ENCRYPTED
from pnpipsec.identity import Identity, decode

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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

        r = asyncio.run(join_board(natt, app))
        (first, before, after), proved, reply, t_enc = r["levels"], r["proved"], r["reply"], r["t_enc"]
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
        r = asyncio.run(join_board(natt, app, approve_key=ident.public))
        (first, before, after), proved, reply = r["levels"], r["proved"], r["reply"]
        assert proved == ident.public and after == AUTHENTICATED
        assert reply[0] == b"echo: ping from CPython"
    finally:
        stop_vboard(proc)
