"""Current security level per peer, change callbacks and level waiters (DESIGN s4).

    t = LevelTable()
    t.level(peer) -> int                       # CLEAR when nothing is known
    t.since(peer) -> tick or None              # when the current level was set
    events = t.set(peer, level, now)           # [(peer, old, new)] ([] if unchanged)
    events = t.drop(peer, now)                 # the SA went away: back to CLEAR
    h = t.on_change(cb)                        # cb(peer, old, new, now); t.off_change(h)
    w = t.wait(peer, min_level, deadline, cb)  # cb(ok, level) exactly once
    t.cancel(w)                                # no callback after this
    t.tick(now)                                # fires cb(False, level) for past deadlines
    t.next_deadline(now) -> ms until the nearest deadline (<= 0: due), or None
All times are integer ms ticks (pnpipsec.ticks): deadline = ticks.add(now, ms).

No asyncio here: the runtime wraps a waiter in an Event, e.g.
    ev = asyncio.Event(); box = []
    w = t.wait(peer, AUTHENTICATED, ticks.add(now, timeout_ms), lambda ok, lv: (box.append((ok, lv)), ev.set()))
    await ev.wait()       # the runtime's timer calls t.tick(now)
wait() calls cb(True, level) at once (and returns None) when the level is already
reached; deadline None waits without a deadline (until cancel). Levels only move by
set()/drop(): a downgrade (SA lost) is reported to change callbacks like an upgrade;
waiters wait for level >= min_level and are not failed by a downgrade (the deadline
does that). Sticky memory is not kept here but in pnpipsec.discovery. A callback that
raises is counted in counters["callback_errors"] and does not stop the others.
"""

from pnpipsec import CLEAR
from pnpipsec.ticks import clamp, diff


class Waiter:
    def __init__(self, peer, min_level, deadline, cb):
        self.peer = peer
        self.min_level = min_level
        self.deadline = deadline
        self.cb = cb
        self.done = False
        self.ok = None


class LevelTable:
    def __init__(self):
        self._levels = {}       # peer -> (level, since); CLEAR peers are not stored
        self._watch = []        # change callbacks
        self._waiters = {}      # peer -> list of Waiter
        self.counters = {"changes": 0, "up": 0, "down": 0, "waits_ok": 0,
                         "waits_timeout": 0, "callback_errors": 0}

    def level(self, peer):
        v = self._levels.get(peer)
        return CLEAR if v is None else v[0]

    def since(self, peer):
        v = self._levels.get(peer)
        return None if v is None else v[1]

    def peers(self):
        """Peers above CLEAR: list of (peer, level)."""
        return [(k, self._levels[k][0]) for k in self._levels]

    def on_change(self, cb):
        self._watch.append(cb)
        return cb

    def off_change(self, cb):
        if cb in self._watch:
            self._watch.remove(cb)

    def _call(self, f, a, b, c=None, d=None, n=2):
        try:
            if n == 2:
                f(a, b)
            else:
                f(a, b, c, d)
        except Exception:
            self.counters["callback_errors"] += 1

    def set(self, peer, level, now):
        old = self.level(peer)
        if level == old:
            return []
        if level <= CLEAR:
            self._levels.pop(peer, None)
            level = CLEAR
        else:
            self._levels[peer] = (level, now)
        c = self.counters
        c["changes"] += 1
        c["up" if level > old else "down"] += 1
        for cb in list(self._watch):
            self._call(cb, peer, old, level, now, 4)
        ws = self._waiters.get(peer)
        if ws and level > old:
            keep = []
            for w in ws:
                if level >= w.min_level:
                    self._finish(w, True, level)
                else:
                    keep.append(w)
            if keep:
                self._waiters[peer] = keep
            else:
                del self._waiters[peer]
        return [(peer, old, level)]

    def drop(self, peer, now):
        return self.set(peer, CLEAR, now)

    def _finish(self, w, ok, level):
        w.done = True
        w.ok = ok
        self.counters["waits_ok" if ok else "waits_timeout"] += 1
        self._call(w.cb, ok, level)

    def wait(self, peer, min_level, deadline, cb):
        lv = self.level(peer)
        if lv >= min_level:
            self.counters["waits_ok"] += 1
            self._call(cb, True, lv)
            return None
        w = Waiter(peer, min_level, deadline, cb)
        ws = self._waiters.get(peer)
        if ws is None:
            self._waiters[peer] = [w]
        else:
            ws.append(w)
        return w

    def cancel(self, w):
        if w is None or w.done:
            return
        w.done = True
        ws = self._waiters.get(w.peer)
        if ws and w in ws:
            ws.remove(w)
            if not ws:
                del self._waiters[w.peer]

    def waiting(self):
        n = 0
        for k in self._waiters:
            n += len(self._waiters[k])
        return n

    def tick(self, now):
        """Fail the waiters whose deadline passed; returns how many."""
        late = []
        for k in self._waiters:
            for w in self._waiters[k]:
                if w.deadline is not None and diff(now, w.deadline) >= 0:
                    late.append(w)
        for k in self._levels:     # keep old stamps comparable (ticks wrap)
            lv, t = self._levels[k]
            self._levels[k] = (lv, clamp(now, t))
        for w in late:
            self.cancel(w)
            w.done = False
            self._finish(w, False, self.level(w.peer))
        return len(late)

    def next_deadline(self, now):
        d = None
        for k in self._waiters:
            for w in self._waiters[k]:
                if w.deadline is not None:
                    x = diff(w.deadline, now)
                    if d is None or x < d:
                        d = x
        return d
