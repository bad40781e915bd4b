"""The qemu board: MicroPython on an emulated Cortex-M3 (MPS2-AN385), UDP over a UART.

    from board import Board
    board = Board()                     # the board interface of HACKING.md
    node = Node(board, identity, ...)   # pnpipsec.node, unchanged

The board has no network interface. Its datagrams travel over UART1 (the console and
mpremote stay on UART0) to a relay on the host (boards/qemu/relay.py), the way a
radio co-processor is wired to the MCU of many appliances. The frames are SLIP
(RFC 1055) with a one-byte type; boards/qemu/README.md has the table. The relay binds
the board's UDP ports on host addresses and forwards in both directions.

    rand(n)       the host's os.urandom, asked over the link: the MPS2 has no TRNG and the
                  qemu port no os.urandom (a request/answer, a few per handshake)
    aes           pnpipsec.crypto.aes.PureAES: the qemu build has no cryptolib (it needs
                  axTLS or mbedTLS, which the port does not link)
    now_ms()      time.ticks_ms() (SysTick), the core's integer ms ticks; now() seconds
    udp(port)     async; the relay binds the port on its IPv4 and IPv6 addresses
    addresses()   the board's table, (address, state, preferred_s, valid_s, zone, flags):
                  the relay's addresses at start, then what the host sets through the
                  relay's control socket (STATE/ctl.sock, `pnp vboard --address`), each
                  change an A frame; address_list() the preferred ones, stable global
                  IPv6 first; after watch() every change reaches on_address_change(cb)
                  as a list of address events (kind, address, zone, preferred_s,
                  valid_s, flags), the shape every board reports (pnpboard.net)
    storage       pnpboard.storage.FlashStorage on the RAM disk (_boot.py: littlefs,
                  survives machine.reset(), not a restart of qemu)
    name          "qemu"

Ctrl-C: the qemu port reads its console only when asked (no UART interrupt), so while
the node runs, the link task also watches the console and raises KeyboardInterrupt on
Ctrl-C (mpremote sends one to take over the board); busy code delays it.
"""

import asyncio
import errno
import json
import sys

try:
    import select
    from machine import mem32
except ImportError:  # CPython: the link logic is tested with a fake UART
    select = None
    mem32 = None

from pnpboard.base import BaseBoard

UART1 = 0x40005000     # CMSDK APB UART1 of the MPS2-AN385 (qemu: the second -serial)
END = 0xC0
ESC = 0xDB
ESC_END = 0xDC
ESC_ESC = 0xDD
MAX_FRAME = 4096
MAGIC = b"pnpq1"


class LinkTimeout(OSError):
    pass


class MemUart:
    """The CMSDK APB UART by its registers (DATA 0x0, STATE 0x4, CTRL 0x8, BAUDDIV 0x10)."""

    def __init__(self, base=UART1):
        self.data = base
        self.state = base + 4
        mem32[base + 0x10] = 16          # BAUDDIV (qemu wants >= 16)
        mem32[base + 8] = 3              # CTRL: TX and RX enabled

    def read_byte(self):
        """A received byte, or -1 when none is waiting."""
        if mem32[self.state] & 2:
            return mem32[self.data] & 0xFF
        return -1

    def write(self, data):
        st = self.state
        d = self.data
        for b in data:
            while mem32[st] & 1:
                pass
            mem32[d] = b


def slip_encode(payload):
    out = bytearray([END])
    for b in payload:
        if b == END:
            out.append(ESC)
            out.append(ESC_END)
        elif b == ESC:
            out.append(ESC)
            out.append(ESC_ESC)
        else:
            out.append(b)
    out.append(END)
    return out


class Link:
    """SLIP frames over a byte channel (uart: read_byte() -> int or -1, write(bytes))."""

    def __init__(self, uart, ticks_ms=None, ticks_diff=None):
        self.uart = uart
        self.buf = bytearray()
        self.esc = False
        self.frames = []            # frames read while waiting for an answer
        self.bad = 0
        if ticks_ms is None:
            import time
            ticks_ms, ticks_diff = time.ticks_ms, time.ticks_diff
        self.ticks_ms = ticks_ms
        self.ticks_diff = ticks_diff

    def send(self, payload):
        self.uart.write(slip_encode(payload))

    def poll(self, spin_ms=5):
        """Read what is waiting; returns the next complete frame or None. Inside a frame
        it keeps reading for up to spin_ms without a byte (the UART has no FIFO)."""
        if self.frames:
            return self.frames.pop(0)
        rd = self.uart.read_byte
        t0 = None
        while True:
            b = rd()
            if b < 0:
                if not self.buf:
                    return None
                if t0 is None:
                    t0 = self.ticks_ms()
                elif self.ticks_diff(self.ticks_ms(), t0) > spin_ms:
                    return None
                continue
            t0 = None
            if self.esc:
                self.esc = False
                b = END if b == ESC_END else ESC if b == ESC_ESC else b
            elif b == ESC:
                self.esc = True
                continue
            elif b == END:
                if self.buf:
                    f = bytes(self.buf)
                    self.buf = bytearray()
                    return f
                continue
            if len(self.buf) < MAX_FRAME:
                self.buf.append(b)
            else:
                self.bad += 1
                self.buf = bytearray()

    def request(self, payload, answer_type, timeout_ms=5000, deliver=None):
        """Send payload and wait (blocking) for the first frame of answer_type; other
        frames go to deliver(frame) (or are kept for poll())."""
        self.send(payload)
        t0 = self.ticks_ms()
        while True:
            f = self.poll()
            if f is None:
                if self.ticks_diff(self.ticks_ms(), t0) > timeout_ms:
                    raise LinkTimeout(errno.ETIMEDOUT, "no answer from the host relay on the UART link")
                continue
            if f[0] == answer_type:
                return f
            if deliver is not None:
                deliver(f)
            else:
                self.frames.append(f)


