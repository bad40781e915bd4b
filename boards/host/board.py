"""The Linux/CPython host board: what the sans-IO core needs from a platform.

A board hands the node its randomness, AES, clock, storage and datagram sockets.
The node only awaits `recvfrom()` and calls `sendto()`, so the same runtime code runs
over MicroPython boards whose sockets look the same.
"""

import asyncio
import errno
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
            host = _unmap(addr[0])
            if len(addr) > 3 and addr[3] and "%" not in host:
                host = "%s%%%d" % (host, addr[3])   # link-local: the zone (scope id) too
            self.queue.put((bytes(self.view[:n]), (host, addr[1])))

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


class BindError(OSError):
    """A port we need is taken (or not ours to bind): one line naming address and port."""

    def __str__(self):
        return self.strerror or OSError.__str__(self)


# Errors that mean "this host has no such family / address here", not "port taken": with
# the default wildcard binds, a host without IPv6 (or IPv4) runs on the other family.
_NO_FAMILY = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT)


def _hostport(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


class HostBoard:
    name = "host"
    # Source addresses whose cookie answers are counted per second under a flood
    # (engine COOKIES AND BUDGETS); a board keeps the engine's small default.
    answer_sources = 4096

    def __init__(self, state_dir=None, bind6="::", bind4="0.0.0.0", pure=False, log=None):
        self.aes = CryptographyAES()
        # DESIGN section 9: the host may swap OpenSSL in for the pure-Python X25519 and
        # Ed25519 (same API, same vectors); pure=True keeps the device's code path.
        self.dh = None if pure else fast_x25519
        self.sig = None if pure else fast_ed25519
        self.storage = DirStorage(state_dir) if state_dir else None
        self.bind6 = bind6
        self.bind4 = bind4
        self.log = log
        self._mon = None
        self._addr_cbs = []

    @classmethod
    def binding(cls, addresses, **kw):
        """A board bound to `addresses` (at most one IPv6 and one IPv4; the families not
        named are not bound); empty: every address of both families."""
        if not addresses:
            return cls(**kw)
        b6 = [a for a in addresses if ":" in a]
        b4 = [a for a in addresses if ":" not in a]
        if len(b6) > 1 or len(b4) > 1:
            raise ValueError("bind: at most one IPv6 and one IPv4 address")
        return cls(bind6=b6[0] if b6 else None, bind4=b4[0] if b4 else None, **kw)

    def bound(self):
        """The addresses the sockets bind ("::" / "0.0.0.0": all of that family)."""
        return [h for h in (self.bind6, self.bind4) if h is not None]

    def rand(self, n):
        return os.urandom(n)

    # -- our addresses (rtnetlink: pnp_hostboard.netlink) -----------------------------
    # Address events as on every board: (kind, address, ifindex, preferred_s, valid_s,
    # flags), kind "added" / "deprecated" / "removed", flags ("stable",), ("temporary",),
    # ("link-local",) or ("ipv4",). The sockets bind the wildcard by default, so a new or
    # vanished address needs no rebind: the kernel picks the source address (stable
    # before temporary: IPV6_PREFER_SRC_PUBLIC on our IPv6 sockets). A board bound to
    # one address logs when that address goes or is deprecated (the user chose it).

    def _monitor(self):
        if self._mon is None:
            from pnp_hostboard.netlink import AddressMonitor
            self._mon = AddressMonitor(log=self.log)
            self._mon.on_change(self._bound_check)
            for cb in self._addr_cbs:
                self._mon.on_change(cb)
            self._mon.open()
        return self._mon

    def addresses(self):
        """[(address, state, preferred_s, valid_s, ifindex, flags)] of this host (no ::1 /
        127.0.0.1); [] where rtnetlink is not available."""
        try:
            return self._monitor().listing()
        except OSError:
            return []

    def address_list(self):
        """Addresses the node may use now: preferred ones, stable global IPv6 first, then
        temporary, link-local, IPv4; only the bound ones when the board binds one address
        of a family."""
        try:
            addrs = self._monitor().address_list()
        except OSError:
            return []
        b6 = self.bind6 if self.bind6 not in (None, "::") else None
        b4 = self.bind4 if self.bind4 not in (None, "0.0.0.0") else None
        return [a for a in addrs if (":" in a and (self.bind6 is not None and (b6 is None or a == b6)))
                or (":" not in a and (self.bind4 is not None and (b4 is None or a == b4)))]

    def on_address_change(self, cb):
        """cb(events) on every change of our addresses, once watch() runs."""
        self._addr_cbs.append(cb)
        if self._mon is not None:
            self._mon.on_change(cb)

    def watch(self):
        """Follow address changes from the running asyncio loop; None (and a log line)
        where rtnetlink is not available."""
        try:
            return self._monitor().start()
        except OSError as e:
            if self.log is not None:
                self.log("addresses: no rtnetlink (%s); address changes are not followed" % (e,))
            return None

    def stop_watch(self):
        if self._mon is not None:
            self._mon.close()
            self._mon = None

    def _bound_check(self, events):
        for ev in events:
            if ev[0] in ("removed", "deprecated") and ev[1] in (self.bind6, self.bind4) and self.log:
                self.log("addresses: the bound address %s is %s; bind all addresses (no --bind) "
                         "to follow renumbering" % (ev[1], ev[0]))

    def now_ms(self):
        """The core's clock: integer ms that wrap at 2^30 (pnpipsec.ticks)."""
        return (time.monotonic_ns() // 1000000) & 0x3FFFFFFF

    def now(self):
        return time.monotonic()

    async def udp(self, port):
        """Bind `port` on the board's IPv6 and IPv4 addresses.

        Unicast sockets never set SO_REUSEADDR: with it a second node on the same ports
        also binds (and steals datagrams), so a taken port is a BindError naming the
        address and the port. A family whose address is missing on this host (no IPv6,
        an address not configured here) is skipped with a log line when the other
        family binds with the default wildcard addresses; an explicitly configured
        address that does not bind is an error. Raises BindError (an OSError) when a
        port is taken or nothing binds."""
        loop = asyncio.get_running_loop()
        queue = _Queue()
        transports = {}
        errors = []
        for fam, host, wild in ((socket.AF_INET6, self.bind6, "::"), (socket.AF_INET, self.bind4, "0.0.0.0")):
            if host is None:
                continue
            sock = None
            try:
                sock = socket.socket(fam, socket.SOCK_DGRAM)
                if fam == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    _prefer_public(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                sock.bind((host, port))
                sock.setblocking(False)
            except OSError as e:
                if sock is not None:
                    sock.close()
                if e.errno in _NO_FAMILY and host == wild:
                    errors.append((host, e))
                    continue
                for tr in transports.values():
                    tr.close()
                raise BindError(e.errno, _bind_text(host, port, e)) from None
            transports[fam] = _Reader(loop, sock, queue)
        if not transports:
            host, e = errors[0] if errors else ("?", None)
            raise BindError(e.errno if e else errno.EINVAL,
                            _bind_text(host, port, e) if e else "UDP port %d: no address to bind" % port)
        for host, e in errors:
            if self.log is not None:
                self.log("UDP port %d: %s not bound (%s); the other family only" % (port, host, _why(e)))
        return UdpSocket(transports, queue, port)


# linux/in6.h: IPV6_ADDR_PREFERENCES, IPV6_PREFER_SRC_PUBLIC (RFC 5014): the kernel's
# source address choice for a wildcard-bound socket takes stable (public) addresses
# before temporary ones, whatever net.ipv6.conf.*.use_tempaddr says.
IPV6_ADDR_PREFERENCES = 72
IPV6_PREFER_SRC_PUBLIC = 0x0002


def _prefer_public(sock):
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_ADDR_PREFERENCES, IPV6_PREFER_SRC_PUBLIC)
    except OSError:
        pass


def _why(e):
    text = e.strerror or str(e)
    return text[:1].lower() + text[1:]


def _bind_text(host, port, e):
    where = "UDP %s" % _hostport(host, port)
    if e.errno == errno.EADDRINUSE:
        return "%s: address already in use (another node or program has this port)" % where
    if e.errno == errno.EACCES:
        return "%s: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)" % where
    if e.errno == errno.EADDRNOTAVAIL:
        return "%s: cannot bind: the address is not one of this host's" % where
    return "%s: cannot bind: %s" % (where, _why(e))
