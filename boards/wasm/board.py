"""The virtual board (MicroPython WebAssembly under Node, boards/wasm/board.mjs).

    from board import Board
    board = Board()                     # or Board(storage_root="/pnpipsec-state")
    node = Node(board, identity, ...)   # pnpipsec.node, unchanged

The board interface of HACKING.md over the JS module "_vboard" (boards/wasm/bridge.mjs):

    rand(n)       Node's crypto.randomFillSync, written straight into a bytearray
    aes           BridgeAES: AES-ECB/CBC by Node's crypto (OpenSSL), zero-copy through
                  the wasm memory (uctypes.addressof); aes_provider() returns one
    now_ms()      the core's clock: integer ms ticks wrapping at 2^30 (performance.now());
    now()         monotonic seconds (for people and logs);
                  perf_ms() the same clock in milliseconds, for benchmarks
    udp(port)     async; a UDP port bound on IPv6 (v6-only) and IPv4 (node:dgram);
                  sock.recvfrom() is async, sock.sendto() never blocks and raises
                  OSError, sock.dropped counts datagrams dropped by the bounded queue
    storage       files under /pnpipsec-state on the board's file system, replaced
                  atomically (temp file + rename); the virtual board mirrors its file
                  system to the host folder given with --state
    name          "wasm"

The board is built into the virtual board (/.vboard/board.py); `pnp deploy --board
wasm` may also copy this file to /board.py, which then takes precedence.
asyncio.run(main()) works as in the other boards' main.py: see boards/wasm/board.mjs
for how the virtual board runs it (the port itself has no asyncio.run).
Only loopback traffic is expected (the host's addresses are not enumerated): the UDP
sockets bind the host's loopback. The board's own addresses are a table kept by
board.mjs, ::1 and 127.0.0.1 at start, which the host changes through the board's
control socket (STATE/ctl.sock; `pnp vboard --state DIR --address KIND ADDR`), as a
router (SLAAC) or DHCP server would: addresses() lists (address, state, preferred_s,
valid_s, zone, flags), address_list() the preferred ones, stable global IPv6 first, and
after board.watch() every change reaches the callbacks of on_address_change(cb) as a
list of address events (kind, address, zone, preferred_s, valid_s, flags), kind
"added" / "deprecated" / "removed", the shape every board reports (pnpboard.net).
"""

import asyncio
import errno
import json
import os

import uctypes
import _vboard

STORAGE_ROOT = "/pnpipsec-state"
_addr = uctypes.addressof


def _oserror(text, default=errno.EIO):
    """OSError with the errno named in a Node error text (e.g. "EADDRINUSE ...")."""
    num = default
    for word in text.replace(":", " ").split():
        if len(word) > 2 and word[0] == "E" and word.isupper():
            v = getattr(errno, word, None)
            if isinstance(v, int):
                num = v
                break
    return OSError(num, text)


class BridgeAES:
    """AES provider (HACKING.md "Crypto contracts") backed by Node's crypto."""

    def _run(self, mode, key, iv, data):
        n = len(data)
        if n % 16:
            raise ValueError("AES data length %d is not a multiple of 16" % n)
        if n == 0:
            return b""
        if iv is not None and len(iv) != 16:
            raise ValueError("AES-CBC needs a 16-byte IV")
        out = bytearray(n)
        err = _vboard.aes(mode, _addr(key), len(key), _addr(iv) if iv is not None else 0,
                          _addr(data), n, _addr(out))
        if err:
            raise ValueError(err)
        return bytes(out)

    def ecb_encrypt(self, key, data):
        return self._run(1, key, None, data)

    def cbc_encrypt(self, key, iv, data):
        return self._run(2, key, iv, data)

    def cbc_decrypt(self, key, iv, data):
        return self._run(3, key, iv, data)


def aes_provider():
    """The board's AES provider (pnpipsec.selftest looks for board.aes_provider)."""
    return BridgeAES()


_socks = {}


def _wake(sock_id):
    # Called from JS (dgram 'message'): must never raise.
    try:
        s = _socks.get(sock_id)
        if s is not None:
            s._ev.set()
    except BaseException:  # noqa: BLE001
        pass


_vboard.set_waker(_wake)

_watching = []   # boards whose watch() runs: they get the address events


def _addr_event(text):
    # Called from JS (board.mjs control socket -> bridge.mjs): one address event as JSON.
    # Must never raise; the board's watch task reports it to the callbacks.
    try:
        ev = _event(json.loads(str(text)))
        for b in _watching:
            b._pending.append(ev)
            b._ev.set()
    except BaseException:  # noqa: BLE001
        pass


_vboard.set_addr_hook(_addr_event)


def _event(e):
    """A JSON event [kind, address, zone, preferred, valid, flags] as the board tuple."""
    return (str(e[0]), str(e[1]), e[2], e[3], e[4], tuple(e[5] or ()))


def _is_link_local(a):
    return a[:3].lower() in ("fe8", "fe9", "fea", "feb")


def order_addresses(entries):
    """Preferred addresses, best first: stable global IPv6, temporary global IPv6,
    link-local IPv6, loopback IPv6 (::1), IPv4 (as pnpboard.net.order_addresses, which
    the board does not need to import)."""
    out = [[], [], [], [], []]
    for e in entries:
        if e[1] != "preferred":
            continue
        a, fl = e[0], e[5]
        if ":" not in a:
            out[4].append(a)
        elif a == "::1" or "loopback" in fl:
            out[3].append(a)
        elif _is_link_local(a) or "link-local" in fl:
            out[2].append(a)
        elif "temporary" in fl:
            out[1].append(a)
        else:
            out[0].append(a)
    return out[0] + out[1] + out[2] + out[3] + out[4]


