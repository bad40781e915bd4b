"""Host side of the qemu board's UDP link: real UDP sockets <-> SLIP frames on UART1.

    python boards/qemu/relay.py --connect STATE/link.sock [--bind4 127.0.0.1] [--bind6 ::1]

qemu runs the board's second UART as a unix-socket server (`-chardev socket,...`); the
relay connects to it (and reconnects when qemu restarts), binds the UDP ports the board
asks for on the host addresses given, and forwards datagrams both ways. This is the
part a radio co-processor plays on many appliances. The frame format (boards/qemu/
README.md) is SLIP (RFC 1055: END 0xC0, ESC 0xDB, ESC_END 0xDC, ESC_ESC 0xDD) around
one type byte and its fields (integers big-endian, addresses as text):

  board -> relay
    H "pnpq1"                      hello: the board (re)booted; the relay closes every
                                   port of the earlier boot and answers h
    B id port:2                    bind port (0: any) on every relay address; answer b
    S lport:2 pport:2 alen:1 addr data
                                   send data from lport to (addr, pport)
    C lport:2                      close
    R id n:2                       n random bytes (host os.urandom); answer r
  relay -> board
    h "addr addr ..."              the relay's addresses (the board's own, to the node)
    b id errno:2 port:2 text       bind result (errno 0: bound to port)
    D lport:2 pport:2 alen:1 addr data
                                   a datagram that arrived for lport from (addr, pport)
    r id bytes                     randomness
    E text                         a send failed (logged by the board)

Datagrams for ports the board did not bind never exist (the relay binds only on
request); datagrams larger than MAX_DATAGRAM are dropped and counted.
"""

from __future__ import annotations

import argparse
import errno
import os
import selectors
import signal
import socket
import sys
import time

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD
MAX_DATAGRAM = 3000
MAGIC = b"pnpq1"


def slip_encode(payload: bytes) -> bytes:
    return (bytes([END]) + payload.replace(bytes([ESC]), bytes([ESC, ESC_ESC]))
            .replace(bytes([END]), bytes([ESC, ESC_END])) + bytes([END]))


class SlipDecoder:
    def __init__(self):
        self.buf = bytearray()
        self.esc = False

    def feed(self, data: bytes):
        out = []
        for b in data:
            if self.esc:
                self.esc = False
                self.buf.append(END if b == ESC_END else ESC if b == ESC_ESC else b)
            elif b == ESC:
                self.esc = True
            elif b == END:
                if self.buf:
                    out.append(bytes(self.buf))
                    self.buf = bytearray()
            else:
                self.buf.append(b)
        return out


