"""The qemu board's UDP link framing on CPython: boards/qemu/board.py (the board side,
with a fake UART) against boards/qemu/relay.py (the host side), both ways, including
every byte value, SLIP escapes, frames split across reads, garbage before a frame, and
the relay answering hello/bind/rand over a socketpair with real UDP sockets."""

import importlib.util
import os
import socket
import sys
import threading

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QEMU = os.path.join(REPO, "boards", "qemu")


def _load(name, path):
    if os.path.join(REPO, "boards", "common") not in sys.path:
        sys.path.insert(0, os.path.join(REPO, "boards", "common"))
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


board = _load("pnp_qemu_board", os.path.join(QEMU, "board.py"))
relay = _load("pnp_qemu_relay", os.path.join(QEMU, "relay.py"))


class FakeUart:
    """Bytes the 'host' wrote wait in rx; what the board writes lands in tx."""

    def __init__(self, rx=b""):
        self.rx = bytearray(rx)
        self.tx = bytearray()

    def read_byte(self):
        return self.rx.pop(0) if self.rx else -1

    def write(self, data):
        self.tx += bytes(data)


def _ticks():
    t = [0]

    def ms():
        t[0] += 1
        return t[0]
    return ms, lambda a, b: a - b


def test_every_byte_round_trips_both_directions():
    payload = bytes(range(256)) * 3 + bytes([0xC0, 0xDB, 0xC0, 0xDB, 0xDC, 0xDD])
    # relay -> board
    ms, diff = _ticks()
    link = board.Link(FakeUart(b"\x01\x02garbage" + relay.slip_encode(b"D" + payload)), ms, diff)
    frames = []
    while True:
        f = link.poll()
        if f is None:
            break
        frames.append(f)
    # garbage before the first END is a frame of its own (the type byte tells it apart)
    assert frames[-1] == b"D" + payload
    # board -> relay, fed in 1-byte pieces
    up = FakeUart()
    board.Link(up, ms, diff).send(b"S" + payload)
    assert bytes(up.tx) == relay.slip_encode(b"S" + payload)
    dec = relay.SlipDecoder()
    got = []
    for i in range(len(up.tx)):
        got += dec.feed(bytes(up.tx[i:i + 1]))
    assert got == [b"S" + payload]


def test_request_keeps_frames_that_arrive_before_the_answer():
    ms, diff = _ticks()
    rx = relay.slip_encode(b"Dfirst") + relay.slip_encode(b"r\x07abc")
    link = board.Link(FakeUart(rx), ms, diff)
    seen = []
    f = link.request(b"R\x07\x00\x03", ord("r"), deliver=seen.append)
    assert f == b"r\x07abc" and seen == [b"Dfirst"]


def test_request_times_out_without_a_relay():
    ms, diff = _ticks()
    link = board.Link(FakeUart(), ms, diff)
    try:
        link.request(b"H" + board.MAGIC, ord("h"), timeout_ms=50)
    except OSError as e:
        assert isinstance(e, board.LinkTimeout)
    else:
        raise AssertionError("no timeout")


def test_relay_hello_bind_rand_and_datagrams(tmp_path):
    a, b = socket.socketpair()
    r = relay.Relay("unused", bind4="127.0.0.1", bind6=None, log=lambda s: None)
    r.link = a
    r.sel.register(a, relay.selectors.EVENT_READ, ("link", None))
    t = threading.Thread(target=lambda: _serve(r), daemon=True)
    t.start()
    dec = relay.SlipDecoder()

    def ask(frame):
        b.sendall(relay.slip_encode(frame))
        while True:
            out = dec.feed(b.recv(65536))
            if out:
                return out[0]

    try:
        assert ask(b"Hpnpq1") == b"h127.0.0.1"
        ans = ask(b"B\x05\x00\x00")
        assert ans[:4] == b"b\x05\x00\x00"
        port = int.from_bytes(ans[4:6], "big")
        assert port > 0
        rnd = ask(b"R\x09\x00\x20")
        assert rnd[:2] == b"r\x09" and len(rnd) == 34
        # a host datagram to the board's port arrives as a D frame
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        peer.sendto(b"\xc0hello\xdb", ("127.0.0.1", port))
        d = dec.feed(b.recv(65536)) or dec.feed(b.recv(65536))
        pport = peer.getsockname()[1]
        assert d[0] == (b"D" + port.to_bytes(2, "big") + pport.to_bytes(2, "big") + b"\x09127.0.0.1"
                        + b"\xc0hello\xdb")
        # an S frame leaves from the board's port
        b.sendall(relay.slip_encode(b"S" + port.to_bytes(2, "big") + pport.to_bytes(2, "big")
                                    + b"\x09127.0.0.1" + b"reply\xc0"))
        peer.settimeout(5)
        data, addr = peer.recvfrom(100)
        assert data == b"reply\xc0" and addr == ("127.0.0.1", port)
        peer.close()
    finally:
        r.stopping = True
        b.close()


def _serve(r):
    try:
        while not r.stopping and r.step(0.2):
            pass
    except (OSError, ValueError):
        pass