class UdpSocket:
    """One UDP port on both families; datagrams wait in a bounded queue in JS."""

    def __init__(self, sock_id, port):
        self._id = sock_id
        self.port = port
        self._ev = asyncio.Event()
        self._closed = False

    async def recvfrom(self):
        while True:
            if self._closed:
                raise OSError(errno.EBADF, "socket closed")
            n = _vboard.udp_next_len(self._id)
            if n >= 0:
                buf = bytearray(n)
                meta = _vboard.udp_take(self._id, _addr(buf) if n else 0, n)
                if meta:
                    host, port = meta.rsplit(" ", 1)
                    return bytes(buf), (host, int(port))
                continue
            if n == -2:
                raise OSError(errno.EBADF, "socket closed")
            self._ev.clear()
            await self._ev.wait()

    def sendto(self, data, addr):
        if self._closed:
            raise OSError(errno.EBADF, "socket closed")
        host, port = addr
        n = len(data)
        err = _vboard.udp_send(self._id, _addr(data) if n else 0, n, str(host), int(port))
        if err:
            raise _oserror(err)
        return n

    def stats(self):
        import json
        s = _vboard.udp_stats(self._id)
        return json.loads(s) if s else {}

    @property
    def dropped(self):
        return self.stats().get("dropped", 0)

    def close(self):
        if not self._closed:
            self._closed = True
            _vboard.udp_close(self._id)
            _socks.pop(self._id, None)
            self._ev.set()


class Storage:
    """Named files under one directory, each replaced atomically (temp + rename)."""

    def __init__(self, root=STORAGE_ROOT):
        self.root = root.rstrip("/") or "/"
        cur = ""
        for part in self.root.split("/"):
            if not part:
                continue
            cur = cur + "/" + part
            try:
                os.mkdir(cur)
            except OSError as e:
                if e.errno != errno.EEXIST:
                    raise

    def path(self, name):
        if not name or "/" in name or name.startswith(".") or name.endswith(".tmp"):
            raise ValueError("bad storage name %r" % name)
        return self.root + "/" + name if self.root != "/" else "/" + name

    def read(self, name):
        """The stored bytes, or None when the name was never written."""
        try:
            with open(self.path(name), "rb") as f:
                return f.read()
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            raise

    def write(self, name, data):
        final = self.path(name)
        tmp = final + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, final)
        _vboard.fs_sync_soon()

    def remove(self, name):
        try:
            os.remove(self.path(name))
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
        _vboard.fs_sync_soon()


class Board:
    name = "wasm"

    def __init__(self, storage_root=STORAGE_ROOT, bind6="::", bind4="0.0.0.0", log=print,
                 queue_limit=256):
        self.aes = BridgeAES()
        self.storage = Storage(storage_root) if storage_root else None
        self.bind6 = bind6
        self.bind4 = bind4
        self.log = log
        self.queue_limit = queue_limit
        self.ipv6 = bind6 is not None
        self.ipv4 = bind4 is not None
        self.ipv6_reason = "loopback (virtual board)"
        self._cbs = []
        self._pending = []
        self._ev = asyncio.Event()
        self._task = None

    def rand(self, n):
        if n <= 0:
            return b""
        buf = bytearray(n)
        if not _vboard.rand_into(_addr(buf), n):
            raise OSError(errno.EIO, "no randomness from the host")
        return bytes(buf)

    def now_ms(self):
        return int(_vboard.perf_ms()) & 0x3FFFFFFF

    def now(self):
        return _vboard.now()

    def perf_ms(self):
        return _vboard.perf_ms()

    async def udp(self, port):
        """Bind `port` (0: any) on IPv6 and IPv4; raises OSError when neither binds."""
        r = await _vboard.udp_open(int(port), self.bind6 or "", self.bind4 or "", self.queue_limit)
        r = str(r)
        if r.startswith("!"):
            raise _oserror("cannot bind UDP port %d: %s" % (port, r[1:]))
        sid, bound = r.split()
        s = UdpSocket(int(sid), int(bound))
        _socks[s._id] = s
        return s

    # -- the network interface of the Wi-Fi boards (nothing to join here) ----------
    async def up(self):
        return self

    def _family_ok(self, addr):
        return self.ipv6 if ":" in addr else self.ipv4

    def addresses(self):
        """[(address, state, preferred_s, valid_s, zone, flags)]: the board's table
        (board.mjs), state "preferred" or "deprecated", of the families this board has."""
        out = []
        for e in json.loads(str(_vboard.addresses())):
            e = (str(e[0]), str(e[1]), e[2], e[3], e[4], tuple(e[5] or ()))
            if self._family_ok(e[0]):
                out.append(e)
        return out

    def address_list(self):
        """The preferred addresses, stable global IPv6 first (deprecated ones left out)."""
        return order_addresses(self.addresses())

    def on_address_change(self, cb):
        """cb(events) after every change, once watch() runs; a cb that raises is logged."""
        self._cbs.append(cb)

    def _emit(self, events):
        for cb in self._cbs:
            try:
                cb(events)
            except Exception as e:  # noqa: BLE001 - a broken consumer must not stop the reports
                self.log("address callback failed: %r" % (e,))

    def _drain(self):
        evs = [e for e in self._pending if self._family_ok(e[1])]
        self._pending = []
        if evs:
            self._emit(evs)
        return evs

    async def _run(self):
        try:
            while True:
                await self._ev.wait()
                self._ev.clear()
                self._drain()
        finally:
            if self in _watching:
                _watching.remove(self)

    def watch(self):
        """Start reporting address events (asyncio task; the events arrive from the host)."""
        if self._task is None:
            if self not in _watching:
                _watching.append(self)
            self._task = asyncio.create_task(self._run())
        return self._task

    def stop_watching(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self in _watching:
            _watching.remove(self)
