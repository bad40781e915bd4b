"""Non-blocking UDP for MicroPython boards, awaited with asyncio (no datagram API there).

open_udp(port, families) binds one socket per address family (lwIP cannot give one
socket both: MicroPython's modlwip binds ("::", p) as an IPv6-only pcb and
("0.0.0.0", p) as an IPv4-only one, so the RP2 board binds both, with SO_REUSEADDR,
which lwIP's udp_bind needs for two pcbs on one port; the stock ESP32 firmware has
IPv4 only). Each socket gets a reader task that moves datagrams into one bounded
queue; the node awaits `recvfrom()` on it, as with the host board.

How a reader waits for a datagram (MicroPython asyncio has no datagram API):

  * I/O queue (chosen when available): the reader yields
    `asyncio.core._io_queue.queue_read(sock)`, the same call asyncio's own streams make
    (extmod/asyncio/stream.py). The scheduler's `select.poll` wakes the task as soon
    as lwIP marks the socket readable: added latency is one scheduler pass, and the
    board sleeps in poll() while idle. Measured on MicroPython's unix port (x86-64,
    real sockets, host_tests/test_boards_logic.py): send-to-recvfrom 22 us mean, 74 us
    worst over 200 datagrams; an MCU's scheduler pass is slower but still sub-ms. Cancelling the task
    unregisters the socket (IOQueue.remove). It is a private name of asyncio's core,
    so it is probed at import and the fallback is used when it is missing.
  * Poll fallback: try recvfrom on the non-blocking socket and, when it has nothing,
    `await asyncio.sleep_ms(poll_ms)` (default 5 ms): up to poll_ms of added latency
    per datagram and a wake-up every poll_ms while idle. Used by ports without that
    asyncio core (CPython in the tests, the WebAssembly port).

Received datagrams come back as (bytes, (host_text, port)) with IPv4-mapped IPv6 hosts
unmapped and scope ids dropped. Ports whose sockets speak raw `struct sockaddr` bytes
(the unix port, recognised by socket.sockaddr) are translated: getaddrinfo for bind and
sendto, socket.sockaddr + pnpipsec.inet.ntop for recvfrom -- so the same code can be run
on the unix port against real sockets. sendto never blocks; it raises OSError (no socket of
the destination's family, or whatever the stack says, e.g. ENOMEM when lwIP is out of
buffers).
"""

try:
    import asyncio
except ImportError:  # pragma: no cover - MicroPython before 1.21
    import uasyncio as asyncio

try:
    import socket as _socket
except ImportError:  # pragma: no cover
    try:
        import usocket as _socket
    except ImportError:
        _socket = None

try:
    from asyncio import core as _core
    _IOQ = _core._io_queue
    _IOQ.queue_read  # noqa: B018 - probe the attribute
except (ImportError, AttributeError):
    _IOQ = None

try:
    import errno as _errno
    _AGAIN = (getattr(_errno, "EAGAIN", 11), getattr(_errno, "EWOULDBLOCK", 11),
              getattr(_errno, "ETIMEDOUT", 110))
except ImportError:  # pragma: no cover
    _AGAIN = (11, 110)

MAX_DATAGRAM = 1536   # IPv6 minimum MTU is 1280; what we send stays below it
QUEUE_LIMIT = 16      # lwIP itself queues only 4 per socket; we drain them here
POLL_MS = 5
BURST = 8             # datagrams read in a row before the reader yields to other tasks


def _sleep_ms(ms):
    f = getattr(asyncio, "sleep_ms", None)
    if f is not None:
        return f(ms)
    return asyncio.sleep(ms / 1000)


def _wait_readable(sock):
    # A generator, awaited like a coroutine: MicroPython's asyncio runs it as stream.py's
    # read() runs. Only used when _IOQ exists (never under CPython).
    yield _IOQ.queue_read(sock)


def _errno_of(e):
    n = getattr(e, "errno", None)
    if n is None and e.args:
        n = e.args[0]
    return n


def norm_host(host):
    """Textual host as the node wants it: no scope id, IPv4-mapped IPv6 unmapped."""
    if isinstance(host, (bytes, bytearray)):
        host = host.decode()
    i = host.find("%")
    if i >= 0:
        host = host[:i]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host


