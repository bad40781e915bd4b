# Temporary addresses rotate without losing SAs or trust (issue 12, item 4), in memory
# under MicroPython and CPython: two real Nodes on a simulated clock with fake sockets.
# Node R (rotating) holds only RFC 8981 temporary addresses on one /64, rotated several
# times over a simulated day: a new one is made shortly before the newest is
# deprecated, the deprecated one is removed when its valid lifetime ends. R's board
# glue gives the node its preferred addresses, newest first, on every change
# (node.local_addresses_changed, as pnpboard.net.follow does with order_addresses), and
# R's datagrams leave from the first of them, as the kernel would pick. Datagrams to a
# deprecated address still reach R; once it is removed they are lost.
#
# Node F (fixed address) must keep one IKE SA and its CHILD SAs with the same SPIs (no
# second IKE_SA_INIT), its SA must follow R (MOBIKE: sa.peer_addr), the apps' traffic
# must keep flowing both ways (loss counted, bounded), F's level for R must stay
# AUTHENTICATED (the proof's key, pinned by identity), F never sends R anything in
# clear, and F keeps one record for R with a bounded address list. Both roles: R is the
# original initiator (it sends UPDATE_SA_ADDRESSES) or the original responder (it sends
# its address list; F, the initiator, moves the SA).
#
# The addresses come from pnpboard.addrgen.TemporaryAddresses where it can be imported
# (CPython, from boards/common); the WebAssembly runner only has pnpipsec and the tests,
# so there a small stand-in with the same schedule makes them. Plain asserts; imports
# only pnpipsec and what MicroPython has.

import sys

from pnpipsec import AUTHENTICATED
from pnpipsec.identity import Identity, fingerprint
from pnpipsec.node import Endpoint, Node, zero_config
from test_ike_mp import Rand  # the deterministic rand of these modules (same folder)

PREFIX = "2001:db8:7:1::"
F = "2001:db8:f::2"
APP = 7000
SEC = 1000
HOUR = 3600 * SEC
DAY = 24 * HOUR
APP_EVERY = 300 * SEC       # each app sends one datagram to the other every 5 min
PREFERRED = 4 * 3600        # s: temporary lifetimes scaled down so a day sees many
VALID = 8 * 3600
REGEN = 5                   # s: RFC 8981 REGEN_ADVANCE
LIFE = 4 * 86400            # s: SA lifetimes beyond the run, so SPIs stay put
MAX_LOSS = 2                # app datagrams lost per direction over the day
MOBIKE = True               # False: the nodes do not offer MOBIKE (the test must fail)


def _temporaries():
    """pnpboard.addrgen.TemporaryAddresses, or None where pnpboard is not installed."""
    try:
        from pnpboard import addrgen
        return addrgen.TemporaryAddresses
    except ImportError:
        pass
    f = globals().get("__file__") or ""
    i = f.rfind("/")
    d = (f[:i] if i > 0 else ".") + "/../../boards/common"
    try:
        import os
        os.stat(d + "/pnpboard/addrgen.py")
    except (ImportError, OSError):
        return None
    sys.path.append(d)
    try:
        from pnpboard import addrgen
        return addrgen.TemporaryAddresses
    except ImportError:
        return None


class _Temp:
    def __init__(self, addr, created, pref, valid):
        self.addr, self.created = addr, created
        self.preferred_until, self.valid_until = pref, valid
        self.state = "preferred"
        self.successor = False


class StandIn:
    """RFC 8981's schedule as addrgen.TemporaryAddresses runs it (random IID, successor
    regen_advance s before the newest is deprecated, deprecated after its preferred
    lifetime less a random desync, removed after its valid lifetime), for the ports
    without pnpboard."""

    def __init__(self, prefix, rand, now, preferred, valid, regen_advance):
        from pnpipsec import inet
        self.inet = inet
        self.p = inet.pton(prefix)[:8]
        self.rand = rand
        self.pref, self.valid, self.regen_advance = preferred, valid, regen_advance
        self.addrs = []
        self.pending = []
        self._make(now)

    def _make(self, now):
        iid = bytes(self.rand(8))
        desync = int.from_bytes(self.rand(4), "big") % (int(self.pref * 0.4) + 1)
        t = _Temp(self.inet.ntop(self.p + iid), now, now + self.pref - desync, now + self.valid)
        self.addrs.append(t)
        self.pending.append(("added", t.addr))

    def tick(self, now):
        newest = self.addrs[-1]
        if not newest.successor and newest.preferred_until - now <= self.regen_advance:
            newest.successor = True
            self._make(now)
        for t in list(self.addrs):
            if now >= t.valid_until:
                self.addrs.remove(t)
                self.pending.append(("removed", t.addr))
            elif now >= t.preferred_until and t.state == "preferred":
                t.state = "deprecated"
                self.pending.append(("deprecated", t.addr))
        out, self.pending = self.pending, []
        return out