class UdpSocket:
    def __init__(self, board, port, queue_limit):
        self.board = board
        self.port = port
        self.q = []
        self.limit = queue_limit
        self.dropped = 0
        self._ev = asyncio.Event()
        self._closed = False

    def _put(self, item):
        if len(self.q) >= self.limit:
            self.dropped += 1
            return
        self.q.append(item)
        self._ev.set()

    async def recvfrom(self):
        while True:
            if self._closed:
                raise OSError(errno.EBADF, "socket closed")
            if self.q:
                return self.q.pop(0)
            self._ev.clear()
            await self._ev.wait()

    def sendto(self, data, addr):
        if self._closed:
            raise OSError(errno.EBADF, "socket closed")
        host, port = addr
        h = str(host).encode()
        n = len(data)
        if n > MAX_FRAME - 64:
            raise OSError(errno.EMSGSIZE, "datagram too large for the link")
        self.board.link.send(b"S" + self.port.to_bytes(2, "big") + int(port).to_bytes(2, "big")
                             + bytes([len(h)]) + h + bytes(data))
        return n

    def close(self):
        if not self._closed:
            self._closed = True
            self.board._socks.pop(self.port, None)
            try:
                self.board.link.send(b"C" + self.port.to_bytes(2, "big"))
            except OSError:
                pass
            self._ev.set()


def _sleep_ms(ms):
    f = getattr(asyncio, "sleep_ms", None)        # CPython (tests) has only sleep()
    return f(ms) if f is not None else asyncio.sleep(ms / 1000)


def _default_flags(a):
    if ":" not in a:
        return ("ipv4",)
    if a == "::1":
        return ("loopback",)
    return ("link-local",) if a[:3].lower() in ("fe8", "fe9", "fea", "feb") else ("stable",)


def order_addresses(entries):
    """Preferred addresses, best first: stable global IPv6, temporary global IPv6,
    link-local IPv6, loopback IPv6, IPv4 (the wasm board's order)."""
    out = ([], [], [], [], [])
    for e in entries:
        if e[1] != "preferred":
            continue
        a, fl = e[0], e[5]
        if ":" not in a:
            out[4].append(a)
        elif a == "::1" or "loopback" in fl:
            out[3].append(a)
        elif "link-local" in fl or a[:3].lower() in ("fe8", "fe9", "fea", "feb"):
            out[2].append(a)
        elif "temporary" in fl:
            out[1].append(a)
        else:
            out[0].append(a)
    return out[0] + out[1] + out[2] + out[3] + out[4]


def aes_provider():
    from pnpipsec.crypto.aes_pure import PureAES
    return PureAES()


