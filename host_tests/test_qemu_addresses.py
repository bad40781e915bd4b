"""The qemu board's addresses (issue 12): the host changes them through the relay's
control socket (STATE/ctl.sock, the wasm board's protocol: `pnp vboard --address`,
pnp.vboard.set_address), the relay sends each change to the board as an A frame
(boards/qemu/README.md), and the board reports address events through
on_address_change / watch, with address_list() following (stable first, deprecated
left out). On the board's hello the relay sends what changed again, before h: the
addresses survive a reboot.

* the frame: its bytes, SLIP escapes, bad frames (every byte value) dropped and logged;
* the board side (boards/qemu/board.py under CPython, a fake UART), the relay side
  (boards/qemu/relay.py over a socketpair, a real control socket), and the frames the
  relay sends on hello read by the board;
* end to end on the qemu board (esp32 profile, pnpipsec frozen): a small app with a
  real pnpipsec Node glued by pnpboard.net.follow; "added A", "deprecated A / added B",
  "removed A" through the control socket, then a reboot.
"""

import asyncio
import json
import os
import select
import socket
import threading
import time

import pytest

from host_tests.test_qemu_link import FakeUart, _serve, _ticks, board, relay  # noqa: E402 (sets sys.path)
from pnp import vboard as vb
from pnpboard import net
from pnpboard.clock import Monotonic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
A, B, T = "2001:db8:a::7", "2001:db8:b::7", "2001:db8:b::5eed"


def _a(ev):
    """An A frame as README's table says (JSON of the event), made here, not by the relay."""
    return b"A" + json.dumps(ev, separators=(",", ":")).encode()


def _frame(ev):
    return relay.slip_encode(_a(ev))


def _board(tmp_path, rx=b"", logs=None):
    """board.Board on a fake UART under CPython (fake ms ticks: CPython's time has none)."""
    ms, diff = _ticks()
    uart = FakeUart(rx)
    saved = getattr(time, "ticks_ms", None), getattr(time, "ticks_diff", None)
    time.ticks_ms, time.ticks_diff = ms, diff       # what Link() takes by default on the board
    try:
        b = board.Board(uart=uart, storage_root=str(tmp_path / "st"), aes=object(),
                        clock=Monotonic(ms, diff), log=logs.append if logs is not None else (lambda m: None))
    finally:
        for name, v in zip(("ticks_ms", "ticks_diff"), saved):
            if v is None:
                delattr(time, name)
            else:
                setattr(time, name, v)
    return b, uart


class MobikeNode:
    def __init__(self, addrs):
        self.addresses = list(addrs)
        self.told = []

    def local_addresses_changed(self, addrs):
        self.told.append(list(addrs))
        self.addresses = list(addrs)


# ------------------------------------------------------------------ the A frame
def test_address_frame_bytes_escapes_and_bad_frames(tmp_path):
    ev = ["added", A, None, 3600, 7200, ["stable"]]
    assert relay.address_frame(ev) == _a(ev) == b'A["added","2001:db8:a::7",null,3600,7200,["stable"]]'
    # JSON escapes what is not ASCII, so the frame needs no SLIP escape at all
    odd = ["deprecated", "fe80::1", "eth\u00c0\u00db\u06c0\u0700\u0740", 0, 4294967295, ["link-local", "x\"\\y"]]
    f = _a(odd)
    assert relay.address_frame(odd) == f
    assert max(f) < 0x80 and relay.slip_encode(f) == b"\xc0" + f + b"\xc0"
    # a frame with raw UTF-8 (bytes 0xDB 0xDC 0xDD: ESC, ESC_END, ESC_ESC as data) goes
    # through the escapes; and one of every byte value, which is no JSON
    raw = b"A" + json.dumps(odd, ensure_ascii=False).encode()
    assert b"\xdb" in raw and b"\xdc" in raw and b"\xdd" in raw
    junk = b"A" + bytes(range(256)) + bytes([0xC0, 0xDB, 0xDC, 0xDD])
    rx = (relay.slip_encode(b"h::1 127.0.0.1") + relay.slip_encode(raw) + relay.slip_encode(junk)
          + relay.slip_encode(b"A") + relay.slip_encode(b'A["moved","::2",null,null,null,[]]')
          + relay.slip_encode(b"A[1]") + relay.slip_encode(f))
    logs = []
    b, _uart = _board(tmp_path, rx, logs)
    assert b.hello() == ["::1", "127.0.0.1"]
    frames = []
    while True:
        got = b.link.poll()
        if got is None:
            break
        frames.append(got)
        b._deliver(got)           # never raises
    assert frames == [raw, junk, b"A", b'A["moved","::2",null,null,null,[]]', b"A[1]", f]
    assert len([m for m in logs if m.startswith("link: bad address frame")]) == 4, logs
    # the good ones, both spellings, give the same entry
    assert b.addresses() == [("::1", "preferred", None, None, None, ("loopback",)),
                             ("127.0.0.1", "preferred", None, None, None, ("ipv4",)),
                             ("fe80::1", "deprecated", 0, 4294967295, odd[2], ("link-local", "x\"\\y"))]
    # relay side: the board's frames decoded in 1-byte pieces
    dec = relay.SlipDecoder()
    out = []
    for byte in relay.slip_encode(raw) + relay.slip_encode(junk):
        out += dec.feed(bytes([byte]))
    assert out == [raw, junk]