class UdpSocket:
    """One bound UDP port over one socket per family (see the module docstring)."""

    def __init__(self, socks, port, queue_limit=QUEUE_LIMIT, poll_ms=POLL_MS,
                 max_datagram=MAX_DATAGRAM, use_ioq=None, socket_module=None):
        self.socks = socks            # {4: sock, 6: sock}, at least one
        self.sm = socket_module or _socket
        self.raw = _raw_sockaddr(self.sm)
        self.port = port
        self.limit = queue_limit
        self.poll_ms = poll_ms
        self.max_datagram = max_datagram
        self.use_ioq = (_IOQ is not None) if use_ioq is None else use_ioq
        self._items = []
        self._event = asyncio.Event()
        self.dropped = 0
        self.errors = 0
        self.last_error = None
        self._tasks = []
        self.closed = False

    @property
    def families(self):
        return sorted(self.socks)

    def start(self):
        """Start the reader tasks (call from a running event loop)."""
        for fam in self.families:
            self._tasks.append(asyncio.create_task(self._reader(self.socks[fam])))

    def _put(self, item):
        if len(self._items) >= self.limit:
            self.dropped += 1
            return
        self._items.append(item)
        self._event.set()

    def poll_once(self, sock):
        """One non-blocking read: True when a datagram was queued, False when none was
        waiting; other socket errors are counted (ICMP errors some stacks report)."""
        try:
            data, addr = sock.recvfrom(self.max_datagram)
        except OSError as e:
            if _errno_of(e) in _AGAIN:
                return False
            self.errors += 1
            self.last_error = e
            return None
        if self.raw and isinstance(addr, (bytes, bytearray)):
            addr = _from_sockaddr(self.sm, addr)
        self._put((data, (norm_host(addr[0]), addr[1])))
        return True

    async def _reader(self, sock):
        burst = 0
        while not self.closed:
            got = self.poll_once(sock)
            if got:
                burst += 1
                if burst >= BURST:
                    # a flood must not starve the other tasks (the node's timer, the app)
                    burst = 0
                    await _sleep_ms(0)
                continue
            burst = 0
            if got is None or not self.use_ioq:
                await _sleep_ms(self.poll_ms)
            else:
                await _wait_readable(sock)

    async def recvfrom(self):
        while not self._items:
            self._event.clear()
            await self._event.wait()
        return self._items.pop(0)

    def sendto(self, data, addr):
        host = norm_host(addr[0])
        fam = 6 if ":" in host else 4
        s = self.socks.get(fam)
        if s is None:
            raise OSError("no IPv%d on this board (UDP port %d)" % (fam, self.port))
        s.sendto(data, _to_sockaddr(self.sm, host, addr[1]) if self.raw else (host, addr[1]))

    def close(self):
        self.closed = True
        for t in self._tasks:
            t.cancel()   # unregisters the socket from asyncio's poller first
        self._tasks = []
        for s in self.socks.values():
            try:
                s.close()
            except OSError:
                pass


def _raw_sockaddr(sm):
    # MicroPython's unix port: addresses are struct sockaddr bytes (socket.sockaddr parses)
    return sm is not None and hasattr(sm, "sockaddr")


def _to_sockaddr(sm, host, port):
    return sm.getaddrinfo(host, port, 0, sm.SOCK_DGRAM)[0][-1]


def _from_sockaddr(sm, raw):
    from pnpipsec.inet import ntop
    t = sm.sockaddr(raw)
    return ntop(t[1]), t[2]


def bind_socks(port, want6=True, want4=True, socket_module=None, bind6="::", bind4="0.0.0.0"):
    """({family: bound non-blocking socket}, {family: why not}) for UDP `port`."""
    sm = socket_module or _socket
    if sm is None:
        raise OSError("no socket module on this port")
    socks = {}
    why = {}
    plan = []
    if want6:
        plan.append((6, getattr(sm, "AF_INET6", None), bind6))
    if want4:
        plan.append((4, sm.AF_INET, bind4))
    for fam, af, host in plan:
        if af is None:
            why[fam] = "socket module has no AF_INET6"
            continue
        s = None
        try:
            s = sm.socket(af, sm.SOCK_DGRAM)
            try:
                s.setsockopt(sm.SOL_SOCKET, sm.SO_REUSEADDR, 1)
            except (OSError, AttributeError):
                pass
            if fam == 6 and hasattr(sm, "IPV6_V6ONLY"):
                try:   # CPython/Linux: keep the IPv6 socket off the IPv4 port
                    s.setsockopt(sm.IPPROTO_IPV6, sm.IPV6_V6ONLY, 1)
                except (OSError, AttributeError):
                    pass
            s.bind(_to_sockaddr(sm, host, port) if _raw_sockaddr(sm) else (host, port))
            s.setblocking(False)
        except (OSError, ValueError, TypeError) as e:
            why[fam] = "%s: %s" % (e.__class__.__name__, e)
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
            continue
        socks[fam] = s
    return socks, why


async def open_udp(port, want6=True, want4=True, socket_module=None, bind6="::", bind4="0.0.0.0", **kw):
    """A started UdpSocket on `port`; OSError naming each family's failure when none binds."""
    socks, why = bind_socks(port, want6, want4, socket_module, bind6, bind4)
    if not socks:
        raise OSError("cannot bind UDP port %d: %s" % (
            port, "; ".join("IPv%d %s" % (f, why[f]) for f in sorted(why)) or "no family"))
    u = UdpSocket(socks, port, socket_module=socket_module, **kw)
    u.why_not = why
    u.start()
    return u
