"""The virtual boards' addresses (issue 12): the host changes them through the board's
bridge (the wasm board's control socket STATE/ctl.sock, `pnp vboard --address`), and the
board's Python reports address events through on_address_change / watch, with
address_list() following (stable first, deprecated left out).

* board-side logic: boards/wasm/board.py under CPython with a fake `_vboard` module
  (the JS bridge) and `uctypes`;
* end to end: the virtual board (MicroPython WebAssembly under Node) runs a small app
  with a real pnpipsec Node glued by pnpboard.net.follow; the test deprecates A and adds
  B through the control socket and reads, on the board's console, the events, the
  board's address list and the node's addresses.
"""

import asyncio
import importlib.util
import json
import os
import select
import shutil
import sys
import time
import types

import pytest

from host_tests.conftest import REPO, missing

COMMON = os.path.join(REPO, "boards", "common")
if COMMON not in sys.path:
    sys.path.insert(0, COMMON)

from pnpboard import net  # noqa: E402


# ------------------------------------------------------------------ board.py under CPython
class FakeBridge(types.ModuleType):
    """The JS module "_vboard" as far as the address code uses it: the table that
    board.mjs keeps (JSON) and the hook bridge.mjs calls with one event (JSON)."""

    def __init__(self):
        super().__init__("_vboard")
        self.table = [["::1", "preferred", None, None, None, ["loopback"]],
                      ["127.0.0.1", "preferred", None, None, None, ["ipv4"]]]
        self.hook = None

    def set_waker(self, fn):
        return 1

    def set_addr_hook(self, fn):
        self.hook = fn
        return 1

    def addresses(self):
        return json.dumps(self.table)

    def change(self, kind, addr, pref=None, valid=None, flags=("stable",), zone=None):
        """What board.mjs does on a control-socket command: update the table, call the hook."""
        self.table = [e for e in self.table if e[0] != addr]
        if kind != "removed":
            self.table.append([addr, "preferred" if kind == "added" else "deprecated", pref, valid, zone, list(flags)])
        self.hook(json.dumps([kind, addr, zone, pref, valid, list(flags)]))


@pytest.fixture
def wasm_board(monkeypatch):
    fake = FakeBridge()
    monkeypatch.setitem(sys.modules, "_vboard", fake)
    monkeypatch.setitem(sys.modules, "uctypes", types.SimpleNamespace(addressof=id))
    spec = importlib.util.spec_from_file_location("pnp_wasm_board", os.path.join(REPO, "boards", "wasm", "board.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, fake


class MobikeNode:
    def __init__(self, addrs):
        self.addresses = list(addrs)
        self.told = []

    def local_addresses_changed(self, addrs):
        self.told.append(list(addrs))
        self.addresses = list(addrs)


def test_wasm_board_address_list_follows_the_table(wasm_board):
    mod, fake = wasm_board
    b = mod.Board(storage_root=None)
    assert b.address_list() == ["::1", "127.0.0.1"]
    fake.table += [["fe80::7", "preferred", None, None, 1, ["link-local"]],
                   ["2001:db8:a::7", "deprecated", 0, 600, None, ["stable"]],
                   ["2001:db8:b::99", "preferred", 600, 1200, None, ["temporary"]],
                   ["2001:db8:b::7", "preferred", 3600, 7200, None, ["stable"]]]
    # stable global first, then temporary, link-local, loopback, IPv4; deprecated left out
    assert b.address_list() == ["2001:db8:b::7", "2001:db8:b::99", "fe80::7", "::1", "127.0.0.1"]
    assert ("2001:db8:a::7", "deprecated", 0, 600, None, ("stable",)) in b.addresses()
    v4 = mod.Board(storage_root=None, bind6=None)          # an IPv4-only board sees no IPv6
    assert v4.address_list() == ["127.0.0.1"]


def test_wasm_board_reports_address_events_to_follow(wasm_board):
    mod, fake = wasm_board
    logs = []
    b = mod.Board(storage_root=None, log=logs.append)
    node = MobikeNode(b.address_list())
    reports = []
    net.follow(b, node, reports.append)
    b.on_address_change(lambda evs: 1 / 0)     # a broken consumer does not stop the reports

    async def go():
        b.watch()
        fake.change("added", "2001:db8:a::7", 3600, 7200)
        await asyncio.sleep(0.01)
        fake.change("deprecated", "2001:db8:a::7", 0, 600)
        fake.change("added", "2001:db8:b::7", 3600, 7200)
        await asyncio.sleep(0.01)
        fake.change("removed", "2001:db8:a::7", 0, 0)
        await asyncio.sleep(0.01)
        b.stop_watching()
        fake.change("removed", "2001:db8:b::7", 0, 0)      # not watching: not reported
        await asyncio.sleep(0.01)

    asyncio.run(go())
    assert reports == [
        [("added", "2001:db8:a::7", None, 3600, 7200, ("stable",))],
        [("deprecated", "2001:db8:a::7", None, 0, 600, ("stable",)),
         ("added", "2001:db8:b::7", None, 3600, 7200, ("stable",))],
        [("removed", "2001:db8:a::7", None, 0, 0, ("stable",))],
    ]
    assert node.told == [["2001:db8:a::7", "::1", "127.0.0.1"],
                         ["2001:db8:b::7", "::1", "127.0.0.1"],
                         ["2001:db8:b::7", "::1", "127.0.0.1"]]
    assert b.address_list() == ["::1", "127.0.0.1"]
    assert len([m for m in logs if "address callback failed" in m]) == 3


def test_wasm_board_event_hook_never_raises_and_filters_families(wasm_board):
    mod, fake = wasm_board
    b = mod.Board(storage_root=None, bind4=None)           # IPv6 only
    seen = []
    b.on_address_change(seen.append)

    async def go():
        b.watch()
        fake.hook("not json")                              # ignored, never raised into JS
        fake.hook(json.dumps(["added", "10.0.0.5", None, None, None, ["ipv4"]]))
        fake.hook(json.dumps(["added", "2001:db8::5", None, 10, 20, ["temporary"]]))
        await asyncio.sleep(0.01)
        b.stop_watching()

    asyncio.run(go())
    assert seen == [[("added", "2001:db8::5", None, 10, 20, ("temporary",))]]


# ------------------------------------------------------------------ end to end on the wasm board
APP = r'''
import asyncio
from board import Board
from pnpipsec.identity import Identity
from pnpipsec.node import Node, zero_config
from pnpboard.net import follow

async def main():
    board = Board()
    node = Node(board, Identity(board.rand(32)), ike_port=PORT, natt_port=PORT,
                addresses=board.address_list(), accept_any=zero_config(), log=lambda m: None)

    def report(events):
        for ev in events:
            print("address", " ".join(str(x) for x in ev))
        print("board list", " ".join(board.address_list()))
        print("node addresses", " ".join(node.addresses))

    follow(board, node, report, print)
    board.watch()
    await node.start()
    print("app ready", " ".join(board.address_list()))
    while True:
        await asyncio.sleep(1)

asyncio.run(main())
'''


class Console:
    """The board's console (the pty), read directly: main.py's output, no mpremote
    (whose Ctrl-C would stop the app)."""

    def __init__(self, dev):
        self.fd = os.open(dev, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.text = ""

    def wait_for(self, needle, timeout=30):
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %r on the board's console within %s s; it said:\n%s"
                                     % (needle, timeout, self.text))
            r, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if r:
                try:
                    self.text += os.read(self.fd, 65536).decode("utf-8", "replace").replace("\r\n", "\n")
                except BlockingIOError:
                    pass
        return self.text

    def close(self):
        os.close(self.fd)


def _copy_py(src, dst):
    for root, _dirs, files in os.walk(src):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, f), src)
                os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
                shutil.copy(os.path.join(root, f), os.path.join(dst, rel))