# ------------------------------------------------------------------ the board side
def test_board_reports_address_events_to_follow(tmp_path):
    logs = []
    b, uart = _board(tmp_path, relay.slip_encode(b"h::1 127.0.0.1"), logs)
    b.hello()
    assert b.address_list() == ["::1", "127.0.0.1"]
    node = MobikeNode(b.address_list())
    reports = []
    net.follow(b, node, reports.append)
    b.on_address_change(lambda evs: 1 / 0)      # a broken consumer does not stop the reports

    async def go():
        task = b.watch()                        # starts the link task: no udp() here
        assert task is not None and b._pump is task
        uart.rx += _frame(["added", A, None, 3600, 7200, ["stable"]])
        await asyncio.sleep(0.05)
        uart.rx += _frame(["deprecated", A, None, 0, 600, ["stable"]]) + _frame(["added", B, None, 3600, 7200, ["stable"]])
        await asyncio.sleep(0.05)
        uart.rx += _frame(["added", T, None, 600, 1200, ["temporary"]])
        await asyncio.sleep(0.05)
        uart.rx += _frame(["removed", A, None, 0, 0, ["stable"]])
        await asyncio.sleep(0.05)
        b.stop_watching()
        uart.rx += _frame(["removed", T, None, 0, 0, ["temporary"]])      # not watching: not reported
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(go())
    assert reports == [
        [("added", A, None, 3600, 7200, ("stable",))],
        [("deprecated", A, None, 0, 600, ("stable",)), ("added", B, None, 3600, 7200, ("stable",))],
        [("added", T, None, 600, 1200, ("temporary",))],
        [("removed", A, None, 0, 0, ("stable",))],
    ]
    assert node.told == [[A, "::1", "127.0.0.1"], [B, "::1", "127.0.0.1"], [B, T, "::1", "127.0.0.1"],
                         [B, T, "::1", "127.0.0.1"]]
    # the table still follows without a watcher; deprecated addresses are left out
    assert b.address_list() == [B, "::1", "127.0.0.1"]
    assert [a[0] for a in b.addresses()] == ["::1", "127.0.0.1", B]
    assert len([m for m in logs if "address callback failed" in m]) == 4


def test_board_orders_addresses_stable_first(tmp_path):
    b, _uart = _board(tmp_path, relay.slip_encode(b"h::1 127.0.0.1"))
    b.hello()
    for ev in (["added", "fe80::7", 1, None, None, ["link-local"]], ["added", A, None, 10, 20, ["stable"]],
               ["deprecated", A, None, 0, 20, ["stable"]], ["added", "2001:db8:b::99", None, 600, 1200, ["temporary"]],
               ["added", B, None, 3600, 7200, ["stable"]]):
        b._deliver(_a(ev))
    assert b.address_list() == [B, "2001:db8:b::99", "fe80::7", "::1", "127.0.0.1"]
    assert (A, "deprecated", 0, 20, None, ("stable",)) in b.addresses()


