# Integer-ms time across wraps (MicroPython and CPython): two real Nodes, A and B, run
# for simulated days on a clock whose ticks wrap at 2^30 ms (12.4 days), with a legacy
# host C that only speaks clear UDP. Time jumps from one due event to the next (the
# nodes' own timers, the apps, outages), so every retransmission, rekey, liveness check,
# probe and negative-cache expiry happens at the tick the core asked for.
#
# The oracle: the same simulation on a clock that never wraps (pnpipsec.ticks widened
# to 62 bits; CPython, test_time_wrap.py) or wraps at other moments (here) must produce
# the same datagrams at the same simulated milliseconds. On top of that, the schedule
# itself is checked: retransmission gaps, rekey counts, probes.
#
# host_tests/test_time_wrap.py runs this for 400 days on CPython; here, 13 days (two
# wraps) with the pure-Python crypto.

import hashlib

from pnpipsec import ticks
from pnpipsec.identity import Identity
from pnpipsec.node import Endpoint, Node, PeerEntry, zero_config
from test_ike_mp import Rand  # the deterministic rand of these modules (same folder)

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"
APP = 7000
DAY = 86400000
HOUR = 3600000
CHILD_LIFE = 86400          # s
IKE_LIFE = 4 * 86400        # s
OUTAGE_EVERY = 10 * DAY     # A<->B loses every datagram for OUTAGE_LEN
OUTAGE_LEN = 180000
OUTAGE_AT = 5 * DAY - 61234   # across an hourly send: liveness, retries, give-up
C_EVERY = 600000            # C sends A a clear datagram every 10 min



class SimBoard:
    name = "sim"

    def __init__(self, world, seed, aes, dh=None, sig=None):
        self.world = world
        self.rand = Rand(seed)
        self.aes = aes
        self.storage = None
        if dh is not None:
            self.dh = dh
        if sig is not None:
            self.sig = sig

    def now_ms(self):
        return self.world.tick()


class Sock:
    def __init__(self, world, host, port):
        self.world, self.host, self.port = world, host, port

    def sendto(self, data, addr):
        self.world.send(self.host, bytes(data), addr)

    def close(self):
        pass


def _kind(data, dport):
    """What a datagram is, in terms that must match between the two clocks."""
    if dport == 4500:
        if data[:4] != b"\x00\x00\x00\x00":
            return "esp" if len(data) > 1 else "keepalive"
        data = data[4:]
    if len(data) < 28:
        return "other"
    return "ike %d %s mid %d" % (data[18], "resp" if data[19] & 0x20 else "req",
                                 int.from_bytes(data[20:24], "big"))


FULL_RUN = [500, 1000, 2000] + [4000] * 7   # gaps of one whole retry schedule


class Record:
    """What the wire carried, kept small enough for a microcontroller's heap: a running
    SHA-256 of every datagram's (time, source, destination, port, kind, length) -- the
    two clocks must give the same digest -- and the few facts the schedule checks need,
    gathered as the datagrams pass."""

    def __init__(self):
        self.h = hashlib.sha256()
        self.n = 0
        self.last = {}          # (src, dst, kind, len) of a request -> [last t, run of gaps]
        self.bad_gaps = []
        self.full_runs = 0      # A<->B requests retried along the whole schedule
        self.rekeys = 0         # CREATE_CHILD_SA requests between A and B
        self.infos_ab = 0       # INFORMATIONAL requests A -> B
        self.probe_starts = []  # IKE_SA_INIT to C that start a probe (not a retry)

    def add(self, t, src, dst, dport, kind, n):
        self.h.update(repr((t, src, dst, dport, kind, n)).encode())
        self.n += 1
        if self.n % 32 == 0:        # a retry comes within 60 s: forget older requests
            for key in [key for key in self.last if t - self.last[key][0] > 60000]:
                del self.last[key]
        if not (kind.startswith("ike") and "req" in kind):
            return
        if dst in (A, B) and kind.startswith("ike 36 "):
            self.rekeys += 1
        if src == A and dst == B and kind.startswith("ike 37 "):
            self.infos_ab += 1
        k = (src, dst, kind, n)
        prev = self.last.get(k)
        if dst == C and kind == "ike 34 req mid 0" and (prev is None or t - prev[0] > 10000):
            self.probe_starts.append(t)
        if prev is None or t - prev[0] > 60000:
            self.last[k] = [t, []]
            return
        g = t - prev[0]
        if g not in (500, 1000, 2000, 4000) and len(self.bad_gaps) < 10:
            self.bad_gaps.append((kind, g))
        prev[0] = t
        prev[1].append(g)
        if dst in (A, B) and prev[1] == FULL_RUN:
            self.full_runs += 1

    def digest(self):
        return self.h.digest()


