"""Raspberry Pi Pico W (RP2040 / RP2350 with CYW43) board for pnpipsec, MicroPython 1.24+.

    from board import Board
    board = await Board().up()        # joins the Wi-Fi named in /wifi.json

What it supplies (HACKING.md "Board interface"): os.urandom (get_rand_64), AES through
cryptolib, ticks_ms-based monotonic seconds, flash storage under /pnpipsec-state
(littlefs), UDP on IPv6 and IPv4, and address reports.

IPv6 is on in the RP2 port since 1.24 (LWIP_IPV6 in ports/rp2/lwip_inc/lwipopts.h):
link-local and SLAAC addresses appear in WLAN.ipconfig('addr6') as
(address, state, preferred_lifetime, valid_lifetime). After joining, the board
  * checks IPv6 at run time (pnpboard.net.detect_ipv6) and says so,
  * sets network.ipconfig(prefer=6) so name lookups prefer IPv6 (extmod/network_lwip.c),
  * waits up to slaac_wait seconds for a preferred global address (router
    advertisements take a moment), and
  * reports address changes: board.on_address_change(cb) with address events
    (kind, addr, zone, preferred_s, valid_s, flags), kind "added" / "deprecated" /
    "removed" (pnpboard.net), from polling WLAN.ipconfig('addr6') every watch_interval
    seconds once board.watch() runs.
lwIP's SLAAC addresses reuse the MAC-derived (EUI-64) interface identifier of the
link-local address. An app that wants an RFC 7217 stable or RFC 8981 temporary address
sets it itself (pnpboard.addrgen, README "Privacy and stable addresses"):
WLAN.ipconfig(addr6="2001:db8::...") adds one static address (lwIP marks it preferred
at once, lifetimes "forever", no DAD; a second call replaces it) and
WLAN.ipconfig(autoconf6=False) stops SLAAC (extmod/network_lwip.c).
UDP binds two sockets per port, ("::", p) and ("0.0.0.0", p): lwIP's pcbs are single-family.
"""

from pnpboard.base import WlanBoard, aes_provider  # noqa: F401 - pnpipsec.selftest uses it
from pnpboard import net as _net

try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio


class Board(WlanBoard):
    name = "rp2"
    slaac_wait = 5.0

    def _sleep_ms(self, ms):
        f = getattr(asyncio, "sleep_ms", None)
        return f(ms) if f is not None else asyncio.sleep(ms / 1000)

    def global6(self):
        return [a[0] for a in _net.addresses6(self.wlan)
                if a[1] == "preferred" and not _net.is_link_local(a[0])]

    async def _after_connect(self):
        if not self.ipv6:
            return
        cfg = getattr(self.network, "ipconfig", None)
        if cfg is not None:
            try:
                cfg(prefer=6)
            except (OSError, ValueError, TypeError):
                pass
        deadline = self.clock.elapsed_ms() + int(self.slaac_wait * 1000)
        while not self.global6() and self.clock.elapsed_ms() < deadline:
            await self._sleep_ms(250)
        if not self.global6():
            self.log("IPv6: no global address yet (no router advertisement?); link-local only for now")
