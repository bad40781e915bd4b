"""pnpboard: MicroPython board glue shared by the ESP32 and RP2 (Pico W) boards.

Deployed to the board as /lib/pnpboard/ (`pnp deploy` copies boards/common/pnpboard/*.py
there; boards/esp32/manifest.py and boards/rp2/manifest.py freeze it);
boards/esp32/board.py and boards/rp2/board.py import it as `pnpboard`.

    pnpboard.clock    Monotonic: time.ticks_ms accumulated into float seconds (wraps handled)
    pnpboard.storage  FlashStorage: files under one directory, atomic replace, boot recovery
    pnpboard.udp      open_udp(port): non-blocking UDP over `socket`, one per address family,
                      awaited through asyncio's I/O queue (poll fallback)
    pnpboard.net      Wi-Fi credentials file, address parsing, IPv6 detection, AddressWatcher
    pnpboard.base     BaseBoard: the HACKING.md board interface assembled from the above

Every module imports MicroPython-only names behind try/except, so the logic runs under
CPython with fake modules (host_tests/test_boards_logic.py).
"""

__version__ = "0.1.0"
