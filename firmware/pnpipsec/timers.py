"""Deadlines of many objects in one heap, for ticks that wrap (pnpipsec.ticks).

    tq = Timers()
    tq.at(obj, t, now)       # obj is due no later than tick t (keeps an earlier entry)
    tq.set(obj, t, now)      # obj is due exactly at t (replaces its entry)
    tq.forget(obj)           # obj has no deadline any more
    tq.pop_due(now) -> [obj] whose entry has come, in deadline order (their entries go)
    tq.peek(now) -> (t, obj) of the earliest entry, or None
    tq.when(obj) -> t of obj's entry, or None

Why a heap and not a scan: a pass over the timers costs the entries that are due (and
stale ones thrown away on the way), not every SA or peer we hold.

Ticks wrap at 2^30, so a heap cannot order raw ticks. It orders diff(t, base) for a
base tick that moves up to `now` at least every REBASE ms (the heap is rebuilt then:
O(n) once an hour). Every deadline the core sets is within MAX_INTERVAL (5 days) of
now and now is within REBASE of base, so every key is well under HALF (6.2 days)
from base and the order is exact. The rebuild also drops stale entries when they
outnumber the live ones.

Each object has at most one live entry (its (t, seq) in `due`); replaced entries stay
in the heap as stale until they reach the top or the next rebuild. `at` pushes only
when the new tick is earlier, so a deadline that keeps moving later (the last packet
of a busy SA) costs nothing until its old entry comes up: the owner then looks at the
object and sets its real deadline. Ties keep push order (seq).
"""

from pnpipsec.ticks import diff

try:
    from heapq import heappush, heappop, heapify
except ImportError:         # a port built without heapq: the same three in Python
    def heappush(h, x):
        h.append(x)
        i = len(h) - 1
        while i:
            p = (i - 1) >> 1
            if not h[i] < h[p]:
                break
            h[i], h[p] = h[p], h[i]
            i = p

    def _down(h, i):
        n = len(h)
        while True:
            c = 2 * i + 1
            if c >= n:
                return
            if c + 1 < n and h[c + 1] < h[c]:
                c += 1
            if not h[c] < h[i]:
                return
            h[i], h[c] = h[c], h[i]
            i = c

    def heappop(h):
        last = h.pop()
        if not h:
            return last
        top = h[0]
        h[0] = last
        _down(h, 0)
        return top

    def heapify(h):
        i = len(h) // 2
        while i > 0:
            i -= 1
            _down(h, i)

REBASE = 3600000    # ms: the base follows now at least this often


class Timers:
    def __init__(self):
        self.heap = []      # (diff(t, base), seq, obj)
        self.due = {}       # obj -> (t, seq) of its live entry
        self.base = 0
        self.seq = 0
        self.rebuilds = 0   # (tests count them)

    def __len__(self):
        return len(self.due)

    def when(self, obj):
        d = self.due.get(obj)
        return d[0] if d is not None else None

    def at(self, obj, t, now):
        d = self.due.get(obj)
        if d is None or diff(t, d[0]) < 0:
            self._push(obj, t, now)

    def set(self, obj, t, now):
        d = self.due.get(obj)
        if d is None or d[0] != t:
            self._push(obj, t, now)

    def forget(self, obj):
        self.due.pop(obj, None)

    def pop_due(self, now):
        self._keep(now)
        h = self.heap
        due = self.due
        lim = diff(now, self.base)
        out = []
        while h and h[0][0] <= lim:
            e = heappop(h)
            d = due.get(e[2])
            if d is not None and d[1] == e[1]:
                del due[e[2]]
                out.append(e[2])
        return out

    def peek(self, now):
        self._keep(now)
        h = self.heap
        while h:
            e = h[0]
            d = self.due.get(e[2])
            if d is not None and d[1] == e[1]:
                return d[0], e[2]
            heappop(h)
        return None

    def _push(self, obj, t, now):
        self._keep(now)
        self.seq += 1
        self.due[obj] = (t, self.seq)
        heappush(self.heap, (diff(t, self.base), self.seq, obj))

    def _keep(self, now):
        """Rebuild when now left the base's reach or stale entries pile up."""
        if not -REBASE < diff(now, self.base) < REBASE or \
                len(self.heap) > 2 * len(self.due) + 16:
            self.rebuilds += 1
            self.base = now
            due = self.due
            h = self.heap = [(diff(due[o][0], now), due[o][1], o) for o in due]
            heapify(h)
