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
Only loopback traffic is expected (the host's addresses are not enumerated):
addresses() reports ::1 and 127.0.0.1.
"""

import asyncio
import errno
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

    def addresses(self):
        out = []
        if self.ipv6:
            out.append(("::1", "preferred", None, None))
        if self.ipv4:
            out.append(("127.0.0.1", "preferred", None, None))
        return out

    def address_list(self):
        return [a[0] for a in self.addresses()]

    def on_address_change(self, cb):
        pass

    def watch(self):
        return None
