"""The Linux/CPython host board: what the sans-IO core needs from a platform.

A board hands the node its randomness, AES, clock, storage and datagram sockets.
The node only awaits `recvfrom()` and calls `sendto()`, so the same runtime code runs
over MicroPython boards whose sockets look the same.
"""

import asyncio
import os
import socket
import time

from pnp_hostboard.crypto import CryptographyAES, fast_ed25519, fast_x25519
from pnp_hostboard.storage import DirStorage


class _Queue:
    """Bounded datagram queue: a flood is dropped and counted, never buffered forever."""

    def __init__(self, limit=256):
        self.items = []
        self.limit = limit
        self.dropped = 0
        self.send_dropped = 0
        self.event = asyncio.Event()

    def put(self, item):
        if len(self.items) >= self.limit:
            self.dropped += 1
            return
        self.items.append(item)
        self.event.set()

    async def get(self):
        while not self.items:
            self.event.clear()
            await self.event.wait()
        return self.items.pop(0)


class _Reader:
    """Drains a non-blocking socket in batches each time it is readable: one wake-up
    and no per-datagram callback, so a flood costs a recvfrom each and the node reads
    (and drops, or answers) far more datagrams a second before the kernel's buffer
    overflows and takes legitimate ones with it."""

    BATCH = 64

    def __init__(self, loop, sock, queue):
        self.sock = sock
        self.queue = queue
        self.errors = 0
        self.loop = loop
        self.buf = bytearray(65536)
        self.view = memoryview(self.buf)
        loop.add_reader(sock.fileno(), self._ready)

    def _ready(self):
        for _ in range(self.BATCH):
            try:
                n, addr = self.sock.recvfrom_into(self.buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # ICMP port unreachable and friends: counted (DESIGN section 5).
                self.errors += 1
                continue
            self.queue.put((bytes(self.view[:n]), (_unmap(addr[0]), addr[1])))

    def sendto(self, data, addr):
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.queue.send_dropped += 1      # the kernel's buffer is full: like a loss

    def close(self):
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()


def _unmap(host):
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host.split("%")[0]


class UdpSocket:
    """One bound UDP port, both address families where the host allows it."""

    def __init__(self, transports, queue, port):
        self._transports = transports
        self._queue = queue
        self.port = port

    async def recvfrom(self):
        return await self._queue.get()

    def sendto(self, data, addr):
        fam = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        tr = self._transports.get(fam)
        if tr is None:
            raise OSError("no %s socket on port %d" % ("IPv6" if fam == socket.AF_INET6 else "IPv4", self.port))
        tr.sendto(data, addr)

    @property
    def dropped(self):
        return self._queue.dropped

    def close(self):
        for tr in self._transports.values():
            tr.close()


class HostBoard:
    name = "host"
    # Source addresses whose cookie answers are counted per second under a flood
    # (engine COOKIES AND BUDGETS); a board keeps the engine's small default.
    answer_sources = 4096

    def __init__(self, state_dir=None, bind6="::", bind4="0.0.0.0", pure=False):
        self.aes = CryptographyAES()
        # DESIGN section 9: the host may swap OpenSSL in for the pure-Python X25519 and
        # Ed25519 (same API, same vectors); pure=True keeps the device's code path.
        self.dh = None if pure else fast_x25519
        self.sig = None if pure else fast_ed25519
        self.storage = DirStorage(state_dir) if state_dir else None
        self.bind6 = bind6
        self.bind4 = bind4

    def rand(self, n):
        return os.urandom(n)

    def now_ms(self):
        """The core's clock: integer ms that wrap at 2^30 (pnpipsec.ticks)."""
        return (time.monotonic_ns() // 1000000) & 0x3FFFFFFF

    def now(self):
        return time.monotonic()

    async def udp(self, port):
        """Bind `port` on IPv6 and IPv4; raises OSError when neither family binds."""
        loop = asyncio.get_running_loop()
        queue = _Queue()
        transports = {}
        errors = []
        for fam, host in ((socket.AF_INET6, self.bind6), (socket.AF_INET, self.bind4)):
            if host is None:
                continue
            sock = None
            try:
                sock = socket.socket(fam, socket.SOCK_DGRAM)
                if fam == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                sock.bind((host, port))
                sock.setblocking(False)
            except OSError as e:
                if sock is not None:
                    sock.close()
                errors.append(e)
                continue
            transports[fam] = _Reader(loop, sock, queue)
        if not transports:
            raise OSError("cannot bind UDP port %d: %s" % (port, errors[0] if errors else "no family"))
        return UdpSocket(transports, queue, port)