# ------------------------------------------------------------------ the relay side
def test_relay_control_socket_frames_and_hello_replay(tmp_path, capsys):
    state = str(tmp_path)
    a, bsock = socket.socketpair()
    r = relay.Relay("unused", bind4="127.0.0.1", bind6="::1", log=lambda s: None,
                    control=os.path.join(state, vb.CONTROL_SOCK))
    r.listen_control()
    r.link = a
    r.sel.register(a, relay.selectors.EVENT_READ, ("link", None))
    t = threading.Thread(target=lambda: _serve(r), daemon=True)
    t.start()
    dec = relay.SlipDecoder()
    got = []
    bsock.settimeout(5)

    def frames(n):
        while len(got) < n:
            got.extend(dec.feed(bsock.recv(65536)))
        out = got[:n]
        del got[:n]
        return out

    try:
        assert vb.addresses(state) == [("::1", "preferred", None, None, None, ("loopback",)),
                                       ("127.0.0.1", "preferred", None, None, None, ("ipv4",))]
        assert vb.set_address(state, "added", A, 3600, 7200) == ("added", A, None, 3600, 7200, ("stable",))
        assert frames(1) == [b'A["added","2001:db8:a::7",null,3600,7200,["stable"]]']
        vb.set_address(state, "deprecated", A, valid=600)
        # an address in another spelling is the same address
        assert vb.set_address(state, "added", "2001:DB8:B:0::7", 3600, 7200)[1] == B
        assert vb.set_address(state, "added", T, 600, 1200, flags=("temporary",))[5] == ("temporary",)
        assert frames(3) == [relay.address_frame(["deprecated", A, None, 0, 600, ["stable"]]),
                             relay.address_frame(["added", B, None, 3600, 7200, ["stable"]]),
                             relay.address_frame(["added", T, None, 600, 1200, ["temporary"]])]
        # refused requests change nothing and send nothing
        for req, err in (({"op": "address", "kind": "removed", "address": "2001:db8:ff::1"}, "not an address"),
                         ({"op": "address", "kind": "added", "address": "nonsense"}, "not an IPv6 or IPv4"),
                         ({"op": "address", "kind": "moved", "address": A}, "kind must be"),
                         ({"op": "address", "kind": "added", "address": A, "valid": -1}, "valid must be"),
                         ({"op": "address", "kind": "added", "address": A, "flags": "temporary"}, "flags must be"),
                         ({"op": "bogus"}, "unknown op")):
            with pytest.raises(vb.VboardError, match=err):
                vb.control(state, req)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(5)
        c.connect(os.path.join(state, vb.CONTROL_SOCK))
        c.sendall(b"not json\n\n{\"op\": \"addresses\"}\n")      # two replies, one per request
        buf = b""
        while buf.count(b"\n") < 2:
            buf += c.recv(65536)
        c.close()
        first, second = [json.loads(x) for x in buf.splitlines()]
        assert first == {"ok": False, "error": "not JSON"} and second["ok"] and len(second["addresses"]) == 5
        assert vb.set_address(state, "removed", A) == ("removed", A, None, 0, 0, ("stable",))
        assert vb.set_address(state, "removed", "127.0.0.1") == ("removed", "127.0.0.1", None, 0, 0, ("ipv4",))
        assert frames(2) == [relay.address_frame(["removed", A, None, 0, 0, ["stable"]]),
                             relay.address_frame(["removed", "127.0.0.1", None, 0, 0, ["ipv4"]])]
        # `pnp vboard --address/--addresses` talks to the relay as to the wasm board
        assert vb.main(["--state", state, "--address", "added", "fe80::7"]) == 0
        frames(1)
        out = capsys.readouterr().out
        assert "address added fe80::7 None None None ('link-local',)" in out
        assert "2001:db8:b::5eed preferred (preferred 600 s, valid 1200 s) temporary" in out
        assert vb.main(["--state", state, "--addresses"]) == 0
        assert capsys.readouterr().out.splitlines()[0] == "::1 preferred (preferred forever, valid forever) loopback"

        # the board reboots: what changed comes again, before h, in one write
        bsock.sendall(relay.slip_encode(b"Hpnpq1"))
        hello = frames(5)
        assert hello == [relay.address_frame(["removed", "127.0.0.1", None, 0, 0, ["ipv4"]]),
                         relay.address_frame(["added", B, None, 3600, 7200, ["stable"]]),
                         relay.address_frame(["added", T, None, 600, 1200, ["temporary"]]),
                         relay.address_frame(["added", "fe80::7", None, None, None, ["link-local"]]),
                         b"h::1 127.0.0.1"]
        # ... which the board reads while it waits for h: its table is whole at once
        logs = []
        b, _uart = _board(tmp_path, b"".join(relay.slip_encode(f) for f in hello), logs)
        assert b.hello() == ["::1", "127.0.0.1"]
        assert b.address_list() == [B, T, "fe80::7", "::1"]
        assert vb.addresses(state) == b.addresses()           # the relay's table and the board's
        assert logs == []
    finally:
        r.stopping = True
        bsock.close()
        t.join(5)
        r.close_control()
    assert not os.path.exists(os.path.join(state, vb.CONTROL_SOCK))