class World:
    def __init__(self, t0, aes, dh=None, sig=None):
        self.t0 = t0
        self.t = 0              # simulated ms since the start (never wraps)
        self.q = []
        self.rec = Record()
        self.levels = []        # (t, node, peer, old, new)
        self.outage = False
        self.quiet = False      # True: the apps send nothing
        self.nodes = {}
        cfg = dict(child_lifetime=CHILD_LIFE, ike_lifetime=IKE_LIFE)
        self.a = self._node(A, b"A", aes, dh, sig, peers=[PeerEntry(B, zero_config(**cfg))],
                            accept_any=zero_config(**cfg))
        self.b = self._node(B, b"B", aes, dh, sig, accept_any=zero_config(**cfg))
        self.ep_a = Endpoint(self.a, APP)
        self.a.endpoints[APP] = self.ep_a
        self.ep_b = Endpoint(self.b, APP)
        self.b.endpoints[APP] = self.ep_b
        self.a.on_level(lambda h, o, n, now: self.levels.append((self.t, "A", h, o, n)))
        self.b.on_level(lambda h, o, n, now: self.levels.append((self.t, "B", h, o, n)))

    def _node(self, host, seed, aes, dh, sig, **kw):
        board = SimBoard(self, seed, aes, dh, sig)
        n = Node(board, Identity(Rand(seed + b"id")(32)), ike_port=500, natt_port=4500,
                 keepalive=3600, **kw)
        n.sock_ike = Sock(self, host, 500)
        n.sock_natt = Sock(self, host, 4500)
        self.nodes[host] = n
        return n

    def tick(self):
        return ticks.add(self.t0, self.t)

    def send(self, src, data, addr):
        dst, dport = addr
        self.rec.add(self.t, src, dst, dport, _kind(data, dport), len(data))
        if dst in self.nodes and not (self.outage and src in (A, B) and dst in (A, B)):
            self.q.append((src, dst, dport, data))

    def settle(self):
        n = 0
        while self.q:
            src, dst, dport, data = self.q.pop(0)
            node = self.nodes[dst]
            node._datagram(data, (src, 4500 if dport == 4500 else 500),
                           node.sock_natt if dport == 4500 else node.sock_ike, dport == 4500)
            n += 1
            assert n < 10000, "datagrams never stop"

    def timers(self):
        """Every node's timer pass; ms until the earliest node deadline."""
        best = None
        for n in (self.a, self.b):
            n._timer_pass()
            self.settle()
            d = n.next_due(self.tick())
            if d is not None and (best is None or d < best):
                best = d
        return best

    def app(self):
        """Hourly: A and B each send the other one datagram (over ESP when up, else the
        node brings the SA up again); every 10 min C sends A a clear datagram."""
        t = self.t
        self.ep_a._items = []   # the apps read nothing: keep the heap flat
        self.ep_b._items = []
        if self.quiet:
            return
        if t % C_EVERY == 0:
            self.a._clear_in(self.ep_a, b"C", (C, APP))
        if t % HOUR == 0:
            for me, peer in ((self.a, B), (self.b, A)):
                if peer in me.out:
                    me.send_esp(b"hello", (peer, APP), APP)
                elif me is self.a:
                    me._probe(peer, True)
        self.settle()

    def run(self, days, end=None):
        end = days * DAY if end is None else end
        next_out = OUTAGE_AT
        while self.t < end:
            self.outage = next_out <= self.t < next_out + OUTAGE_LEN
            if self.t >= next_out + OUTAGE_LEN:
                next_out += OUTAGE_EVERY
            self.app()
            due = self.timers()
            # the next event: a node's deadline, the apps, an outage edge
            step = C_EVERY - self.t % C_EVERY
            for edge in (next_out, next_out + OUTAGE_LEN):
                if edge > self.t and edge - self.t < step:
                    step = edge - self.t
            if due is not None and due < step:
                step = due if due > 0 else 1
            self.t += step
        return self


def simulate(days, t0, aes, dh=None, sig=None, wide=False):
    """Run the world; wide=True widens pnpipsec.ticks to 62 bits (a clock that never
    wraps) for the run."""
    saved = (ticks.PERIOD, ticks.MASK, ticks.HALF)
    if wide:
        ticks.PERIOD = 1 << 62
        ticks.MASK = ticks.PERIOD - 1
        ticks.HALF = ticks.PERIOD >> 1
    try:
        return World(t0, aes, dh, sig).run(days)
    finally:
        ticks.PERIOD, ticks.MASK, ticks.HALF = saved


