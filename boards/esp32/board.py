"""ESP32 board for pnpipsec (stock MicroPython ESP32 firmware, 1.23 or later).

    from board import Board
    board = await Board().up()        # joins the Wi-Fi named in /wifi.json

What it supplies (HACKING.md "Board interface"): os.urandom (esp_random), AES through
cryptolib (mbedTLS, hardware AES), ticks_ms-based monotonic seconds, flash storage
under /pnpipsec-state (littlefs by default), and UDP sockets.

IPv6: the stock ESP32 port has no IPv6 UDP -- WLAN.ipconfig has no 'addr6' (ValueError
"unexpected key", ports/esp32/network_common.c) and socket.sendto resolves IPv4 only
(ports/esp32/modsocket.c sets ai_family = AF_INET). The board decides at run time
(pnpboard.net.detect_ipv6), prints e.g.
    IPv6: not supported by this firmware (WLAN.ipconfig('addr6') not available (ValueError)); running IPv4 only
and then binds IPv4 only; a firmware that has IPv6 gets both families without changes.

Address events: the same polling watcher as the RP2 board (pnpboard.base.WlanBoard,
board.on_address_change(cb) / board.watch()). On the stock firmware it sees only the
IPv4 address (DHCP changes); there is no 'addr6' to read nor to set, so the app cannot
choose an IPv6 address here (README "Privacy and stable addresses").
"""

from pnpboard.base import WlanBoard, aes_provider  # noqa: F401 - pnpipsec.selftest uses it


class Board(WlanBoard):
    name = "esp32"
