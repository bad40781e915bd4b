"""Monotonic seconds for the node, from MicroPython's wrapping millisecond ticks.

`time.ticks_ms()` wraps (period 2**30 ms, about 12.4 days, on MicroPython: see the
`time.ticks_diff` documentation), so its raw value cannot serve as a clock. Monotonic
accumulates `ticks_diff(now, last)` into an integer millisecond count; that is exact
across any number of wraps as long as now() runs at least once per half period
(~6.2 days) -- the node's timer task calls it at least once a second.

Float precision: ESP32 and RP2 builds use single-precision floats (24-bit mantissa),
so the float returned by now() loses millisecond resolution after ~4.6 h of uptime and
reaches 1 s resolution after ~97 days. Counting from board creation (not from boot)
keeps the numbers as small as they can be; elapsed_ms() gives the exact integer.
The core itself takes ticks(): integer ms that wrap (pnpipsec.ticks), never a float.
"""

try:
    from time import ticks_ms as _ticks_ms, ticks_diff as _ticks_diff
except ImportError:  # CPython: only for tests, which inject fake ticks
    _ticks_ms = None
    _ticks_diff = None


class Monotonic:
    def __init__(self, ticks_ms=None, ticks_diff=None):
        self._ticks = ticks_ms or _ticks_ms
        self._diff = ticks_diff or _ticks_diff
        if self._ticks is None or self._diff is None:
            raise RuntimeError("clock: no time.ticks_ms/ticks_diff on this port")
        self._last = self._ticks()
        self._ms = 0

    def elapsed_ms(self):
        """Milliseconds since this clock was made (an int, never decreasing)."""
        t = self._ticks()
        d = self._diff(t, self._last)
        if d > 0:
            self._ms += d
            self._last = t
        return self._ms

    def ticks(self):
        """The core's clock: integer ms that wrap at 2^30 (pnpipsec.ticks), the port's
        ticks_ms itself on 32-bit ports (a small int: no allocation)."""
        return self._ticks() & 0x3FFFFFFF

    def now(self):
        """Seconds since this clock was made (float, never decreasing; for people and
        logs -- the core takes ticks())."""
        return self.elapsed_ms() / 1000