def test_wasm_board_follows_address_events_end_to_end(tmp_path):
    from host_tests.vboard_util import free_udp_port, mpremote, start_vboard, stop_vboard, vboard_missing
    from pnp import vboard as vb

    why = vboard_missing()
    if why:
        missing("; ".join(why))
    state = str(tmp_path / "b")
    fs = os.path.join(state, "fs")
    # the board's file system, as `pnp deploy` would leave it (sources, not .mpy)
    _copy_py(os.path.join(REPO, "firmware", "pnpipsec"), os.path.join(fs, "lib", "pnpipsec"))
    _copy_py(os.path.join(COMMON, "pnpboard"), os.path.join(fs, "lib", "pnpboard"))
    with open(os.path.join(fs, "main.py"), "w") as f:
        f.write(APP.replace("PORT", str(free_udp_port())))
    proc, dev = start_vboard(state)
    con = Console(dev)
    try:
        con.wait_for("app ready ::1 127.0.0.1\n")
        A, B, T = "2001:db8:a::7", "2001:db8:b::7", "2001:db8:b::5eed"
        assert vb.set_address(state, "added", A, 3600, 7200) == ("added", A, None, 3600, 7200, ("stable",))
        con.wait_for("node addresses %s ::1 127.0.0.1\n" % A)

        # renumbering: A deprecated, B added
        vb.set_address(state, "deprecated", A, 0, 600)
        vb.set_address(state, "added", B, 3600, 7200)
        out = con.wait_for("node addresses %s ::1 127.0.0.1\n" % B)
        assert "address deprecated %s None 0 600 ('stable',)\n" % A in out
        assert "address added %s None 3600 7200 ('stable',)\n" % B in out
        assert "board list %s ::1 127.0.0.1\n" % B in out            # deprecated A left out

        # a temporary address comes after the stable one; then A goes
        vb.set_address(state, "added", T, 600, 1200, flags=("temporary",))
        con.wait_for("node addresses %s %s ::1 127.0.0.1\n" % (B, T))
        vb.set_address(state, "removed", A)
        out = con.wait_for("address removed %s None 0 0 ('stable',)\n" % A)
        table = {a[0]: a[1:] for a in vb.addresses(state)}
        assert table[B] == ("preferred", 3600, 7200, None, ("stable",))
        assert table[T][0] == "preferred" and table[T][4] == ("temporary",) and A not in table
        assert "Traceback" not in out, out
        con.close()
        con = None
        # a fresh interpreter (mpremote stops the app; the board keeps its addresses)
        r = mpremote(dev, "exec", "from board import Board; print(Board().address_list())")
        assert r.stdout.strip() == repr([B, T, "::1", "127.0.0.1"]), r.stdout + r.stderr
    finally:
        if con is not None:
            con.close()
        stop_vboard(proc)


def test_vboard_address_command_line(tmp_path):
    """`pnp vboard --address` on a board that is not running says so (exit 2)."""
    import subprocess
    r = subprocess.run([sys.executable, "-m", "pnp.cli", "vboard", "--state", str(tmp_path),
                        "--address", "added", "2001:db8::1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no virtual board listens" in r.stderr, r.stderr