class Board(BaseBoard):
    name = "qemu"
    poll_ms = 2

    def __init__(self, uart=None, log=print, queue_limit=64, link=None, **kw):
        if "aes" not in kw:
            kw["aes"] = aes_provider()
        BaseBoard.__init__(self, log=log, **kw)
        self.link = link or Link(uart or MemUart())
        self.queue_limit = queue_limit
        self._socks = {}
        self._pump = None
        self._hello = None
        self._req = 0
        self.ipv6_reason = "the relay's addresses"
        self._table = []          # [address, state, preferred, valid, zone, flags]
        self._gone = []           # start addresses the host removed (told during hello)
        self._cbs = []
        self._pending = []
        self._watching = False

    # -- the link ---------------------------------------------------------------------
    def _deliver(self, f):
        t = f[0]
        if t == 0x44 and len(f) >= 6:            # 'D': a datagram for one of our ports
            lport = int.from_bytes(f[1:3], "big")
            pport = int.from_bytes(f[3:5], "big")
            alen = f[5]
            host = f[6:6 + alen].decode()
            s = self._socks.get(lport)
            if s is not None:
                s._put((f[6 + alen:], (host, pport)))
        elif t == 0x41:                          # 'A': an address event from the host
            try:
                e = json.loads(f[1:].decode())
                ev = (str(e[0]), str(e[1]), e[2], e[3], e[4], tuple(str(x) for x in e[5] or ()))
                if ev[0] not in ("added", "deprecated", "removed"):
                    raise ValueError(ev[0])
            except Exception as e:  # noqa: BLE001 - a bad frame never stops the link
                self.log("link: bad address frame (%r)" % (e,))
                return
            self._apply(ev)
        elif t == 0x45:                          # 'E': the relay could not send
            self.log("link: relay says %s" % f[1:].decode())
        # anything else (late answers) is dropped

    def _next_id(self):
        self._req = (self._req + 1) & 0xFF
        return self._req

    def hello(self):
        """Greet the relay (it forgets the ports of an earlier boot); returns its
        addresses. Done once, on first use of the link."""
        if self._hello is None:
            # the relay answers with A frames first (what the host changed since the
            # start: they survive our reboots), then h
            self._table = []
            self._gone = []
            f = self.link.request(b"H" + MAGIC, 0x68, deliver=self._deliver)   # 'h'
            self._hello = [a for a in f[1:].decode().split() if a]
            self.ipv6 = any(":" in a for a in self._hello)
            self.ipv4 = any(":" not in a for a in self._hello)
            have = [e[0] for e in self._table]
            self._table = [[a, "preferred", None, None, None, _default_flags(a)] for a in self._hello
                           if a not in have and a not in self._gone] + self._table
            self._gone = []
        return self._hello

    # -- the board's addresses (the host changes them through the relay) --------------
    def _apply(self, ev):
        kind, a = ev[0], ev[1]
        for i in range(len(self._table)):
            if self._table[i][0] == a:
                break
        else:
            i = -1
        if kind == "removed":
            if i >= 0:
                self._table.pop(i)
            elif self._hello is None:
                self._gone.append(a)
        else:
            e = [a, "preferred" if kind == "added" else "deprecated", ev[3], ev[4], ev[2], ev[5]]
            if i >= 0:
                self._table[i] = e
            else:
                self._table.append(e)
        if self._watching:
            self._pending.append(ev)

    def rand(self, n):
        if n <= 0:
            return b""
        self.hello()
        out = b""
        while len(out) < n:
            k = min(n - len(out), 1024)
            i = self._next_id()
            while True:
                f = self.link.request(b"R" + bytes([i]) + k.to_bytes(2, "big"), 0x72, deliver=self._deliver)
                if f[1] == i:
                    break
            if len(f) - 2 != k:
                raise OSError(errno.EIO, "short randomness from the relay")
            out += f[2:]
        return out

    async def _run_pump(self):
        poll = None
        if select is not None:
            poll = select.poll()
            poll.register(sys.stdin, select.POLLIN)
        link = self.link
        while True:
            # the pump never dies: a frame that cannot be read or delivered (MemoryError
            # included) is counted and dropped, as a full radio buffer would drop it
            try:
                while True:
                    f = link.poll()
                    if f is None:
                        break
                    self._deliver(f)
            except Exception as e:  # noqa: BLE001
                link.bad += 1
                link.buf = bytearray()
                link.esc = False
                self.log("link: frame dropped (%r)" % e)
            if self._pending:
                evs = self._pending
                self._pending = []
                self._emit(evs)
            if poll is not None and poll.poll(0):
                if sys.stdin.read(1) == "\x03":
                    raise KeyboardInterrupt
            await _sleep_ms(self.poll_ms)

    async def udp(self, port):
        self.hello()
        port = int(port)
        i = self._next_id()
        while True:
            f = self.link.request(b"B" + bytes([i]) + port.to_bytes(2, "big"), 0x62, deliver=self._deliver)
            if f[1] == i:
                break
        err = int.from_bytes(f[2:4], "big")
        if err:
            raise OSError(err, "cannot bind UDP port %d on the relay: %s" % (port, f[6:].decode()))
        bound = int.from_bytes(f[4:6], "big")
        s = UdpSocket(self, bound, self.queue_limit)
        self._socks[bound] = s
        self._start_pump()
        return s

    def _start_pump(self):
        if self._pump is None:
            self._pump = asyncio.create_task(self._run_pump())
        return self._pump

    # -- the network interface of the Wi-Fi boards (the relay is the network) --------
    async def up(self):
        addrs = self.hello()
        self.log("link: relay up, addresses %s" % ", ".join(addrs))
        return self

    def addresses(self):
        """[(address, state, preferred_s, valid_s, zone, flags)], state "preferred" or
        "deprecated": the relay's addresses and what the host changed."""
        return [(e[0], e[1], e[2], e[3], e[4], tuple(e[5])) for e in self._table]

    def address_list(self):
        """The preferred addresses, stable global IPv6 first (deprecated ones left out)."""
        return order_addresses(self._table)

    def on_address_change(self, cb):
        """cb(events) after every change, once watch() runs; a cb that raises is logged."""
        self._cbs.append(cb)

    def _emit(self, events):
        for cb in self._cbs:
            try:
                cb(events)
            except Exception as e:  # noqa: BLE001 - a broken consumer must not stop the reports
                self.log("address callback failed: %r" % (e,))

    def watch(self):
        """Report address events from now on (they arrive over the link: the task that
        reads it, started here when udp() has not yet, hands them to the callbacks)."""
        self.hello()
        self._watching = True
        return self._start_pump()

    def stop_watching(self):
        self._watching = False
        self._pending = []
