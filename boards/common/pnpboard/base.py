"""BaseBoard: the board interface of HACKING.md ("Board interface") for MicroPython boards.

    rand(n)      os.urandom: the hardware RNG (ESP32 esp_random, RP2 get_rand_64)
    aes          pnpipsec.crypto.aes.CryptolibAES (cryptolib / ucryptolib, in C)
    now()        pnpboard.clock.Monotonic: ticks_ms accumulated, wraps handled
    udp(port)    pnpboard.udp.open_udp on the families this board has
    storage      pnpboard.storage.FlashStorage(storage_root)
    name         set by the subclass ("esp32", "rp2")

Subclasses add the network: up(), addresses(), ipv6 / ipv6_reason, and a watcher.
"""

try:
    import os as _os
except ImportError:  # pragma: no cover
    import uos as _os

from pnpboard.clock import Monotonic
from pnpboard.storage import FlashStorage
from pnpboard import udp as _udp
from pnpboard import net as _net

STORAGE_ROOT = "/pnpipsec-state"


def aes_provider():
    """The board's AES provider (pnpipsec.selftest looks for board.aes_provider)."""
    from pnpipsec.crypto.aes import CryptolibAES
    return CryptolibAES()


class BaseBoard:
    name = "micropython"

    def __init__(self, storage_root=STORAGE_ROOT, aes=None, clock=None, os_module=None,
                 socket_module=None, log=print, bind6="::", bind4="0.0.0.0"):
        self.os = os_module or _os
        self.log = log
        self.aes = aes if aes is not None else aes_provider()
        self.clock = clock or Monotonic()
        self.storage = FlashStorage(storage_root, self.os)
        if self.storage.recovered:
            self.log("storage: finished an interrupted write of %s" % ", ".join(self.storage.recovered))
        self.socket = socket_module
        self.ipv6 = False
        self.ipv6_reason = "network not up yet"
        self.ipv4 = True
        self.bind6 = bind6      # local addresses the UDP sockets bind to (default: any)
        self.bind4 = bind4

    def rand(self, n):
        return self.os.urandom(n)

    def now_ms(self):
        return self.clock.ticks()

    def now(self):
        return self.clock.now()

    async def udp(self, port):
        return await _udp.open_udp(port, want6=self.ipv6, want4=self.ipv4,
                                   socket_module=self.socket, bind6=self.bind6, bind4=self.bind4)


class WlanBoard(BaseBoard):
    """A BaseBoard on a Wi-Fi station interface (network.WLAN(network.STA_IF)).

    await board.up() reads the credentials file (pnpboard.net.load_wifi), joins, decides
    IPv6 at run time (pnpboard.net.detect_ipv6) and says so in one plain line, and takes
    the first address snapshot. board.addresses() lists (address, state, preferred_s,
    valid_s); board.on_address_change(cb) and board.watch() report changes as address
    events (pnpboard.net: "added" / "deprecated" / "removed", address, zone, preferred_s,
    valid_s, flags), polled every watch_interval seconds."""

    watch_interval = 5.0

    def __init__(self, wifi_file=None, network_module=None, **kw):
        BaseBoard.__init__(self, **kw)
        if network_module is None:
            import network as network_module
        self.network = network_module
        self.wifi_file = wifi_file or _net.WIFI_FILE
        self.wlan = None
        self.watcher = _net.AddressWatcher(self.addresses, self.watch_interval, self.log)

    def _socket_module(self):
        if self.socket is None:
            self.socket = _udp._socket
        return self.socket

    async def up(self):
        cfg = _net.load_wifi(self.wifi_file)
        _net.apply_globals(self.network, cfg)
        self.wlan = self.network.WLAN(self.network.STA_IF)
        await _net.connect(self.wlan, cfg, self.clock.elapsed_ms, self.log)
        self.ipv6, self.ipv6_reason = _net.detect_ipv6(self.wlan, self._socket_module())
        await self._after_connect()
        self.log(_net.ipv6_line(self.ipv6, self.ipv6_reason))
        self.watcher.poll()
        for a in self.addresses():
            self.log("address %s (%s)" % (a[0], a[1]))
        return self

    async def _after_connect(self):
        pass

    def addresses(self):
        out = []
        if self.wlan is None:
            return out
        for addr, _mask in _net.addresses4(self.wlan):
            out.append((addr, "preferred", None, None))
        if self.ipv6:
            out.extend(_net.addresses6(self.wlan))
        return out

    def address_list(self):
        """Addresses the node may use as its own now: preferred ones, stable global IPv6
        first, then temporary global IPv6, then link-local IPv6, then IPv4
        (pnpboard.net.order_addresses)."""
        return _net.order_addresses(self.addresses())

    def on_address_change(self, cb):
        self.watcher.on_change(cb)

    def watch(self):
        """Start polling the addresses every watch_interval seconds (asyncio task)."""
        return self.watcher.start()
