"""Flat cost (issue 10, item 3): a datagram, a handshake and a timer pass do the same
work with 1 established SA as with 1,000. Work is counted, never timed (machines are
noisy): how many SAs a pass looks at, how many table entries anything iterates, how
often rand is drawn. Timings are printed for people only.

Also: the timer heap (pnpipsec.timers) keeps exact order and time across the 2^30 wrap
of the ticks and across its own re-basing."""

import os
import time

from pnp_hostboard.crypto import CryptographyAES, fast_x25519
from pnpipsec import ticks
from pnpipsec.ike import const as C
from pnpipsec.ike.engine import Engine
from pnpipsec.ike.sa import LocalIdentity, PeerConfig
from pnpipsec.timers import REBASE, Timers

AES = CryptographyAES()
X_HOST = "10.0.0.1"
BIG = dict(max_sas=4000, max_half_open=4000, cookie_threshold=4000)


class CountingDict(dict):
    """A dict that counts the entries anything iterates out of it."""
    seen = 0

    def values(self):
        for v in dict.values(self):
            CountingDict.seen += 1
            yield v

    def items(self):
        for kv in dict.items(self):
            CountingDict.seen += 1
            yield kv

    def __iter__(self):
        for k in dict.__iter__(self):
            CountingDict.seen += 1
            yield k


def _cfg():
    return PeerConfig(child_lifetime=3600, ike_lifetime=14400)