# ------------------------------------------------------------------ end to end on the qemu board
APP = r'''
import asyncio
from board import Board
from pnpipsec.identity import Identity
from pnpipsec.node import Node, zero_config
from pnpboard.net import follow

async def main():
    board = Board()
    await board.up()
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
    """The board's console (UART0's pty) read directly: the app's output, no mpremote
    (whose Ctrl-C would stop the app). qemu drops console output while no one has the
    pty open, so the test opens it before the board boots the app."""

    def __init__(self, dev):
        self.fd = os.open(dev, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.text = ""

    def write(self, data):
        os.write(self.fd, data)

    def wait_for(self, needle, start=0, timeout=30):
        deadline = time.monotonic() + timeout
        while needle not in self.text[start:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %r on the board's console within %s s; it said:\n%s"
                                     % (needle, timeout, self.text))
            rd, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if rd:
                try:
                    # every \r goes: the UART sends byte by byte, so a read may end
                    # between the \r and the \n of a line
                    self.text += os.read(self.fd, 65536).decode("utf-8", "replace").replace("\r", "")
                except (BlockingIOError, OSError):
                    pass
        return self.text[start:]

    def close(self):
        os.close(self.fd)


def test_qemu_board_follows_address_events_end_to_end(tmp_path):
    from host_tests.test_e2e_qemu import _need, start_board, stop_board
    from host_tests.vboard_util import free_udp_port, mpremote

    _need()
    state = str(tmp_path / "board")
    app = tmp_path / "main.py"
    app.write_text(APP.replace("PORT", str(free_udp_port())))
    proc, dev = start_board(state, "esp32", frozen=True)      # the firmware is built when stale
    con = None
    t0 = time.monotonic()
    try:
        mpremote(dev, "fs", "cp", str(app), ":main.py")
        con = Console(dev)
        con.write(b"\rimport machine; machine.reset()\r")    # boots into the app
        con.wait_for("app ready ::1 127.0.0.1\n", timeout=40)
        assert vb.set_address(state, "added", A, 3600, 7200) == ("added", A, None, 3600, 7200, ("stable",))
        con.wait_for("node addresses %s ::1 127.0.0.1\n" % A)

        # renumbering: A deprecated, B added
        vb.set_address(state, "deprecated", A, 0, 600)
        vb.set_address(state, "added", B, 3600, 7200)
        out = con.wait_for("node addresses %s ::1 127.0.0.1\n" % B)
        assert "address deprecated %s None 0 600 ('stable',)\n" % A in out
        assert "address added %s None 3600 7200 ('stable',)\n" % B in out
        assert "board list %s ::1 127.0.0.1\n" % B in out            # deprecated A left out

        vb.set_address(state, "removed", A)
        out = con.wait_for("address removed %s None 0 0 ('stable',)\n" % A)
        assert "Traceback" not in out, out
        table = {x[0]: x[1:] for x in vb.addresses(state)}
        assert table[B] == ("preferred", 3600, 7200, None, ("stable",)) and A not in table

        # a reboot: the relay tells the board its addresses again at hello
        mark = len(con.text)
        con.write(b"\x03")                                   # the link task raises KeyboardInterrupt
        con.wait_for(">>> ", start=mark)
        mark = len(con.text)
        con.write(b"import machine; machine.reset()\r")
        con.wait_for("app ready %s ::1 127.0.0.1\n" % B, start=mark, timeout=40)
        assert "address events again" in open(os.path.join(state, "relay.log")).read()
    finally:
        if con is not None:
            con.close()
        stop_board(proc, state)
    print("\n[qemu addresses] %.1f s after the board started" % (time.monotonic() - t0))