def _next_change(temps, now):
    """Seconds (absolute) of the next address event of temps."""
    best = None
    for t in temps.addrs:
        for when in (t.valid_until, t.preferred_until if t.state == "preferred" else None,
                     t.preferred_until - temps.regen_advance if not t.successor and
                     t.state == "preferred" else None):
            if when is not None and when > now and (best is None or when < best):
                best = when
    return best


def _aes():
    from pnpipsec.crypto.aes_pure import PureAES
    return PureAES()


class Board:
    name = "mem"

    def __init__(self, world, seed):
        self.world = world
        self.rand = Rand(seed)
        self.aes = world.aes
        self.storage = None

    def now_ms(self):
        return self.world.t


class Sock:
    """A socket bound to every address of its node: a datagram leaves from the node's
    preferred address (the first of node.addresses), as the kernel picks it."""

    def __init__(self, world, node, port):
        self.world, self.node, self.port = world, node, port

    def sendto(self, data, addr):
        self.world.send(self, bytes(data), addr)

    def close(self):
        pass


def _kind(data, dport):
    if dport == APP:
        return "clear"
    if dport == 4500:
        if data[:4] != b"\0\0\0\0":
            return "esp" if len(data) > 1 else "keepalive"
        data = data[4:]
    if len(data) < 28:
        return "other"
    return "ike %d %s" % (data[18], "resp" if data[19] & 0x20 else "req")