def check_schedule(w, days):
    """What the schedule must look like, whatever the clock."""
    rec = w.rec
    # Retransmissions: an identical request resent at 0.5, 1, 2, then 4 s gaps (capped),
    # 11 sends in all, then the SA is given up 4 s after the last.
    assert not rec.bad_gaps, rec.bad_gaps
    runs = rec.full_runs
    outages = (days * DAY - OUTAGE_AT) // OUTAGE_EVERY + 1
    assert runs >= outages, (runs, outages)
    # Liveness: in each outage the hourly send finds the peer silent, checks it, and
    # the level falls 35.5 s (the whole retry schedule) after that send; the next
    # hourly send brings the SA back to AUTHENTICATED.
    downs = [x[0] for x in w.levels if x[1] == "A" and x[4] == 0]
    ups = [x[0] for x in w.levels if x[1] == "A" and x[4] == 2]
    assert len(downs) == outages and len(ups) == outages + 1, w.levels
    for t in downs:
        assert t % HOUR == 35500, downs
    for t in ups[1:]:
        assert t % HOUR == 0, ups
    # CHILD and IKE rekeys: CREATE_CHILD_SA (type 36) requests between A and B.
    expect = days * 86400 // CHILD_LIFE + days * 86400 // IKE_LIFE
    assert expect <= rec.rekeys <= 2 * expect, (rec.rekeys, expect)
    # Discovery of the legacy host C: probes (IKE_SA_INIT to C) spaced by the doubling
    # negative cache; once it is capped (1 h), a probe follows within C's next datagram
    # after the cache expires: never stuck, never more often.
    starts = rec.probe_starts
    assert len(starts) >= 3
    for i in range(1, len(starts)):
        assert starts[i] - starts[i - 1] >= 30000, starts
    late = [starts[i] - starts[i - 1] for i in range(1, len(starts)) if starts[i] > 2 * DAY]
    assert late and min(late) >= HOUR and max(late) <= HOUR + C_EVERY + 10000, late
    return runs, rec.rekeys, len(starts)


def _aes():
    from pnpipsec.crypto.aes_pure import PureAES
    return PureAES()


_SEEN = {}
DAYS = 13


def test_13_days_a_first_wrap_a_minute_in():
    w = simulate(DAYS, ticks.MASK - 60000, _aes())
    check_schedule(w, DAYS)
    _SEEN["a"] = (w.rec.n, w.rec.digest(), w.levels)


def test_13_days_b_first_wrap_twelve_days_in_gives_the_same_wire():
    # The reference wraps too, but 12.4 days into the run (ticks from 0): a clock of
    # 62 bits would make every tick a big integer on a 32-bit port, which a board's
    # heap cannot afford; test_time_wrap.py compares with that clock on CPython. The
    # two worlds run in two tests (the runner takes them in name order) so that a
    # board's heap holds one at a time.
    import gc
    gc.collect()
    ref = simulate(DAYS, 0, _aes())
    assert "a" in _SEEN, "test_13_days_a did not finish"
    assert (ref.rec.n, ref.rec.digest(), ref.levels) == _SEEN["a"]


def test_an_idle_sa_is_checked_rarely_and_a_vanished_peer_is_noticed():
    # Liveness by default: no app traffic at all after the SA is up.
    w = World(ticks.MASK - 5000, _aes())
    w.app()                                   # A starts the SA (and C's first datagram)
    w.quiet = True
    w.run(0, end=DAY)                         # one idle day
    infos = w.rec.infos_ab
    assert 20 <= infos <= 4 * 24 + 8, infos   # backs off to one per 15 min
    assert w.a.level(B) == 2 and infos - 4 <= w.a.stats["liveness_checks"] <= infos
    # B vanishes (every datagram between them is lost from now on).
    gone = w.t
    w.outage = True
    while w.a.level(B) != 0 and w.t - gone < 2 * HOUR:
        due = w.timers()
        w.t += 1000 if due is None else max(1, min(due, 60000))
    took = w.t - gone
    assert took <= 15 * 60000 + 36000, took          # the longest idle wait + retries
    assert not [sa for sa in w.a.engine.sas.values() if sa.peer_addr[0] == B]
    assert not w.a.children and w.a.out == {}
    # Sticky security: clear to B is refused (the app would wait for a new SA, then fail).
    from pnpipsec.discovery import SEND_CLEAR
    from pnpipsec.policy import Action, OPPORTUNISTIC
    from pnpipsec import inet
    what, probe, why = w.a.discovery.on_send(inet.pton(B), Action(OPPORTUNISTIC), 0, w.tick())
    assert what != SEND_CLEAR and why == "sticky", (what, why)