class Relay:
    def __init__(self, path, bind4="127.0.0.1", bind6="::1", log=None):
        self.path = path
        self.bind4 = bind4
        self.bind6 = bind6
        self.log = log or (lambda s: print("relay: " + s, file=sys.stderr, flush=True))
        self.sel = selectors.DefaultSelector()
        self.link = None
        self.dec = SlipDecoder()
        self.ports = {}          # board port -> [sockets]
        self.stats = {"to_board": 0, "from_board": 0, "dropped": 0}
        self.stopping = False

    # -- link ---------------------------------------------------------------------------
    def connect(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.stopping:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.path)
            except OSError:
                s.close()
                if deadline is not None and time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            self.link = s
            self.dec = SlipDecoder()
            self.sel.register(s, selectors.EVENT_READ, ("link", None))
            self.log("connected to %s" % self.path)
            return

    def send_frame(self, payload: bytes):
        if self.link is not None:
            try:
                self.link.sendall(slip_encode(payload))
            except OSError as e:
                self.log("link write failed: %s" % e)

    def addresses(self):
        return [a for a in (self.bind6, self.bind4) if a]

    def close_all(self):
        for socks in self.ports.values():
            for s in socks:
                self.sel.unregister(s)
                s.close()
        self.ports.clear()

    # -- frames from the board ------------------------------------------------------------
    def handle(self, f: bytes):
        t = f[:1]
        if t == b"H":
            self.close_all()
            self.log("board hello (%r); addresses %s" % (f[1:], " ".join(self.addresses())))
            self.send_frame(b"h" + " ".join(self.addresses()).encode())
        elif t == b"B" and len(f) >= 4:
            rid, port = f[1], int.from_bytes(f[2:4], "big")
            err, bound, text = self.bind(port)
            self.send_frame(b"b" + bytes([rid]) + err.to_bytes(2, "big") + bound.to_bytes(2, "big") + text.encode())
        elif t == b"S" and len(f) >= 6:
            lport, pport, alen = int.from_bytes(f[1:3], "big"), int.from_bytes(f[3:5], "big"), f[5]
            host = f[6:6 + alen].decode(errors="replace")
            data = f[6 + alen:]
            self.sendto(lport, host, pport, data)
        elif t == b"C" and len(f) >= 3:
            for s in self.ports.pop(int.from_bytes(f[1:3], "big"), []):
                self.sel.unregister(s)
                s.close()
        elif t == b"R" and len(f) >= 4:
            n = min(int.from_bytes(f[2:4], "big"), 1024)
            self.send_frame(b"r" + bytes([f[1]]) + os.urandom(n))
        else:
            self.log("unknown frame %r" % f[:16])

    def bind(self, port):
        if port in self.ports and port:
            return errno.EADDRINUSE, 0, "the board already has port %d" % port
        socks = []
        bound = port
        try:
            for fam, host in ((socket.AF_INET, self.bind4), (socket.AF_INET6, self.bind6)):
                if not host:
                    continue
                s = socket.socket(fam, socket.SOCK_DGRAM)
                if fam == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.setblocking(False)
                try:
                    s.bind((host, bound))
                except OSError:
                    s.close()
                    raise
                bound = s.getsockname()[1]
                socks.append(s)
        except OSError as e:
            for s in socks:
                s.close()
            return e.errno or errno.EIO, 0, str(e)
        for s in socks:
            self.sel.register(s, selectors.EVENT_READ, ("udp", bound))
        self.ports[bound] = socks
        self.log("bound UDP %d for the board on %s" % (bound, " ".join(self.addresses())))
        return 0, bound, ""

    def sendto(self, lport, host, pport, data):
        socks = self.ports.get(lport, [])
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        for s in socks:
            if s.family == fam:
                try:
                    s.sendto(data, (host, pport))
                    self.stats["from_board"] += 1
                except OSError as e:
                    self.send_frame(b"E" + ("sendto %s port %d: %s" % (host, pport, e)).encode())
                return
        self.send_frame(b"E" + ("no %s socket on port %d" % ("IPv6" if fam == socket.AF_INET6 else "IPv4", lport)).encode())

    # -- loop -----------------------------------------------------------------------------
    def step(self, timeout=0.5):
        """Wait up to timeout for the link or a UDP socket and handle what arrived;
        False when the link closed (qemu stopped)."""
        for key, _ev in self.sel.select(timeout):
            kind, port = key.data
            if kind == "link":
                try:
                    data = self.link.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self.sel.unregister(self.link)
                    self.link.close()
                    self.link = None
                    self.close_all()
                    return False
                for f in self.dec.feed(data):
                    try:
                        self.handle(f)
                    except Exception as e:  # noqa: BLE001 - the relay keeps serving
                        self.log("frame error: %s" % e)
            else:
                try:
                    data, addr = key.fileobj.recvfrom(65536)
                except OSError:
                    continue
                if len(data) > MAX_DATAGRAM:
                    self.stats["dropped"] += 1
                    continue
                h = addr[0].encode()
                self.stats["to_board"] += 1
                self.send_frame(b"D" + port.to_bytes(2, "big") + addr[1].to_bytes(2, "big")
                                + bytes([len(h)]) + h + data)
        return True

    def run(self):
        self.connect()
        while not self.stopping:
            if not self.step():
                self.log("link closed (qemu stopped); reconnecting")
                self.connect()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--connect", required=True, metavar="PATH", help="qemu's unix socket of the board's UART1")
    p.add_argument("--bind4", default="127.0.0.1", help="host IPv4 address for the board's ports ('' for none)")
    p.add_argument("--bind6", default="::1", help="host IPv6 address for the board's ports ('' for none)")
    a = p.parse_args(argv)
    r = Relay(a.connect, a.bind4 or None, a.bind6 or None)

    def stop(signum, frame):
        r.stopping = True
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        r.run()
    except SystemExit:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
