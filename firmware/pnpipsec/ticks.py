"""The core's time: integer milliseconds that wrap, as MicroPython's time.ticks_ms().

Every `now` the core takes is a tick in [0, PERIOD): boards give
`time.ticks_ms() & MASK` (the same value on 32-bit ports, where ticks_ms wraps at
2^30 and stays a small int, so timer arithmetic never allocates). Why not seconds in a
float: boards have single-precision floats, which lose the millisecond after 4.6 h of
uptime and the second after 97 days.

Ticks are compared only through diff(), never with < or - directly. A deadline is
add(now, ms). diff is exact while the two ticks are less than HALF (2^29 ms, 6.2 days)
apart, so:
  - every interval the core schedules is at most MAX_INTERVAL (5 days; lifetimes are
    checked against it where they are configured);
  - a stamp that may grow old (last packet from a peer, last proof) is read through
    age(), and the periodic tick keeps old stamps within reach with clamp().
Seconds appear only at the edges (configuration, the application's timeouts) and are
converted once with ms().
"""

PERIOD = 1 << 30
MASK = PERIOD - 1
HALF = PERIOD >> 1
MAX_INTERVAL = 5 * 86400 * 1000     # longest interval the core may schedule
AGE_CAP = 500000000                 # ~5.8 days (> MAX_INTERVAL, < HALF): older stamps
                                    # are kept at this age


def diff(a, b):
    """a - b in ms, for ticks less than HALF apart (time.ticks_diff semantics)."""
    return ((a - b + HALF) & MASK) - HALF


def add(t, ms):
    """The tick ms milliseconds after (before, when negative) t."""
    return (t + ms) & MASK


def age(now, t):
    """Milliseconds since stamp t (0 for a stamp in the future)."""
    d = ((now - t + HALF) & MASK) - HALF
    return d if d > 0 else 0


def clamp(now, t):
    """Stamp t, or now - AGE_CAP when t is older: old stamps stay comparable."""
    if t is not None and age(now, t) > AGE_CAP:
        return (now - AGE_CAP) & MASK
    return t


def ms(seconds, limit=False):
    """Seconds (int or float) as whole milliseconds (rounded: single-precision 0.7 *
    1000 is 699.99994). Outside 0..MAX_INTERVAL: ValueError, or with limit=True (an
    application's timeout, where 1e9 means "forever") the nearest bound."""
    v = int(seconds * 1000 + 0.5)
    if v < 0 or v > MAX_INTERVAL:
        if limit:
            return 0 if v < 0 else MAX_INTERVAL
        raise ValueError("time: %r s is outside 0..%d s" % (seconds, MAX_INTERVAL // 1000))
    return v
