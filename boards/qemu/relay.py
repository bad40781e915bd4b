"""Host side of the qemu board's UDP link: real UDP sockets <-> SLIP frames on UART1.

    python boards/qemu/relay.py --connect STATE/link.sock [--bind4 127.0.0.1] [--bind6 ::1]
                                [--control STATE/ctl.sock]

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
    A json                         an address event of the board: the JSON array
                                   [kind, address, zone, preferred, valid, flags]
                                   (ASCII: json.dumps escapes the rest)

The board's addresses: the relay keeps the board's address table (its own --bind6 and
--bind4 addresses at start) and listens on a control socket (--control, default
ctl.sock next to the --connect socket; unix stream, one JSON object per line, one JSON
reply per line), the protocol of the wasm board's STATE/ctl.sock (boards/wasm/board.mjs):
  {"op":"address","kind":"added"|"deprecated"|"removed","address":"2001:db8::1",
   "preferred":S|null,"valid":S|null,"flags":["temporary"]?,"zone":Z?}
       -> {"ok":true,"event":[kind,address,zone,preferred,valid,flags],"addresses":[...]}
          and an A frame to the board
  {"op":"addresses"} -> {"ok":true,"addresses":[[address,state,preferred,valid,zone,flags],...]}
  errors: {"ok":false,"error":"..."}.   `pnp vboard --state DIR --address KIND ADDR` sends one.
On the board's hello the relay sends, before h, one A frame for every entry that differs
from the start (added or changed addresses, a removed start address): the board's
addresses survive its reboots, as a real board's network does.

Datagrams for ports the board did not bind never exist (the relay binds only on
request); datagrams larger than MAX_DATAGRAM are dropped and counted.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import os
import selectors
import signal
import socket
import sys
import time

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD
MAX_DATAGRAM = 3000
MAGIC = b"pnpq1"
ADDRESS_KINDS = ("added", "deprecated", "removed")


def addr_flags(a):
    """The flags an address gets when the control request names none (board.mjs's)."""
    if ":" not in a:
        return ["ipv4"]
    if a == "::1":
        return ["loopback"]
    return ["link-local"] if a[:3] in ("fe8", "fe9", "fea", "feb") else ["stable"]


def _lifetime(v, name):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > 0xFFFFFFFF:
        raise ValueError("%s must be a whole number of seconds (0..4294967295) or null" % name)
    return v


def address_frame(ev) -> bytes:
    """The A frame (without SLIP) of one event [kind, address, zone, preferred, valid, flags]."""
    return b"A" + json.dumps(list(ev), separators=(",", ":")).encode("ascii")


class AddressTable:
    """The board's addresses as the host sets them: address -> [address, state,
    preferred_s, valid_s, zone, flags] in insertion order (board.mjs's table)."""

    def __init__(self, base):
        self.entries = {}
        for a in base:
            self.entries[a] = [a, "preferred", None, None, None, addr_flags(a)]
        self.base = {a: list(e) for a, e in self.entries.items()}

    def table(self):
        return [list(e) for e in self.entries.values()]

    def change(self, c):
        """Apply one control request; returns the event. ValueError when it is wrong."""
        kind = c.get("kind")
        if kind not in ADDRESS_KINDS:
            raise ValueError("kind must be added, deprecated or removed, not %s" % json.dumps(kind))
        a = c.get("address")
        try:
            a = str(ipaddress.ip_address(a.lower())) if isinstance(a, str) else ""
        except ValueError:
            a = ""
        if not a:
            raise ValueError("%s is not an IPv6 or IPv4 address" % json.dumps(c.get("address")))
        flags = c.get("flags")
        if flags is not None and (not isinstance(flags, list) or not all(isinstance(f, str) for f in flags)):
            raise ValueError("flags must be a list of words")
        old = self.entries.get(a)
        if flags is None:
            flags = list(old[5]) if old else addr_flags(a)
        zone = c["zone"] if "zone" in c else (old[4] if old else None)
        if zone is not None and not isinstance(zone, (str, int)):
            raise ValueError("zone must be a name, a number or null")
        pref = _lifetime(c.get("preferred"), "preferred")
        valid = _lifetime(c.get("valid"), "valid")
        if kind == "removed":
            if old is None:
                raise ValueError("%s is not an address of the board" % a)
            del self.entries[a]
            pref = 0 if pref is None else pref
            valid = 0 if valid is None else valid
        else:
            if kind == "deprecated" and pref is None:
                pref = 0
            e = [a, "preferred" if kind == "added" else "deprecated", pref, valid, zone, flags]
            if old is not None:
                old[:] = e          # keeps its place
            else:
                self.entries[a] = e
        return [kind, a, zone, pref, valid, flags]

    def replay(self):
        """Events that bring a board that knows only the start addresses up to date."""
        out = []
        for a, b in self.base.items():
            if a not in self.entries:
                out.append(["removed", a, b[4], 0, 0, b[5]])
        for a, e in self.entries.items():
            if e != self.base.get(a):
                out.append(["added" if e[1] == "preferred" else "deprecated", a, e[4], e[2], e[3], e[5]])
        return out


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
    def __init__(self, path, bind4="127.0.0.1", bind6="::1", log=None, control=None):
        self.path = path
        self.control_path = control
        self.bind4 = bind4
        self.bind6 = bind6
        self.log = log or (lambda s: print("relay: " + s, file=sys.stderr, flush=True))
        self.sel = selectors.DefaultSelector()
        self.link = None
        self.dec = SlipDecoder()
        self.ports = {}          # board port -> [sockets]
        self.stats = {"to_board": 0, "from_board": 0, "dropped": 0}
        self.stopping = False
        self.table = AddressTable(self.addresses())
        self.ctl = None
        self.ctl_bufs = {}       # control connection -> bytes not yet a whole line

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
                self._wait_control(0.05)     # the control socket answers meanwhile
                continue
            self.link = s
            self.dec = SlipDecoder()
            self.sel.register(s, selectors.EVENT_READ, ("link", None))
            self.log("connected to %s" % self.path)
            return

    def send_frame(self, payload: bytes):
        self.send_frames([payload])

    def send_frames(self, payloads):
        """Frames in one write (the board reads them in this order, none between)."""
        if self.link is not None:
            try:
                self.link.sendall(b"".join(slip_encode(p) for p in payloads))
            except OSError as e:
                self.log("link write failed: %s" % e)

    # -- the control socket (the board's addresses) --------------------------------------
    def listen_control(self):
        if not self.control_path or self.ctl is not None:
            return
        try:
            os.unlink(self.control_path)
        except OSError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(self.control_path)
        except OSError as e:       # e.g. a path too long for a unix socket: run without
            s.close()
            self.log("no control socket %s: %s" % (self.control_path, e))
            return
        s.listen(8)
        s.setblocking(False)
        self.ctl = s
        self.sel.register(s, selectors.EVENT_READ, ("ctl", None))
        self.log("control socket %s" % self.control_path)

    def close_control(self):
        for c in list(self.ctl_bufs):
            self._drop_control(c)
        if self.ctl is not None:
            self.sel.unregister(self.ctl)
            self.ctl.close()
            self.ctl = None
            try:
                os.unlink(self.control_path)
            except OSError:
                pass

    def _wait_control(self, timeout):
        if self.ctl is None:
            time.sleep(timeout)
            return
        for key, _ev in self.sel.select(timeout):
            if key.data[0] in ("ctl", "ctlconn"):
                self._control_ready(key)

    def _drop_control(self, c):
        self.ctl_bufs.pop(c, None)
        try:
            self.sel.unregister(c)
        except (KeyError, ValueError):
            pass
        c.close()

    def _control_ready(self, key):
        if key.fileobj is self.ctl:
            try:
                c, _ = self.ctl.accept()
            except OSError:
                return
            c.setblocking(False)
            self.ctl_bufs[c] = b""
            self.sel.register(c, selectors.EVENT_READ, ("ctlconn", None))
            return
        c = key.fileobj
        try:
            data = c.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop_control(c)
            return
        buf = self.ctl_bufs.get(c, b"") + data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                try:
                    c.setblocking(True)
                    c.settimeout(2)
                    c.sendall(json.dumps(self.control(line)).encode() + b"\n")
                    c.setblocking(False)
                except OSError:
                    self._drop_control(c)
                    return
        if len(buf) > 65536:
            self._drop_control(c)
            return
        self.ctl_bufs[c] = buf

    def control(self, line):
        """One control request (a JSON line) -> its reply (a dict)."""
        try:
            c = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "not JSON"}
        try:
            op = c.get("op") if isinstance(c, dict) else None
            if op == "address":
                ev = self.table.change(c)
                self.log("address %s %s (preferred %s, valid %s, %s)" % (ev[0], ev[1], ev[3], ev[4], " ".join(ev[5])))
                self.send_frame(address_frame(ev))
                return {"ok": True, "event": ev, "addresses": self.table.table()}
            if op == "addresses":
                return {"ok": True, "addresses": self.table.table()}
            return {"ok": False, "error": "unknown op %s (address, addresses)" % json.dumps(op)}
        except ValueError as e:
            return {"ok": False, "error": str(e)}

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
            replay = self.table.replay()
            self.log("board hello (%r); addresses %s%s" % (f[1:], " ".join(self.addresses()),
                                                           "; %d address events again" % len(replay) if replay else ""))
            # the board applies the A frames while it waits for h: its table is whole when
            # its hello returns
            self.send_frames([address_frame(ev) for ev in replay] + [b"h" + " ".join(self.addresses()).encode()])
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
            if kind in ("ctl", "ctlconn"):
                self._control_ready(key)
            elif kind == "link":
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
        self.listen_control()
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
    p.add_argument("--control", metavar="PATH",
                   help="the control socket for the board's addresses (default ctl.sock next to --connect; '' for none)")
    a = p.parse_args(argv)
    ctl = a.control if a.control is not None else os.path.join(os.path.dirname(os.path.abspath(a.connect)), "ctl.sock")
    r = Relay(a.connect, a.bind4 or None, a.bind6 or None, control=ctl or None)

    def stop(signum, frame):
        r.stopping = True
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        r.run()
    except SystemExit:
        pass
    finally:
        r.close_control()
    return 0


if __name__ == "__main__":
    sys.exit(main())