class World:
    def __init__(self, r_initiates, glue="preferred"):
        self.glue = glue
        self.t = 1000
        self.aes = _aes()
        self.q = []
        self.owner = {}         # address -> node, while the address is valid
        self.lost = []          # (t, src, dst, kind): sent to an address nobody has
        self.clear = []         # (t, src, dst): clear datagrams
        self.inits = 0          # IKE_SA_INIT requests on the wire
        self.events = []        # (t, kind, address) of R's addresses
        cls = _temporaries()
        self.real_addrgen = cls is not None
        rand = Rand(b"temporary")
        if cls is None:
            self.temps = StandIn(PREFIX, rand, self.t // SEC, PREFERRED, VALID, REGEN)
        else:
            self.temps = cls(PREFIX + "/64", rand, self.t // SEC, preferred=PREFERRED,
                             valid=VALID, regen_advance=REGEN)
        first = self.temps.tick(self.t // SEC)
        assert [e[0] for e in first] == ["added"], first
        self.r, self.ep_r = self.node(b"R", [first[0][1]])
        self.f, self.ep_f = self.node(b"F", [F])
        self.fp_r = fingerprint(self.r.identity.public)
        self.r_initiates = r_initiates
        self.sent = {"r": 0, "f": 0}        # app datagrams sent (or refused)
        self.got = {"r": 0, "f": 0}         # app datagrams received
        self.held = 0
        self.bad = []           # app datagrams delivered below AUTHENTICATED, or unlabelled
        self.r_seen_at = first[0][1]        # where F's app saw R's last datagram from

    def node(self, seed, addrs):
        n = Node(Board(self, seed), Identity(Rand(seed + b"id")(32)), ike_port=500,
                 natt_port=4500, keepalive=0, addresses=addrs,
                 accept_any=zero_config(child_lifetime=LIFE, ike_lifetime=LIFE))
        n.engine.mobike = MOBIKE
        n.sock_ike = Sock(self, n, 500)
        n.sock_natt = Sock(self, n, 4500)
        ep = Endpoint(n, APP)
        ep.sock = Sock(self, n, APP)        # the clear socket: anything on it is clear
        n.endpoints[APP] = ep
        for a in addrs:
            self.owner[a] = n
        return n, ep

    def send(self, sock, data, addr):
        src = sock.node.addresses[0]
        dst, dport = addr
        kind = _kind(data, dport)
        if kind == "clear":
            self.clear.append((self.t, src, dst))
        if kind == "ike 34 req":
            self.inits += 1
        if self.owner.get(dst) is None:
            self.lost.append((self.t, src, dst, kind))
            return
        self.q.append((src, sock.port, dst, dport, data))

    def settle(self):
        n = 0
        while self.q:
            src, sport, dst, dport, data = self.q.pop(0)
            node = self.owner.get(dst)
            if node is None:            # removed while the datagram was queued
                self.lost.append((self.t, src, dst, "late"))
                continue
            if dport == APP:
                node._clear_in(node.endpoints[APP], data, (src, sport))
            else:
                node._datagram(data, (src, sport), node.sock_natt if dport == 4500 else
                               node.sock_ike, dport == 4500)
            n += 1
            assert n < 10000, "datagrams never stop"

    def timers(self):
        best = None
        for n in (self.r, self.f):
            n._timer_pass()
            self.settle()
            d = n.next_due(self.t)
            if d is not None and (best is None or d < best):
                best = d
        return best

    def up(self):
        if self.r_initiates:
            self.r._probe(F, True)
        else:
            self.f._probe(self.r.addresses[0], True)
        self.settle()
        for _ in range(4):
            self.timers()
            self.t += 10
        assert self.f.level(self.r.addresses[0]) == AUTHENTICATED
        assert self.r.level(F) == AUTHENTICATED
        return self

    # -- R's addresses ----------------------------------------------------------------
    def addresses_tick(self):
        """R's address events due now; the board glue gives R's node its preferred
        temporaries, newest first (pnpboard.net.order_addresses), or with glue "valid"
        its deprecated ones after them (an app that lists every valid address). True
        when the list changed."""
        evs = self.temps.tick(self.t // SEC)
        if not evs:
            return False
        for e in evs:
            self.events.append((self.t, e[0], e[1]))
            if e[0] == "added":
                self.owner[e[1]] = self.r
            elif e[0] == "removed":
                assert self.owner.pop(e[1]) is self.r
        pref = [x for x in self.temps.addrs if x.state == "preferred"]
        pref.sort(key=lambda x: -x.created)
        addrs = [x.addr for x in pref]
        if self.glue == "valid":
            dep = [x for x in self.temps.addrs if x.state != "preferred"]
            dep.sort(key=lambda x: -x.created)
            addrs += [x.addr for x in dep]
        if addrs == self.r.addresses:
            return False
        self.r.local_addresses_changed(addrs)
        self.settle()
        return True

    # -- the apps -------------------------------------------------------------------
    def apps(self):
        """R sends F one datagram; F answers to where it last saw R."""
        for who, node, ep, dst in (("r", self.r, self.ep_r, F), ("f", self.f, self.ep_f, None)):
            if dst is None:
                dst = self.r_seen_at
            self.sent[who] += 1
            if _send(node, ("%s %d" % (who, self.sent[who])).encode(), (dst, APP)) == "held":
                self.held += 1
            self.settle()
            other = self.ep_f if who == "r" else self.ep_r
            items = other._items
            other._items = []
            for it in items:
                self.got[who] += 1
                if it.level != AUTHENTICATED or (who == "r" and it.peer != self.fp_r):
                    self.bad.append((self.t, who, it.level, it.peer, it.addr))
                if who == "r":
                    self.r_seen_at = it.addr[0]

    def run(self, end, each_change):
        next_app = self.t
        while self.t < end:
            if self.t >= next_app:
                self.apps()
                next_app += APP_EVERY
            if self.addresses_tick():
                each_change(self)
            due = self.timers()
            step = next_app - self.t
            nc = _next_change(self.temps, self.t // SEC)
            if nc is not None and nc * SEC - self.t < step:
                step = nc * SEC - self.t
            if due is not None and due < step:
                step = due
            self.t += max(1, step)
        return self


def _send(node, data, addr):
    """node.send without an event loop: it either finishes at once (ESP, or clear) or
    would wait for a level (held); returns the level it left with, or "held"."""
    c = node.send(data, addr, APP)
    try:
        c.send(None)
    except StopIteration as e:
        return e.args[0] if e.args else None
    except Exception:       # it awaited a level (an event loop's object): held
        return "held"
    c.close()
    return "held"


def _sas(node):
    return [sa for sa in node.engine.sas.values() if sa.state == "established"]


def _spis(node):
    """The node's one established IKE SA and its CHILD SAs, by SPI."""
    sas = _sas(node)
    assert len(sas) == 1, [(sa.state, sa.peer_addr) for sa in node.engine.sas.values()]
    sa = sas[0]
    return sa, (sa.spi_i, sa.spi_r, tuple((c.spi_in, c.spi_out) for c in sa.children))


def _rotate(r_initiates, glue="preferred"):
    w = World(r_initiates, glue).up()
    sa_f, spis_f = _spis(w.f)
    sa_r, spis_r = _spis(w.r)
    assert len(sa_f.children) == 1
    assert sa_r.initiator == r_initiates
    inits = w.inits
    pin_writes = w.f.pins.counters["writes"]
    checked = []

    def each_change(w):
        # after every change of R's address list, once the exchanges it started settled
        for _ in range(3):
            w.timers()
        now_addrs = list(w.r.addresses)
        assert _spis(w.f) == (sa_f, spis_f), "F's SAs changed"
        assert _spis(w.r) == (sa_r, spis_r), "R's SAs changed"
        assert w.inits == inits, "a new IKE_SA_INIT"
        # F's SA follows R: to one of R's addresses (never a removed one), and with
        # the preferred glue to the newest as soon as the one in use is no longer
        # preferred (R no longer sends from it)
        pa = sa_f.peer_addr[0]
        assert pa in now_addrs and w.owner.get(pa) is w.r, (pa, now_addrs, w.events[-3:])
        for c in sa_f.children:
            assert c.peer_addr[0] == pa
        if len(now_addrs) == 1:
            assert pa == now_addrs[0], (pa, now_addrs)
        # trust kept: F's level for R at its SA's address and where R last sent from
        for h in (pa, w.r_seen_at):
            assert w.f.level(h) == AUTHENTICATED, (h, w.f.level(h))
        assert w.r.level(F) == AUTHENTICATED
        assert w.bad == [], w.bad[:4]
        # one record for R on F, with a bounded address list
        recs = [p for p in w.f._records() if p.fp == w.fp_r]
        assert len(recs) == 1 and len(w.f._records()) == 1, [(p.fp, p.addrs) for p in w.f._records()]
        assert len(recs[0].addrs) <= 4 and len(w.f.by_host) <= 4, recs[0].addrs
        assert len(w.f.moved) <= 1, w.f.moved
        assert w.f.peer_at(pa) is recs[0]
        checked.append((w.t, pa))

    w.run(DAY, each_change)
    # R's addresses rotated several times; every change was checked
    added = [e for e in w.events if e[1] == "added"]
    removed = [e for e in w.events if e[1] == "removed"]
    assert len(added) >= 5 and len(removed) >= 3, w.events
    assert len(checked) >= len(added) + len(removed), (len(checked), len(added), len(removed))
    # nothing in clear, no new handshake, the SAs are the first ones
    assert w.clear == [], w.clear[:4]
    assert w.inits == inits
    assert _spis(w.f) == (sa_f, spis_f) and _spis(w.r) == (sa_r, spis_r)
    # traffic both ways all day, loss bounded (and none of it to a removed address
    # from F's SA)
    lost_r = w.sent["r"] - w.got["r"]
    lost_f = w.sent["f"] - w.got["f"]
    assert w.sent["r"] >= DAY // APP_EVERY
    assert 0 <= lost_r <= MAX_LOSS and 0 <= lost_f <= MAX_LOSS, (w.sent, w.got, w.lost[:6])
    assert w.held == 0 and w.bad == [], (w.held, w.bad[:4])
    # trust by identity: R's key pinned once, never again nor changed, on no new
    # address; F's per-address tables stay small (the level table holds the record's
    # addresses; discovery's sticky entries of R's old addresses end with sticky_time)
    assert len(w.f.pins) == 1 and w.f.pins.counters["writes"] == pin_writes, w.f.pins.counters
    assert w.f.stats["key_changed"] == 0 and w.f.pins.counters["changed"] == 0
    assert len(w.f.levels.peers()) <= 4, w.f.levels.peers()
    assert len(w.f.engine.hosts) == 1 and len(w.r.engine.hosts) == 1
    assert len([x for x in w.lost if x[1] == F]) <= MAX_LOSS, w.lost[:6]
    # F moved with every rotation; when R's list keeps its deprecated addresses and F
    # only moves when its address leaves R's list, F goes straight to R's newest
    # address, passing over those that came and went meanwhile
    need = len(added) - 1 if glue == "preferred" or r_initiates else len(removed) // 2
    assert w.f.engine.stats.get("moved", 0) >= need, w.f.engine.stats
    w.result = (len(added), len(removed), lost_r, lost_f, len(w.lost), w.real_addrgen)
    return w


def test_rotating_initiator_keeps_sas_and_trust():
    _rotate(True)


def test_rotating_responder_keeps_sas_and_trust():
    _rotate(False)


def test_rotating_initiator_listing_deprecated_addresses():
    _rotate(True, "valid")


def test_rotating_responder_listing_deprecated_addresses():
    # R's list keeps the deprecated address until it is removed: F (the initiator)
    # stays on it while it works, and moves when R's list drops it
    _rotate(False, "valid")