class World:
    """Engine X (under test) holds n established SAs, each with its own peer host,
    all served by one responder engine R."""

    def __init__(self, n, now=1000):
        self.now = now
        self.x = Engine(os.urandom, AES, LocalIdentity(), dh=fast_x25519, **BIG)
        self.r = Engine(os.urandom, AES, LocalIdentity(), dh=fast_x25519, **BIG)
        self.r.max_per_host = 1 << 20      # every SA of R has the one address of X
        for i in range(n):
            self.x.initiate(("10.%d.%d.%d" % (1 + i // 65536, i // 256 % 256, i % 256), 500),
                            _cfg(), self.now)
            self.settle()
        self.x.pop_events()

    def settle(self):
        while True:
            out = self.x.pop_datagrams()
            back = self.r.pop_datagrams()
            if not out and not back:
                return
            for d, to in out:
                self.r.receive(d, (X_HOST, to[1]), self.now)
            for d, to in back:
                sa = self.x.sas.get(d[0:8])        # our SPIi names the peer host
                if sa is not None:
                    port = 500 if d[18] == C.IKE_SA_INIT else 4500
                    self.x.receive(d, (sa.peer_addr[0], port), self.now)

    def count(self):
        """Make x.sas count its iterations from now on."""
        CountingDict.seen = 0
        self.x.sas = CountingDict(self.x.sas)


def _up(eng):
    return [sa for sa in dict.values(eng.sas) if sa.state == "established"]


def _work(n, passes=20):
    w = World(n)
    assert len(_up(w.x)) == n
    w.x.tick(w.now)                     # the first pass starts a clamping round
    w.count()
    calls = [0]
    real = w.x._deadlines

    def deadlines(sa):
        calls[0] += 1
        return real(sa)
    w.x._deadlines = deadlines
    visits0 = getattr(w.x, "visits", 0)
    t0 = time.perf_counter()
    for _ in range(passes):             # a second apart: nothing due (rekeys ~50 min)
        w.now += 1000
        w.x.tick(w.now)
        assert w.x.next_deadline(w.now) > 0
    dt = (time.perf_counter() - t0) / passes
    return w, CountingDict.seen, calls[0], getattr(w.x, "visits", 0) - visits0, dt


def test_a_timer_pass_costs_what_is_due_not_the_table():
    got = {}
    for n in (1, 100, 1000):
        w, iterated, deadlines, visits, dt = _work(n)
        got[n] = (iterated, deadlines, visits)
        print("n=%4d: per 20 passes: table entries iterated %d, deadline reads %d, "
              "SAs visited %d; %.1f us per tick+next_deadline"
              % (n, iterated, deadlines, visits, dt * 1e6))
    # nothing is due: no SA is visited, the table is never scanned, and the heap's top
    # is read (not every SA's deadlines) -- the same for 1 and for 1,000 SAs
    assert got[1000] == got[1], got
    assert got[1000][0] == 0 and got[1000][2] == 0 and got[1000][1] <= 20


def test_a_pass_visits_only_the_due_sas():
    w = World(1000)
    w.x.tick(w.now)
    # three SAs get a request out (a liveness check): their retransmissions are due
    # 500 ms later, every other SA's timers are far away
    chosen = _up(w.x)[:3]
    for sa in chosen:
        w.x.check_liveness(sa, w.now)
    w.x.pop_datagrams()                 # lost
    w.count()
    v0 = w.x.visits
    w.now += 500
    w.x.tick(w.now)
    assert w.x.visits - v0 == 3 and CountingDict.seen == 0
    assert w.x.stats["retransmit"] == 3


def test_esp_spi_and_ike_lookups_do_not_scan():
    for n in (1, 1000):
        w = World(n)
        w.count()
        draws = [0]

        def rand(k):
            draws[0] += 1
            return os.urandom(k)
        w.x.rand = rand
        spis = set()
        for _ in range(50):
            spis.add(w.x._new_esp_spi())
        # one draw each (a clash among 2^32 is rare), the SA table never iterated
        assert len(spis) == 50 and draws[0] <= 52 and CountingDict.seen == 0, (n, draws)
        # every inbound ESP SPI of ours is indexed, and no index entry is stale
        live = set(ch.spi_in for sa in dict.values(w.x.sas) for ch in sa.children)
        assert set(w.x.spis) == live and len(live) == n


def _handshake_work(n):
    """Table entries iterated by one new handshake in each role, with n SAs up."""
    w = World(n)
    w.count()
    w.x.initiate(("10.200.0.1", 500), _cfg(), w.now)     # X initiates
    w.settle()
    as_initiator = CountingDict.seen
    # Y initiates to X: X is the responder (half-open, cookies, room, INITIAL_CONTACT)
    y = Engine(os.urandom, AES, LocalIdentity(), dh=fast_x25519)
    y.initiate((X_HOST, 500), _cfg(), w.now)
    CountingDict.seen = 0
    for _ in range(10):
        moved = False
        for d, to in y.pop_datagrams():
            moved = True
            w.x.receive(d, ("10.201.0.1", to[1]), w.now)
        for d, to in w.x.pop_datagrams():
            if to[0] == "10.201.0.1":
                moved = True
                y.receive(d, (X_HOST, 500 if d[18] == C.IKE_SA_INIT else 4500), w.now)
        if not moved:
            break
    assert [e.kind for e in y.pop_events()][:1] == ["ike_up"]
    # a packet on an established SA: a liveness check from one of the n peers' side
    CountingDict.seen = 0
    sa_r = _up(w.r)[0]
    w.r.check_liveness(sa_r, w.now)
    w.settle()
    return as_initiator, CountingDict.seen, len(_up(w.x))


def test_a_handshake_and_a_packet_cost_the_same_with_1000_sas():
    small = _handshake_work(1)
    big = _handshake_work(1000)
    print("table entries iterated (initiator handshake, responder handshake, "
          "one INFORMATIONAL): 1 SA %r, 1000 SAs %r" % (small[:2], big[:2]))
    assert small[2] == 3 and big[2] == 1002
    assert big[:2] == small[:2] == (0, 0)


def test_timers_in_order_and_on_time_across_the_wrap():
    tq = Timers()
    now = ticks.PERIOD - 5000           # 5 s before the ticks wrap
    want = {}
    for i, ms in enumerate((7000, 1, 4999, 5000, 5001, 30000, 2500, 86400000, 3 * 86400000)):
        o = "o%d" % i
        tq.set(o, ticks.add(now, ms), now)
        want[o] = ms
    fired = []
    elapsed = 0
    while len(fired) < len(want):
        nxt = tq.peek(now)
        d = ticks.diff(nxt[0], now)
        assert d >= 0
        step = min(d, REBASE // 3)      # steps shorter than the re-base interval too
        now = ticks.add(now, step)
        elapsed += step
        for o in tq.pop_due(now):
            fired.append(o)
            assert want[o] == elapsed, (o, want[o], elapsed)
    assert fired == sorted(want, key=lambda o: want[o])
    assert tq.rebuilds >= 3             # re-based on the way (and across the wrap)


def test_timers_keep_the_earlier_entry_and_drop_stale_ones():
    tq = Timers()
    now = ticks.MASK - 10
    tq.at("a", ticks.add(now, 100), now)
    tq.at("a", ticks.add(now, 500), now)        # later: the earlier entry stays
    assert tq.when("a") == ticks.add(now, 100)
    tq.at("a", ticks.add(now, 50), now)         # earlier: replaces it
    tq.set("b", ticks.add(now, 60), now)
    tq.set("b", ticks.add(now, 40), now)
    tq.forget("c")
    assert tq.pop_due(ticks.add(now, 45)) == ["b"]
    assert tq.pop_due(ticks.add(now, 99)) == ["a"]   # one live entry each: fired once
    assert tq.pop_due(ticks.add(now, 1000)) == [] and len(tq) == 0
    for i in range(1000):                       # stale entries do not pile up
        tq.set("d", ticks.add(now, 1000 + i), now)
    assert len(tq.heap) < 100


def test_engine_deadlines_across_the_wrap():
    """An engine started 2 s before the wrap: retransmissions of an unanswered
    IKE_SA_INIT leave exactly on the schedule (0.5, 1, 2, 4, 4 ... s)."""
    now = ticks.PERIOD - 2000
    e = Engine(os.urandom, AES, LocalIdentity(), dh=fast_x25519)
    e.initiate(("10.0.0.2", 500), PeerConfig(retransmit_tries=5), now)
    e.pop_datagrams()
    sent = []
    t = 0
    for _ in range(20):
        d = e.next_deadline(now)
        if d is None:
            break
        now = ticks.add(now, d)
        t += d
        e.tick(now)
        if e.pop_datagrams():
            sent.append(t)
    assert sent == [500, 1500, 3500, 7500, 11500], sent
    assert e.pop_events()[-1].kind == "ike_down" and not e.sas
