"""Node runtime on asyncio: the board's sockets around the sans-IO engine and ESP.

Runs unchanged on CPython and MicroPython asyncio (no Queue, no datagram transports:
the board's socket offers `await recvfrom()` and `sendto()`).

    node = Node(board, identity, accept_any=zero_config())   # zero configuration
    await node.start()
    ep = node.endpoint(7000)                 # UDP-like port; clear socket on 7000 too
    await ep.send(b"hi", ("fd00::2", 7000))  # clear now if policy allows, ESP once up
    data, (host, port), level = await ep.recv()
    await node.wait_level("fd00::2", AUTHENTICATED, timeout=10)

Ports: `ike_port` (500 in interop) carries marker-less IKE; `natt_port` (4500) carries
RFC 3948 traffic: IKE behind the non-ESP marker, ESP, keepalives. A peer whose
ike_port equals its natt_port is spoken to on the NAT-T port only (our nodes may
start directly on 4500). Decisions (policy, discovery, levels, pins, proof) live in
their own sans-IO modules; this file only wires them to sockets and time.
"""

import asyncio

from pnpipsec import CLEAR, ENCRYPTED, AUTHENTICATED
from pnpipsec import esp, inet, udpencap, proof
from pnpipsec import policy as pol
from pnpipsec.discovery import Discovery, OK as PROBE_OK, TIMEOUT as PROBE_TIMEOUT, IPSEC
from pnpipsec.levels import LevelTable
from pnpipsec.pins import PinStore
from pnpipsec.identity import fingerprint
from pnpipsec.ike import engine as ike
from pnpipsec.ticks import add, age, diff, ms
from pnpipsec.timers import Timers

_IKE_SA_INIT = 34
_ESP_OVERHEAD_V6 = 40 + 8      # outer IPv6 + UDP header around the ESP packet
_ESP_OVERHEAD_V4 = 20 + 8
_MAX_TRACKED = 64              # per-peer tables a remote sender can grow are capped
_SA_SLOTS = 4                  # IKE SAs one peer may hold (the engine's max_per_host)
_MAX_DATAGRAM = 2048           # IKE and ESP we speak fit the 1280-byte MTU; larger: dropped
_MAX_ADDRS = 4                 # addresses one peer record keeps (most recent first)


class NodeError(Exception):
    pass


class LevelTimeout(NodeError):
    """The level an operation needed was not reached in time; nothing was sent in clear."""


class PeerEntry:
    """Where a configured peer lives and how to talk IKE with it."""

    def __init__(self, host, cfg, ike_port=500, natt_port=4500):
        self.host = host
        self.cfg = cfg
        self.ike_port = ike_port
        self.natt_port = natt_port


def zero_config(**kw):
    """The PeerConfig of plug and play: NULL auth, transport mode, short probe.

    An IKE_SA_INIT and two retransmissions (0.5 s and 1 s later; give-up 2 s after the
    last) bound the probe of a legacy peer to 3 packets and about 3.5 s. Only the probe
    is short: once the peer answered, every exchange retries per RFC 7296 (about a
    minute), so one lost exchange does not leave the two ends disagreeing; and an
    explicit connect(), or a probe of a peer known to speak IKE, retries in full too."""
    kw.setdefault("auth", "null")
    kw.setdefault("mode", "transport")
    kw.setdefault("init_tries", 2)
    return ike.PeerConfig(**kw)


class _RamStorage:
    def __init__(self):
        self.d = {}

    def read(self, name):
        return self.d.get(name)

    def write(self, name, data):
        self.d[name] = bytes(data)


class _Child:
    """One installed CHILD SA: the engine's record plus its two ESP directions."""

    made = 0

    def __init__(self, child, aes, rand, soft_packets):
        self.child = child
        self.seq = _Child.made = _Child.made + 1   # install order: the newest SA wins
        self.rekey_asked = False
        self.out = esp.EspOut(child.spi_out, child.enc_out, child.int_out, aes, rand,
                              soft_packets=soft_packets)
        self.inp = esp.EspIn(child.spi_in, child.enc_in, child.int_in, aes)
        self.host = _norm(child.peer_addr[0])   # the SA's address (moves with MOBIKE)
        self._pa = child.ike.peer_addr        # the engine's tuple host was read from
        self._src = child.peer_addr[0]        # the last ESP source seen (raw text)
        self._src_host = self.host            # ... normalized
        self.peer = None                      # its Peer record


class Datagram:
    """What Endpoint.recv() returns: unpacks as before, `data, (host, port), level =
    item`, and also carries `peer`: the identity of the sender (Peer.fp, the
    fingerprint of the key the SA it came on proved or was configured with), or None
    (clear datagrams, and SAs that proved none). `addr` is the address it came from
    now, which may be a new one of a known peer."""

    def __init__(self, data, addr, level, peer=None):
        self.data = data
        self.addr = addr
        self.level = level
        self.peer = peer

    def _t(self):
        return (self.data, self.addr, self.level)

    def __iter__(self):
        return iter(self._t())

    def __getitem__(self, i):
        return self._t()[i]

    def __len__(self):
        return 3

    def __eq__(self, other):
        if isinstance(other, Datagram):
            return self._t() == other._t() and self.peer == other.peer
        return self._t() == other

    def __repr__(self):
        return "Datagram(%r, %r, %r, peer=%r)" % (self.data, self.addr, self.level, self.peer)


class Peer:
    """Everything the node knows of one peer, in one record (WireGuard's peer), found
    by address in node.by_host, by identity in node.by_id once it has one (and its SAs
    by SPI in node.children / engine.sas).

    proofs: [(IKE SA, Ed25519 key)] each proof that verified, bound to the SA it was
    made on (and its rekeyed successors): two SAs with one peer (both ends initiated)
    each keep their own; key: the last proved key; proofs_seen: the SAs a proof arrived
    on, valid or not (one per SA). Both lists hold at most _SA_SLOTS live SAs.
    natt_port: learnt from authenticated
    traffic only. idle_checks: liveness checks answered in a row with no ESP between
    (the next waits twice as long, up to dpd_max). level/since: its level (set only
    through Node._set_level; node.levels keeps the callbacks, waiters and counters).
    disc: discovery's entry for its address (discovery keeps the logic, bounds and
    counters; None until discovery tracks it). fp: its identity, the fingerprint of
    the key it authenticated with (a configured key, or a proof that verified) or of
    its PSK identity, once known. children: the _Child records installed with it.

    Once its identity is known the record is the peer, whatever its address: addrs
    (at most _MAX_ADDRS, most recent first; host is addrs[0]) all map to it in
    node.by_host, and a new SA that proves the same identity from another address
    joins it (Node._merge). Level, sticky security, stats and trust are the record's."""

    def __init__(self, host, n=0):
        self.host = host          # its most recent address (addrs[0])
        self.addrs = [host]       # every address it was seen at, most recent first
        self.n = n                # creation order (timer passes handle peers in it)
        self.fp = None
        self.level = CLEAR
        self.since = None
        self.disc = None
        self.children = []
        self.ike = None           # established IkeSA
        self.initiating = None    # IkeSA we started that is not up yet
        self.out = None           # _Child our datagrams to it leave on
        self.key = None
        self.proofs = []
        self.proofs_seen = []
        self.natt_port = None
        self.failed = None        # why its last SA attempt ended
        self.idle_checks = 0
        self.stats = {"clear_in": 0, "clear_out": 0, "esp_in": 0, "esp_out": 0}

    moved_to = None     # host its SA moved to (MOBIKE); the record stays at its address

    def busy(self):
        """True while an SA (or an attempt) is bound to this record: never evicted."""
        return self.ike is not None or self.initiating is not None or \
            self.out is not None or bool(self.children)


class Endpoint:
    """A UDP-like port: datagrams travel inside the SA when there is one, in clear when
    the policy allows it, and never in clear when the policy or `min_level` forbids."""

    def __init__(self, node, port, min_level=CLEAR, limit=64):
        self.node = node
        self.port = port
        self.min_level = min_level
        self._items = []
        self._limit = limit
        self._event = asyncio.Event()
        self._opened = asyncio.Event()
        self.sock = None
        self.error = None
        self.dropped = 0

    def _deliver(self, item):
        if len(self._items) >= self._limit:
            self.dropped += 1
            return
        self._items.append(item)
        self._event.set()

    async def recv(self):
        """(data, (host, port), level) of the next datagram."""
        while not self._items:
            self._event.clear()
            await self._event.wait()
        return self._items.pop(0)

    def pending(self):
        return len(self._items)

    async def send(self, data, addr, min_level=None, timeout=None):
        """Send one datagram; returns the level it left with. Raises LevelTimeout or
        NodeError instead of ever sending in clear against the policy."""
        need = self.min_level if min_level is None else max(self.min_level, min_level)
        return await self.node.send(data, addr, self.port, need, timeout)

    async def _clear_send(self, data, addr):
        if self.sock is None:
            await self._opened.wait()
        if self.sock is None:
            raise NodeError("port %d has no clear socket: %s" % (self.port, self.error))
        self.sock.sendto(data, addr)

    def close(self):
        if self.sock is not None:
            self.sock.close()


class Node:
    def __init__(self, board, identity, peers=(), ike_port=500, natt_port=4500,
                 addresses=(), keylog=None, log=None, accept_any=None, spd=None,
                 pins=None, tofu=True, discovery=None, keepalive=20,
                 esp_soft_packets=1 << 31, mtu=1280, send_timeout=10, liveness=30,
                 dpd_max=900):
        self.board = board
        self._now = board.now_ms        # integer ms ticks (pnpipsec.ticks)
        self.identity = identity
        self.peers = list(peers)
        self.ike_port = ike_port
        self.natt_port = natt_port
        self.addresses = list(addresses)
        self.keylog = keylog
        self.log = log or (lambda msg: None)
        self.accept_any = accept_any  # PeerConfig for peers not configured, or None
        self.decisions = pol.DecisionPoint(spd)
        storage = getattr(board, "storage", None) or _RamStorage()
        self.pins = pins if pins is not None else PinStore(storage)
        self.tofu = tofu
        self.discovery = discovery or Discovery(probe_timeout=5)
        self.levels = LevelTable()
        # RFC 3948 section 4: NAT keepalives hold the mapping open (we always claim NAT).
        self.keepalive = ms(keepalive or 0)       # ms; 0: off
        self.esp_soft_packets = esp_soft_packets
        self.mtu = mtu
        self.send_timeout = send_timeout          # s (the application's unit)
        # RFC 7296 section 2.4: a liveness check when we keep sending on an SA but heard
        # nothing protected from the peer for `liveness` s (it may have rebooted).
        self.liveness = ms(liveness or 0)         # ms; 0: off
        # Dead peer detection on idle SAs: a check after `liveness` s of silence, then
        # twice as long after each answered one (up to dpd_max s) while no ESP comes:
        # an idle SA costs a few empty INFORMATIONALs an hour, a vanished peer is
        # noticed within liveness + the retry schedule (about 35 s).
        self.dpd_max = ms(dpd_max or 0)
        self._next_keepalive = None     # tick; None: due
        local = ike.LocalIdentity(ed25519_seed=identity.seed if identity else None)
        # A board may offer faster DH / signatures (the host board: OpenSSL); same API.
        # Every SA proposal goes through the DecisionPoint: its cache or the local SPD
        # at once, or (with a policy server, decisions.ask) PENDING: the engine holds
        # the SA, DecisionPending starts the question, and at decisions.timeout the
        # engine falls back to the local SPD by itself.
        dp = self.decisions
        self.engine = ike.Engine(board.rand, board.aes, local,
                                 policy=dp.engine_policy(self._config_for, self._now),
                                 fallback=dp.engine_fallback(self._config_for, self._now),
                                 decision_timeout=dp.timeout,
                                 natt_ports=(ike_port, natt_port), rank=self._rank,
                                 dh=getattr(board, "dh", None), sig=getattr(board, "sig", None),
                                 answer_sources=getattr(board, "answer_sources", 64))
        self._asking = []       # tasks asking the policy server (at most engine.max_held)
        self._sig = getattr(board, "sig", None)
        self.children = {}      # spi_in -> _Child
        self.by_host = {}       # peer host -> Peer (bounded: see _peer)
        self.by_id = {}         # Peer.fp -> Peer (the latest record with that identity)
        self.moved = {}         # host a peer's SA moved to (MOBIKE) -> its Peer record
        self._peers_made = 0
        self._idle = Timers()   # Peer -> when its idle SA is due a liveness check
        self._idle_dirty = {}   # Peers whose idle deadline may have moved earlier
        self.endpoints = {}
        self.stats = {"esp_in": 0, "esp_out": 0, "esp_drop": 0, "bad_datagram": 0,
                      "no_sa": 0, "inner_refused": 0, "keepalive_in": 0, "keepalive_out": 0,
                      "clear_in": 0, "clear_out": 0, "clear_refused": 0, "proof_sent": 0,
                      "proof_ok": 0, "proof_bad": 0, "key_changed": 0, "drop_oversize": 0,
                      "child_repair": 0, "liveness_checks": 0, "peer_table_full": 0,
                      "own_init": 0}
        self.events = []        # notable events for the app: ("key_changed", host, key) ...
        self._waiters = []
        self._to_probe = []     # (when, host) discovery wants probed (by the timer task)
        self.answer_probe_delay = 300   # ms
        self._wake = asyncio.Event()
        self._running = False
        self._tasks = []
        self.sock_ike = None
        self.sock_natt = None

    # -- lifecycle -------------------------------------------------------------
    async def start(self):
        self.sock_natt = await self.board.udp(self.natt_port)
        if self.ike_port != self.natt_port:
            self.sock_ike = await self.board.udp(self.ike_port)
            self._tasks.append(asyncio.create_task(self._rx(self.sock_ike, False)))
        self._tasks.append(asyncio.create_task(self._rx(self.sock_natt, True)))
        self._running = True
        self._tasks.append(asyncio.create_task(self._timer()))

    async def stop(self, timeout=1):
        """Delete our IKE SAs, so the peers free them now (not at DPD or expiry), then
        close everything. A DELETE waits for the exchange in flight (a proof, a rekey:
        window size one) and then for its answer, normally a few ms; whatever has not
        finished after `timeout` s is deleted at once (engine.abandon), so stop is
        bounded and every DELETE leaves."""
        if self.sock_natt is not None and self._running:
            now = self._now()
            for sa in list(self.engine.sas.values()):
                if sa.state in ("established", "rekeyed"):
                    self.engine.delete(sa, now)
            self._pump()
            deadline = add(now, ms(timeout, True))
            while self._deleting() and diff(deadline, self._now()) > 0:
                await _sleep_ms(5)
            for sa in list(self.engine.sas.values()):
                if sa.state in ("deleting", "rekeyed"):
                    self.engine.abandon(sa, self._now())
            self._pump()
            await asyncio.sleep(0)
        self._running = False
        for t in self._tasks + self._asking:
            t.cancel()
        self._tasks = []
        self._asking = []
        for s in (self.sock_ike, self.sock_natt):
            if s is not None:
                s.close()
        for ep in self.endpoints.values():
            ep.close()

    # Read-only views of the peer records (for status, tools and tests; the node itself
    # reads the records).
    @property
    def out(self):
        return {h: p.out for h, p in self.by_host.items() if p.out is not None}

    @property
    def ike_up(self):
        return {h: p.ike for h, p in self.by_host.items() if p.ike is not None}

    @property
    def proved(self):
        return {h: p.key for h, p in self.by_host.items() if p.key is not None}

    @property
    def peer_stats(self):
        return {h: p.stats for h, p in self.by_host.items()}

    def _peer(self, host, create=True):
        """The record of `host`; made on first need. At most _MAX_TRACKED records: a
        new one takes the place of the oldest without an SA, else none is made
        (counted): spoofed senders cannot grow memory nor push out a peer with an SA."""
        p = self.by_host.get(host)
        if p is not None or not create:
            return p
        if len(self.by_host) >= _MAX_TRACKED:
            for h in self.by_host:
                if not self.by_host[h].busy():
                    self._drop_peer(self.by_host[h])
                    break
            else:
                self.stats["peer_table_full"] += 1
                return None
        self._peers_made += 1
        p = self.by_host[host] = Peer(host, self._peers_made)
        p.level = self.levels.level(host)
        p.since = self.levels.since(host)
        p.disc = self.discovery.entry(inet.key(host))
        return p

    def _drop_peer(self, p):
        for h in p.addrs:
            if self.by_host.get(h) is p:
                del self.by_host[h]
        if p.fp is not None and self.by_id.get(p.fp) is p:
            del self.by_id[p.fp]
        self._idle.forget(p)

    def peer_at(self, host):
        """The record of the peer seen at `host` (any of its addresses), or None."""
        return self.by_host.get(_norm(host))

    def _records(self):
        """Each record once (by_host maps every address of a peer to its record)."""
        out = []
        seen = {}
        for p in self.by_host.values():
            if id(p) not in seen:
                seen[id(p)] = None
                out.append(p)
        return out

    def _gain(self, p, host):
        """Peer p is seen at `host`: the address goes first in p.addrs and maps to p,
        and gets p's level (so sticky security covers it). Another record at that
        address is dropped when it holds nothing, joined when it is the same identity
        or none yet and holds no SA; otherwise the address stays with it (False)."""
        q = self.by_host.get(host)
        if q is not None and q is not p:
            if q.busy() or (q.fp is not None and q.fp != p.fp):
                return False
            self._drop_peer(q)
        if host in p.addrs:
            p.addrs.remove(host)
        p.addrs.insert(0, host)
        p.host = host
        self.by_host[host] = p
        if len(p.addrs) > _MAX_ADDRS:
            used = [c.host for c in p.children]
            for sa in (p.ike, p.initiating):
                if sa is not None:
                    used.append(_norm(sa.peer_addr[0]))
            for h in reversed(p.addrs):
                if h not in used:
                    p.addrs.remove(h)
                    if self.by_host.get(h) is p:
                        del self.by_host[h]
                    self.levels.drop(h, self._now())
                    break
        p.disc = self.discovery.entry(inet.key(host))
        if p.level > CLEAR:
            self.levels.set(host, p.level, self._now())
            self.discovery.seen_level(inet.key(host), p.level, self._now())
        return True

    def _merge(self, q, p):
        """q (the record of an identity) takes in p (a record at another address that
        just proved the same identity): p's addresses, SAs, proofs and counters. The
        newest SA is p's, so q's IKE SA becomes p's. Returns q."""
        self._drop_peer(p)
        for c in p.children:
            c.peer = q
            q.children.append(c)
        for x in p.proofs:
            _bounded_add(q.proofs, x)
        for x in p.proofs_seen:
            _bounded_add(q.proofs_seen, x)
        if p.ike is not None:
            q.ike = p.ike
        if q.initiating is None:
            q.initiating = p.initiating
        if p.key is not None:
            q.key = p.key
        if p.natt_port is not None:
            q.natt_port = p.natt_port
        q.failed = None
        q.idle_checks = 0
        for k in p.stats:
            q.stats[k] = q.stats.get(k, 0) + p.stats[k]
        for h in reversed(p.addrs):
            self._gain(q, h)
        self._idle_mark(q)
        self.log("peer %s now at %s (was at %s)" % (q.fp, q.host, ", ".join(q.addrs[1:])))
        return q

    def _retire(self, p, sa):
        """sa just proved p's identity from p.host: p's IKE SAs at its other (older)
        addresses are superseded (the peer moved) and deleted, so none stays up on
        its own; SAs at the same address (both ends initiated) stay."""
        host = _norm(sa.peer_addr[0])
        now = self._now()
        old = []
        for c in p.children:
            s = c.child.ike
            if s is not sa and s not in old and c.host != host:
                old.append(s)
        if p.ike is not None and p.ike is not sa and _norm(p.ike.peer_addr[0]) != host \
                and p.ike not in old:
            old.append(p.ike)
        for s in old:
            if s.state == "established":
                self.engine.delete(s, now)

    def peer_by_id(self, fp):
        """The record of the peer whose identity (Peer.fp) is fp, or None."""
        return self.by_id.get(fp)

    def _identified(self, p, fp):
        """p proved identity fp; returns the record of that identity: the one that had
        it already when p is another address of the same peer (p joins it), else p
        (the latest record to prove an identity holds the index)."""
        q = self.by_id.get(fp)
        if q is not None and q is not p and p.fp in (None, fp) and \
                self.by_host.get(q.host) is q:
            return self._merge(q, p)
        if p.fp == fp:
            self.by_id[fp] = p
            return p
        if p.fp is not None and self.by_id.get(p.fp) is p:
            del self.by_id[p.fp]
        p.fp = fp
        self.by_id[fp] = p
        return p

    def _deleting(self):
        for sa in self.engine.sas.values():
            if sa.state in ("deleting", "rekeyed"):
                return True
        return False

    def status(self):
        """Counters for operators and tests: IKE SAs by state, half-open ones, CHILD SAs,
        and the node's, the engine's (drops by reason, cookies sent, evictions) and
        discovery's counters."""
        by_state = {}
        for sa in self.engine.sas.values():
            by_state[sa.state] = by_state.get(sa.state, 0) + 1
        return {"ike_sas": by_state, "half_open": self.engine.half_open(),
                "child_sas": len(self.children),
                "peers": len([1 for p in self._records() if p.out is not None]),
                "node": dict(self.stats), "engine": dict(self.engine.stats),
                "discovery": dict(self.discovery.counters)}

    def endpoint(self, port, min_level=CLEAR):
        """The endpoint on `port` (made on first use; its clear socket binds in the background)."""
        ep = self.endpoints.get(port)
        if ep is None:
            ep = self.endpoints[port] = Endpoint(self, port, min_level)
            self._tasks.append(asyncio.create_task(self._open_clear(ep)))
        elif min_level > ep.min_level:
            ep.min_level = min_level
        return ep

    async def _open_clear(self, ep):
        try:
            ep.sock = await self.board.udp(ep.port)
        except OSError as e:
            ep.error = e
            self.log("port %d: no clear socket (%s); ESP only" % (ep.port, e))
        ep._opened.set()
        if ep.sock is not None:
            await self._rx_clear(ep)

    # -- levels ------------------------------------------------------------------
    def level(self, host):
        return self._level(_norm(host))

    def _level(self, host):
        """host's level, read from its record (node.levels without one)."""
        p = self.by_host.get(host)
        return p.level if p is not None else self.levels.level(host)

    def on_level(self, cb):
        """cb(host, old, new, now) on every level change."""
        self.levels.on_change(cb)

    async def wait_level(self, host, level, timeout=10):
        """Returns the level once >= `level`; raises LevelTimeout after `timeout` s.
        Waiting also starts discovery with a peer we know nothing of."""
        return await self._wait_level(_norm(host), level, ms(timeout, True), timeout)

    async def _wait_level(self, host, level, wait_ms, timeout):
        if self._level(host) < level and self._out(host) is None:
            self._probe(host)
        ev = asyncio.Event()
        box = []

        def done(ok, lv):
            box.append((ok, lv))
            ev.set()
        w = self.levels.wait(host, level, add(self._now(), wait_ms), done)
        self._wake.set()
        try:
            await ev.wait()
        finally:
            if w is not None and not box:
                self.levels.cancel(w)
        ok, lv = box[0]
        if not ok:
            raise LevelTimeout("%s did not reach level %d within %s s (now %d)" % (host, level, timeout, lv))
        return lv

    def _set_level(self, host, lv):
        """The level of host's peer, at every address of it (levels and sticky
        security are the identity's)."""
        p = self.by_host.get(host)
        now = self._now()
        if p is not None and p.level != lv:
            p.level = lv
            p.since = now
        for h in (p.addrs if p is not None else (host,)):
            self.levels.set(h, lv, now)
            self.discovery.seen_level(inet.key(h), lv, now)
        if p is not None:
            p.disc = self.discovery.entry(inet.key(p.host))

    def _drop_level(self, host, p):
        p.level = CLEAR
        p.since = None
        for h in p.addrs:
            self.levels.drop(h, self._now())

    def _proved_key(self, host, sa):
        """The key `host` proved on this very IKE SA (channel binding), or None."""
        p = self.by_host.get(host)
        if p is not None:
            for s, k in p.proofs:
                if s is sa:
                    return k
        return None

    def _out(self, host):
        p = self.by_host.get(host)
        return p.out if p is not None else None

    def _sa_level(self, host, sa):
        if _trusted(sa):            # a PSK or a configured public key
            return AUTHENTICATED
        key = self._proved_key(host, sa)
        if key is not None and self._key_trusted(host, key):
            return AUTHENTICATED
        return ENCRYPTED

    def _key_trusted(self, host, key):
        """May `key`, proved at `host`, reach AUTHENTICATED? Its pin at that address
        (as before: trust on first use, or approved), or the key's own standing: a key
        the user approved at any address counts at every address, and under TOFU a key
        pinned elsewhere counts at an address that has no pin of another key."""
        pid = inet.key(host)
        if self.pins.is_trusted(pid, key):
            if self.tofu or self.pins.state(pid) == "approved":
                return True
        st = self.pins.key_state(key)
        if st == "approved":
            return True
        return st == "tofu" and self.tofu and self.pins.get(pid) is None

    def _rank(self, sa):
        """Who keeps its slot when the SA table is full (the engine asks): configured
        keys, then a proved key we trust, then NULL; among equals the most recently
        active (IKE or ESP) stays."""
        trust = 0
        if _trusted(sa):
            trust = 2
        elif self._sa_level(self._host(sa), sa) >= AUTHENTICATED:
            trust = 1
        return (trust, self.engine.recency(sa))

    def approve(self, host, key):
        """Trust `key` for `host` from now on (the user's word, e.g. after a QR scan)."""
        host = _norm(host)
        self.pins.approve(inet.key(host), key)
        self._relevel(host)

    def _relevel(self, host):
        """Send on the newest CHILD SA with `host`; the host's level is that SA's.

        Newest, not best: a peer that restarted keeps our old SA alive but has lost its
        keys, so only the SA it just made reaches it (and a rekey's successor is newest)."""
        p = self.by_host.get(host)
        if p is None:
            return
        best = None
        for c in p.children:        # a few: a peer's CHILD SAs are bounded
            if best is None or c.seq > best.seq:
                best = c
        if best is None:
            if p.out is not None:
                p.out = None
                self._drop_level(host, p)
            return
        p.out = best
        self._set_level(host, self._sa_level(host, best.child.ike))

    # -- peers and SAs -----------------------------------------------------------
    def peer_for(self, host):
        key = inet.key(host)
        loose = None
        for p in self.peers:
            if p.host == "any":
                continue
            k = inet.key(p.host)
            if k == key:
                return p
            if loose is None and len(key) <= 16 and k[:16] == key:
                loose = p       # a zoned peer asked about without its zone (packed form)
        return loose

    def _fp(self, host):
        """Fingerprint of the key the peer authenticated with on its current SA (a
        configured Ed25519 key, or a proved and trusted one), for `fp:` SPD entries."""
        c = self._out(host)
        if c is None:
            return None
        sa = c.child.ike
        m = sa.method
        key = sa.peer_pubkey if m is not None and m.signs else self._proved_key(host, sa)
        if key is None or self._sa_level(host, sa) < AUTHENTICATED:
            return None
        return fingerprint(key)

    def _config_for(self, req, decision):
        """The PeerConfig for an accepted proposal: the configured peer's, else the
        one for any peer (None: refused)."""
        p = self.peer_for(inet.ntop(req.peer_addr))
        if p is not None:
            return p.cfg
        return self.accept_any

    def _decide_held(self, ev):
        """The engine holds ev.sa for a decision: ask the policy server in a task."""
        # (the list only keeps the tasks referenced and cancellable by stop)
        self._asking = [t for t in self._asking if not t.done()]
        self._asking.append(asyncio.create_task(self._ask_held(ev.sa, ev.peer_id, ev.method)))

    async def _ask_held(self, sa, peer_id, method):
        eng = self.engine
        try:
            req = pol.engine_request(sa.peer_addr, peer_id, method)
            d = await self.decisions.decide_held(req, self._now, eng.decision_ms,
                                                 lambda: eng.holding(sa))
            if d is not None and eng.decided(sa, self._config_for(req, d) if d.accept
                                             else None, self._now()):
                self._pump()
        except Exception as e:      # the engine's deadline still answers the peer
            self.log("decision for %s: %r" % (sa.peer_addr[0], e))

    def _probe(self, host, full=False):
        """Start IKE with `host` unless it is under way or impossible; with an IKE SA up
        but no CHILD SA, make a CHILD SA over it. `full`: the app asked for this SA, so
        IKE_SA_INIT retries in full, as it does for a peer known to speak IKE (only
        the discovery of an unknown peer is a short probe)."""
        rec = self._peer(host)
        if rec is None or rec.initiating is not None:
            return
        now = self._now()
        key = inet.key(host)
        sa = rec.ike
        if sa is not None and sa.state == "established":
            # A live IKE SA: the peer speaks IKE and is never legacy. Missing only a
            # CHILD SA (deleted by the peer, or expired behind a rekey under loss).
            self.discovery.probe_result(key, PROBE_OK, now)
            if rec.out is None and not sa.cfg.childless and not sa.creating_child:
                self.stats["child_repair"] += 1
                self.engine.create_child(sa, now)
                self._pump()
            return
        if sa is not None or self._engine_has(host):
            return
        p = self.peer_for(host)
        cfg = p.cfg if p is not None else self.accept_any
        if cfg is None:
            return
        if p is not None and p.ike_port != p.natt_port:
            port = p.ike_port
        else:
            port = p.natt_port if p is not None else self.natt_port
        known = full or self.discovery.state(key, now) == IPSEC or self.discovery.is_sticky(key, now)
        rec.failed = None
        rec.initiating = self.engine.initiate(
            (host, port), cfg, now, init_tries=cfg.retransmit_tries if known else None)
        self._pump()

    def _probe_soon(self, host, delay=0):
        """Probe from the timer task (after `delay` ms): the app's send returns
        before any DH work."""
        self._to_probe.append((add(self._now(), delay), host))
        self._wake.set()

    def _engine_has(self, host):
        """True while the engine holds a live SA with host (also a half-open one we answer)."""
        for sa in self.engine.hosts.get(host, ()):    # the engine's index by address
            if sa.state != "dead":
                return True
        return False

    async def connect(self, host, timeout=10):
        """Bring up an SA with a configured peer; returns its level or raises NodeError."""
        host = _norm(host)
        await self._bring_up(host, timeout, lambda: self._out(host) is not None)
        return self._level(host)

    async def connect_ike(self, host, timeout=10):
        """Bring up the IKE SA only (enough for a childless peer); returns the IkeSA."""
        host = _norm(host)
        await self._bring_up(host, timeout, lambda: self._ike(host) is not None)
        return self._ike(host)

    def _ike(self, host):
        p = self.by_host.get(host)
        return p.ike if p is not None else None

    async def _bring_up(self, host, timeout, done):
        if done():
            return
        if self.peer_for(host) is None and self.accept_any is None:
            raise NodeError("no peer configured for %s" % host)
        rec = self._peer(host)
        if rec is None:
            raise NodeError("no room for another peer (%d tracked)" % _MAX_TRACKED)
        rec.failed = None
        self._probe(host, full=True)
        deadline = add(self._now(), ms(timeout, True))
        ev = asyncio.Event()
        self._waiters.append(ev)
        try:
            while not done():
                reason = rec.failed
                if reason:
                    raise NodeError("SA with %s failed: %s" % (host, reason))
                left = diff(deadline, self._now())
                if left <= 0:
                    raise NodeError("no SA with %s after %s s" % (host, timeout))
                ev.clear()
                await _wait_ms(ev.wait(), left)
        finally:
            self._waiters.remove(ev)

    # -- datagrams from the sockets ---------------------------------------------
    async def _rx(self, sock, natt):
        while True:
            data, addr = await sock.recvfrom()
            try:
                self._datagram(data, addr, sock, natt)
            except Exception as e:  # a hostile datagram must never stop the node
                self.stats["bad_datagram"] += 1
                self.log("dropped datagram from %s: %r" % (addr[0], e))

    async def _rx_clear(self, ep):
        while True:
            data, addr = await ep.sock.recvfrom()
            try:
                self._clear_in(ep, data, addr)
            except Exception as e:
                self.stats["bad_datagram"] += 1
                self.log("dropped clear datagram from %s: %r" % (addr[0], e))

    def _clear_in(self, ep, data, addr):
        host = _norm(addr[0])
        action = self.decisions.spd.match(inet.pton(host), self._fp(host), ep.port,
                                          addr[1]).with_min(ep.min_level)
        deliver, probe = self.discovery.on_clear_inbound(inet.key(host), action, self._now())
        if probe:
            # Later than the sender's own probe, which is usually on its way: then the
            # engine already has its SA and we do not start a second, duplicate one.
            self._probe_soon(host, self.answer_probe_delay)
        if not deliver:
            self.stats["clear_refused"] += 1
            return
        self.stats["clear_in"] += 1
        self._count(host, "clear_in")
        ep._deliver(Datagram(data, (host, addr[1]), CLEAR))

    def _datagram(self, data, addr, sock, natt):
        if len(data) > _MAX_DATAGRAM:
            # by length first: a 60 KB datagram is never copied through a parser
            self.stats["drop_oversize"] += 1
            return
        now = self._now()
        if not natt:
            self._ike_in(data, addr, sock, now)
            return
        kind, body = udpencap.classify(data)
        if kind == "ike":
            self._ike_in(body, addr, sock, now)
        elif kind == "esp":
            self._esp_in(body, addr)
        elif kind == "keepalive":
            self.stats["keepalive_in"] += 1
        else:
            self.stats["bad_datagram"] += 1

    def _ike_in(self, msg, addr, sock, now):
        if self._own_init(msg, addr):
            return
        # The socket is the request's arrival tag: the engine copies it onto every
        # answer (also one given later, after a held decision), which goes back on it.
        # _rx_answer only labels a failure's reason in the log ("from the peer" or "we
        # refused", see _why); nothing is routed by it.
        answer = len(msg) > 19 and bool(msg[19] & 0x20)
        self._rx_answer = answer
        try:
            self.engine.receive(msg, addr, now, sock)
            self._pump()
        finally:
            self._rx_answer = None
        if answer:
            # (an answer may have cleared the request its idle check waited behind;
            # requests, which a flood is made of, cost no address parsing here)
            self._idle_mark(self.by_host.get(_norm(addr[0])))

    def _own_init(self, msg, addr):
        """Our own IKE_SA_INIT request came back: the "peer" is this node (an address of
        ours, a NAT hairpin...). Answering it would make an SA with ourselves and report
        a peer that does not exist as ENCRYPTED. Its SPIi is the SPI of an SA we are
        initiating (64 random bits, so never a real peer's by chance): drop the request
        and end that attempt, whose failure names the reason."""
        if len(msg) < 28 or msg[18] != 34 or msg[19] & 0x28 != 0x08 or bytes(msg[8:16]) != ike.ZERO8:
            return False
        sa = self.engine.sas.get(bytes(msg[0:8]))
        if sa is None or not sa.initiator or sa.state != "init_sent":
            return False
        self.stats["own_init"] += 1
        self.engine.abandon(sa, self._now())
        self._pump()
        p = self.by_host.get(_norm(sa.peer_addr[0]))
        if p is not None:
            p.failed = "%s is this node itself (our own IKE_SA_INIT came back)" % sa.peer_addr[0]
        self.log("IKE_SA_INIT to %s came back to us: that address is ours, no SA" % sa.peer_addr[0])
        return True

    def _esp_in(self, packet, addr):
        spi = int.from_bytes(packet[0:4], "big")
        c = self.children.get(spi)
        if c is None:
            self.stats["no_sa"] += 1
            self._stale_peer(_norm(addr[0]))
            return
        try:
            nh, payload = c.inp.open(packet)
        except esp.EspDrop:
            self.stats["esp_drop"] += 1
            return
        self.stats["esp_in"] += 1
        self.engine.seen(c.child.ike, self._now())
        self._track(c)
        p = c.peer if c.peer is not None else self.by_host.get(c.host)
        if p is not None and p.idle_checks:
            p.idle_checks = 0       # ESP proved it alive: idle checks start short again
            self._idle_mark(p)
        if addr[0] != c._src:
            # The ICV checked, but it does not cover the outer source address: anyone
            # holding an SA with us (or replaying a peer's packet) can send from any
            # address. So a new source is followed only for a proved identity, and
            # never onto an address another peer's record holds: then the peer itself
            # sends from there now (moved, or a NAT rebound it), its record gains the
            # address (replies to it go in this SA, never in clear) and the app sees
            # it. The SA's own address moves only by the engine (MOBIKE), as RFC 7296
            # section 2.23 wants. (The receive-path fuzzer caught an SA of its own,
            # NULL-authenticated, sending from another peer's address: it was
            # delivered labelled with that peer's address.)
            # On a MOBIKE SA nothing follows ESP at all (RFC 4555 rules out NAT-T's
            # dynamic updates there): the peer moves by UPDATE_SA_ADDRESSES and our
            # return-routability check only. Else an attacker holding the address a
            # peer moved away from relays the peer's own packets (withheld on the
            # link) from it, and they reach the app labelled with the old address
            # (caught by host_tests/test_hostile_mobike.py).
            h = _norm(addr[0])
            other = self.by_host.get(h)
            if c.peer is not None and p is not None and (other is None or other is p) \
                    and not c.child.ike.mobike:
                c._src, c._src_host = addr[0], h
                if h != c.host:
                    self._gain(p, h)
            elif h != c._src_host:
                self.stats["esp_src_kept"] = self.stats.get("esp_src_kept", 0) + 1
        if addr[0] == c._src and c._src_host == c.host:
            self._learn_natt(c.host, addr[1])    # the ICV checked: the peer's port is real
        if nh == 59:
            return
        inner = self._inner(c, nh, payload)
        if inner is None:
            self.stats["inner_refused"] += 1
            return
        src, sport, dport, data = inner
        ep = self.endpoints.get(dport)
        if ep is not None:
            # The level of the SA it came on (not the host's best): what proved it,
            # checked against the endpoint's minimum and the SPD's (a require entry
            # refuses ESP below its level as it refuses clear datagrams).
            level = self._sa_level(c.host, c.child.ike)
            need = self.decisions.spd.match(inet.pton(src), self._fp(c.host), dport,
                                            sport).with_min(ep.min_level).level
            if level < need:
                self.stats["inner_refused"] += 1
                return
            if src == c.host:
                src = c._src_host       # where the peer is now
            self._count(src, "esp_in")
            ep._deliver(Datagram(data, (src, sport), level, self._label(p, c.child.ike)))

    def _track(self, c):
        """c's address: the engine moves an SA's peer_addr (MOBIKE, a NAT's new port);
        when its host changed, the peer's record gains the new address."""
        pa = c.child.ike.peer_addr
        if pa is c._pa:
            return c.host
        c._pa = pa
        host = _norm(pa[0])
        if host != c.host:
            if c._src_host == c.host:
                c._src, c._src_host = pa[0], host
            c.host = host
            if c.peer is not None:
                self._gain(c.peer, host)
        return host

    def sa_moved(self, sa):
        """The engine may have moved `sa` (its peer_addr): its CHILD SAs follow, and
        the peer's record gains the new address. Called on every engine event about
        an SA; cheap when nothing moved."""
        for ch in getattr(sa, "children", ()):
            c = self.children.get(ch.spi_in)
            if c is not None:
                self._track(c)

    def _label(self, p, sa):
        """The identity `sa` proved or was configured with (p's fp), or None."""
        if p is None or p.fp is None:
            return None
        if _trusted(sa):
            return p.fp
        for s, k in p.proofs:
            if s is sa:
                return p.fp if k == p.key else fingerprint(k)
        return None

    def _inner(self, c, nh, payload):
        """(source host, sport, dport, data) of a decrypted packet, or None when it is
        not what the SA carries. The peer holding the keys may still send garbage: a
        bad inner header is refused and counted like any other, never raised."""
        tunnel = c.child.mode == "tunnel"
        try:
            if nh == 17 and not tunnel:
                sport, dport, data = inet.parse_udp(payload)
                return c.host, sport, dport, data
            if nh in (41, 4) and tunnel:
                src_b, dst_b, sport, dport, data = inet.parse_ip_udp(payload)
                # The SA vouches only for its selectors: a spoofed inner source is refused.
                if _in_ts(src_b, c.child.remote_ts) and _in_ts(dst_b, c.child.local_ts):
                    return inet.ntop(src_b), sport, dport, data
        except ValueError:
            pass
        return None

    def _stale_peer(self, host):
        """ESP for an SA we do not have, from a peer known to speak IKE while we hold no
        SA with it: it kept an SA we lost (one end gave up an exchange, or restarted).
        A new IKE SA carries INITIAL_CONTACT, which makes it drop the stale one. The
        datagram is unauthenticated, so it only ever starts the handshake we would
        start on our next send, and only while there is none."""
        p = self.by_host.get(host)
        if (p is not None and (p.ike is not None or p.initiating is not None)) or \
                host in self._to_probe_hosts():
            return
        if self.discovery.state(inet.key(host), self._now()) == IPSEC:
            self._probe_soon(host, self.answer_probe_delay)

    def _to_probe_hosts(self):
        return [h for _, h in self._to_probe]

    # -- datagrams to the sockets ------------------------------------------------
    async def send(self, data, addr, sport, min_level=CLEAR, timeout=None):
        """The policy-checked send behind Endpoint.send (see its docstring)."""
        host = _norm(addr[0])
        gw = self._gateway(host)
        action = self.decisions.spd.match(inet.pton(host), self._fp(gw), sport, addr[1]).with_min(min_level)
        if gw != host:
            # behind a gateway's tunnel: that network is only ever reached through it
            action = action.with_min(ENCRYPTED)
        key = inet.key(gw)
        timeout = self.send_timeout if timeout is None else timeout
        deadline = add(self._now(), ms(timeout, True))
        while True:
            lv = self._level(gw)
            what, probe, why = self.discovery.on_send(key, action, lv, self._now())
            if what == "clear":
                # The datagram first, the probe after: discovery never delays it.
                await self._endpoint_for(sport)._clear_send(data, (host, addr[1]))
                self.stats["clear_out"] += 1
                self._count(host, "clear_out")
                if probe:
                    self._probe_soon(host)
                return CLEAR
            if probe:
                self._probe(gw)
            if what == "esp":
                self.send_esp(data, (host, addr[1]), sport)
                return lv
            if what == "fail":
                raise NodeError("not sent to %s: %s (policy %s never allows clear here)" % (host, why, action))
            left = diff(deadline, self._now())
            if left <= 0:
                raise LevelTimeout("not sent to %s: level %d not reached in %s s; nothing left in clear"
                                   % (host, max(action.level, ENCRYPTED), timeout))
            try:
                await self._wait_level(gw, max(action.level, ENCRYPTED), left, timeout)
            except LevelTimeout:
                pass   # loop once more: on_send decides between fail and a last check

    def _gateway(self, host):
        """The peer whose SA carries datagrams to `host`: host itself when we have or
        configured an SA with it; else the gateway whose tunnel covers it, by a live
        CHILD SA's selectors or a configured peer's remote_ts."""
        p = self.by_host.get(host)
        if (p is not None and (p.out is not None or p.ike is not None)) or \
                self.peer_for(host) is not None:
            return host
        dst = inet.pton(host)
        c = self._tunnel_to(dst)
        if c is not None:
            return c.host
        for p in self.peers:
            ts = p.cfg.remote_ts
            if p.host != "any" and p.cfg.mode == "tunnel" and ts and _in_ts(dst, ts):
                return _norm(p.host)
        return host

    def _tunnel_to(self, dst):
        """The newest tunnel-mode CHILD SA whose remote selectors cover address `dst`."""
        best = None
        for c in self.children.values():
            ts = c.child.remote_ts
            if c.child.mode == "tunnel" and ts and _in_ts(dst, ts) and \
                    (best is None or c.seq > best.seq):
                best = c
        return best

    def _endpoint_for(self, port):
        ep = self.endpoints.get(port)
        return ep if ep is not None else self.endpoint(port)

    def send_esp(self, data, addr, sport):
        """Send through the SA with addr's host (no policy check: callers did it)."""
        host = _norm(addr[0])
        dst = inet.pton(host)
        c = self._out(host)
        if c is None or (c.child.mode == "tunnel" and not _in_ts(dst, c.child.remote_ts)):
            c = self._tunnel_to(dst)
        if c is None:
            raise NodeError("no SA with %s: call connect() first" % host)
        if c.child.mode == "tunnel":
            src = self._inner_source(c, host)
            nh, payload = inet.build_ip_udp(src, dst, sport, addr[1], data)
        else:
            # Checksum 0: the ESP ICV already covers these bytes (see inet's docstring).
            payload = inet.build_udp(sport, addr[1], data)
            nh = 17
        over = _ESP_OVERHEAD_V6 if ":" in host else _ESP_OVERHEAD_V4
        if esp.sealed_len(len(payload)) + over > self.mtu:
            raise NodeError("datagram of %d bytes does not fit the %d-byte MTU inside ESP (max %d)"
                            % (len(data), self.mtu, len(data) - (esp.sealed_len(len(payload)) + over - self.mtu)))
        try:
            packet = c.out.seal(payload, nh)
        except esp.EspLimit:
            self.engine.rekey_child(c.child, self._now())
            self._pump()
            raise NodeError("SA with %s ran out of sequence numbers; rekeying" % host)
        self.stats["esp_out"] += 1
        self._count(host, "esp_out")
        self._send_natt(packet, self._track(c))   # the SA's address: maybe not `host`
        self._check_alive(c.child.ike)
        if c.out.needs_rekey and not c.rekey_asked:
            # Soft sequence limit: rekey long before the 32-bit counter could wrap.
            c.rekey_asked = True
            self.engine.rekey_child(c.child, self._now())
            self._pump()

    def _check_alive(self, sa):
        """Sending into an SA the peer has been silent on: ask it (an empty
        INFORMATIONAL, retried as any exchange). A peer that rebooted never answers, the
        IKE SA goes down, and the next datagram brings up a new one (INITIAL_CONTACT)."""
        now = self._now()
        if self.liveness and sa.state == "established" and sa.pending is None and \
                sa.last_rx is not None and age(now, sa.last_rx) >= self.liveness:
            self._liveness_check(sa, now)

    def _liveness_check(self, sa, now):
        self.stats["liveness_checks"] += 1
        self.engine.check_liveness(sa, now)
        self._pump()

    def _idle_wait(self, p):
        """ms of silence on p's IKE SA before the next idle liveness check."""
        w = self.liveness << p.idle_checks if p.idle_checks < 16 else self.dpd_max
        return w if w < self.dpd_max else self.dpd_max

    def _idle_due(self, p):
        """When p's idle SA is due its next liveness check (a tick), or None: none
        while a request is out (its answer or give-up settles the SA first)."""
        sa = p.ike
        if sa is None or sa.state != "established" or sa.last_rx is None or \
                sa.pending is not None or self.by_host.get(p.host) is not p:
            return None
        return add(sa.last_rx, self._idle_wait(p))

    def _idle_mark(self, p):
        if p is not None:
            self._idle_dirty[p] = None

    def _idle_flush(self, now):
        d = self._idle_dirty
        if not d:
            return
        self._idle_dirty = {}
        if not self.liveness or not self.dpd_max:
            return
        for p in d:
            t = self._idle_due(p)
            if t is not None:
                self._idle.at(p, t, now)

    def _idle_checks(self, now):
        """Dead peer detection on idle SAs (see dpd_max): only the peers whose check is
        due (a heap, like the engine's timers), in the order of their records."""
        if not self.liveness or not self.dpd_max:
            return
        self._idle_flush(now)
        due = self._idle.pop_due(now)
        if len(due) > 1:
            due.sort(key=_order)
        for p in due:
            sa = p.ike
            if self._idle_due(p) is not None and \
                    self._idle_wait(p) - age(now, sa.last_rx) <= 0:
                p.idle_checks += 1
                self._liveness_check(sa, now)
            self._idle_mark(p)
        self._idle_flush(now)

    def _idle_next(self, now):
        """ms from now to the next idle check (exact: the heap's top is set right
        when its deadline moved later), or None."""
        if not self.liveness or not self.dpd_max:
            return None
        self._idle_flush(now)
        while True:
            top = self._idle.peek(now)
            if top is None:
                return None
            t, p = top
            real = self._idle_due(p)
            if real is None:
                self._idle.forget(p)
            elif real != t:
                self._idle.set(p, real, now)
            else:
                return diff(t, now)

    def _count(self, host, what):
        p = self._peer(host)
        if p is not None:       # else: table full of peers with SAs; global stats only
            p.stats[what] += 1

    def _learn_natt(self, host, port):
        p = self._peer(host)
        if p is not None:
            p.natt_port = port

    def _inner_source(self, c, host):
        ts = c.child.local_ts
        if ts:
            return ts[0][0]
        fam = 16 if ":" in host else 4
        for a in self.addresses:
            b = inet.pton(a)
            if len(b) == fam:
                return b
        raise NodeError("no local address of the family of %s for the tunnel" % host)

    def _send_natt(self, data, host):
        p = self.by_host.get(host)
        if p is None:
            p = self.moved.get(host)
        elif p.moved_to is not None:
            host = p.moved_to       # its SA moved (MOBIKE): ESP follows
        port = p.natt_port if p is not None else None
        if port is None:
            p = self.peer_for(host)
            port = p.natt_port if p else self.natt_port
        self.sock_natt.sendto(data, (host, port))

    def _send_ike(self, rec):
        """Send one tagged engine record (see engine.py: data, addr, response, exch,
        spi, via); the tag, not the header bytes, picks the socket."""
        msg, addr, response, exch, _spi, via = rec
        if response:
            # back on the socket its request came in on (the arrival tag)
            sock = via if via is not None else self.sock_natt
            if sock is self.sock_natt:
                sock.sendto(udpencap.MARKER + msg, addr)
            else:
                sock.sendto(msg, addr)
            return
        host = addr[0]
        p = self.peer_for(host)
        if exch == _IKE_SA_INIT and self.sock_ike is not None and addr[1] != self.natt_port \
                and (p is None or p.ike_port != p.natt_port):
            self.sock_ike.sendto(msg, addr)
        else:
            self._send_natt(udpencap.MARKER + msg, host)

    # -- engine output -------------------------------------------------------------
    def _pump(self):
        for rec in self.engine.pop_tagged():
            try:
                self._send_ike(rec)
            except OSError as e:
                self.log("send to %s failed: %s" % (rec[1][0], e))
        for ev in self.engine.pop_events():
            self._event(ev)
        self._wake.set()

    def _event(self, ev):
        kind = ev.kind
        sa = getattr(ev, "sa", None)
        if sa is not None and kind != "ike_down" and kind != "auth_failed":
            self.sa_moved(sa)       # e.g. MOBIKE's event after UPDATE_SA_ADDRESSES
        if kind == "ike_up":
            self._ike_up(ev.sa)
        elif kind == "child_up":
            self._install(ev.child)
        elif kind == "child_rekeyed":
            self._install(ev.new)
        elif kind == "child_down":
            self._remove(ev.child)
        elif kind == "ike_rekeyed":
            host = self._host(ev.new)
            p = self._peer(host)
            if p is not None:
                if p.ike is ev.old:
                    p.ike = ev.new
                    self._idle_mark(p)
                # The new IKE SA's keys come from the old one's SK_d: the proof binds.
                p.proofs = [(ev.new if s is ev.old else s, k) for s, k in p.proofs]
            self._relevel(host)
            if self.keylog is not None:
                self.keylog.ike(ev.new)
        elif kind == "ike_moved":
            self._moved(ev.sa, ev.old, ev.new)
        elif kind == "notify":
            if ev.type == proof.PROOF:
                self._proof_in(ev.sa, ev.data)
        elif kind == "ike_down" or kind == "auth_failed":
            self._ike_down(ev.sa, ev.reason)
        elif kind == "decision_pending":
            self._decide_held(ev)
        self.log(self._note(ev.__class__.__name__, ev))
        for w in self._waiters:
            w.set()

    # -- what happened, for the log, status and error messages -----------------------
    _rx_answer = None     # while an IKE message is handled: True an answer, False a request
    _auth_failed = None   # the IKE SA of the last AuthFailed (its IkeDown says less)

    def _note(self, name, ev):
        """The log line of an engine event: its name, the peer, what came up or why it
        failed and who said so. A failure's reason also goes on the peer's record
        (Peer.failed); SAs coming up are stamped (.up_at, a tick) for their age."""
        if name in ("ChildUp", "ChildDown"):
            sa, child = ev.child.ike, ev.child
        elif name == "ChildRekeyed":
            sa, child = ev.new.ike, ev.new
        elif name == "IkeRekeyed":
            sa, child = ev.new, None
        else:
            sa, child = getattr(ev, "sa", None), None
        if sa is None:
            return name
        host = self._host(sa)
        text = "%s %s" % (name, host)
        if name in ("IkeUp", "IkeRekeyed"):
            sa.up_at = self._now()
            return "%s: auth %s, SPIs %s %s" % (text, sa.auth, _hex(sa.spi_i), _hex(sa.spi_r))
        if name in ("ChildUp", "ChildRekeyed"):
            child.up_at = self._now()
            return "%s: %s, SPIs in %08x out %08x" % (text, child.mode, child.spi_in, child.spi_out)
        if name == "ChildDown":
            return "%s: SPIs in %08x out %08x" % (text, child.spi_in, child.spi_out)
        if name == "NotifyReceived":
            return "%s: type %d" % (text, ev.type)
        if name not in ("IkeDown", "AuthFailed", "ChildFailed"):
            return text
        why = self._why(name, ev.reason)
        p = self.by_host.get(host)
        keep = name == "IkeDown" and self._auth_failed is sa   # AuthFailed said more
        if name == "AuthFailed":
            self._auth_failed = sa
        if p is not None and not keep and (name != "ChildFailed" or p.out is None):
            p.failed = why
        return "%s: %s" % (text, why)

    def _why(self, name, reason):
        """A failure's reason and who said so: a notify the peer sent ("... (from the
        peer)"), our refusal of its request ("... (we refused)"), or our own verdict."""
        reason = str(reason)
        if reason == "timeout":
            return "no answer (timeout)"
        if reason.startswith("peer: "):
            return reason[6:] + " (from the peer)"
        if name == "AuthFailed":
            return reason + " (we refused)"
        if reason.upper() != reason or " " in reason:
            return reason           # our own verdict: "deleted", "bad KE", ...
        # A notify name: in an answer to our request (or the IKE_SA_INIT answer behind a
        # give-up) it is the peer's; while we handle its request, it is ours.
        return reason + (" (we refused)" if self._rx_answer is False else " (from the peer)")

    def _ike_up(self, sa):
        host = self._host(sa)
        p = self._peer(host)
        if p is None:           # every record holds an SA: this one cannot be kept
            self.engine.abandon(sa, self._now())
            return
        p.ike = sa
        p.idle_checks = 0
        self._idle_mark(p)
        if sa.peer_addr[1] != self.ike_port or self.ike_port == self.natt_port:
            p.natt_port = sa.peer_addr[1]
        p.initiating = None
        m = sa.method
        fp = None
        if m is not None and m.signs and sa.peer_pubkey is not None:
            fp = fingerprint(sa.peer_pubkey)
        elif m is not None and m.trusted and sa.peer_id is not None:
            fp = "id:" + _hex(sa.peer_id[1])
        if fp is not None:
            p = self._identified(p, fp)     # another address of a known peer: joins it
            self._retire(p, sa)
            self._relevel(host)
        if self.keylog is not None:
            self.keylog.ike(sa)
        if not _trusted(sa) and self.identity is not None:
            self._proof_out(sa)     # NULL authentication: prove our key inside the SA

    def _ike_down(self, sa, reason):
        host = self._host(sa)
        p = self.by_host.get(host)
        if p is not None:
            p.failed = reason
            if p.initiating is sa:
                p.initiating = None
                up = p.ike
                self.discovery.probe_result(inet.key(host), PROBE_OK if up is not None and
                                            up is not sa else PROBE_TIMEOUT, self._now())
            if p.ike is sa:
                p.ike = None
                if p.moved_to is not None:      # (MOBIKE) the next SA starts at home
                    self._moved(sa, sa.peer_addr, (p.host, p.natt_port))
            p.proofs = [x for x in p.proofs if x[0] is not sa]
            p.proofs_seen = [x for x in p.proofs_seen if x is not sa]
        for ch in list(getattr(sa, "children", ())):
            self._remove(ch)

    def _host(self, sa):
        """The host of sa's peer record: where it did IKE_SA_INIT, also after its SA
        moved (MOBIKE: node.moved)."""
        h = _norm(sa.peer_addr[0])
        if self.moved and h not in self.by_host:
            p = self.moved.get(h)
            if p is not None:
                return p.host
        return h

    def _moved(self, sa, old, new):
        """sa's peer moved from old to new (MOBIKE: its authenticated UPDATE and our
        return-routability check, or our own move): IKE and ESP to it go to new. The
        record, its level, pins and proofs stay under the address that did
        IKE_SA_INIT (see HACKING.md, security rules); node.moved maps the new host to
        it (one entry per record)."""
        oh, nh = _norm(old[0]), _norm(new[0])
        p = self.by_host.get(oh) or self.moved.get(oh)
        if p is None:
            return
        if p.moved_to is not None and self.moved.get(p.moved_to) is p:
            del self.moved[p.moved_to]
        p.moved_to = None if nh == p.host else nh
        if p.moved_to is not None:
            self.moved[nh] = p
        p.natt_port = new[1]
        if p.ike is not None:
            self.log("peer %s moved: %s -> %s" % (p.host, old[0], new[0]))

    def local_addresses_changed(self, addrs):
        """Our addresses are now addrs (host texts; the board's address events): sets
        node.addresses, and the engine tells the peers of MOBIKE SAs whose address went
        (UPDATE_SA_ADDRESSES as original initiator, our new address list as original
        responder). The first call compares with node.addresses as they were."""
        eng = self.engine
        if eng.local_addrs is None:
            eng.local_addrs = [_norm(a) for a in self.addresses]
        self.addresses = list(addrs)
        told = eng.set_local_addresses([_norm(a) for a in addrs], self._now())
        self._pump()
        return told

    def _proof_out(self, sa):
        sign = self._sig.sign if self._sig is not None else self._ed25519().sign
        data = proof.make(sign, self.identity.seed, self.identity.public,
                          self.engine.auth_octets(sa, True))
        self.engine.forget_octets(sa, True)     # signed once: ~300 bytes less per SA
        self.engine.send_notify(sa, proof.PROOF, data, self._now())
        self.stats["proof_sent"] += 1

    def _proof_in(self, sa, data):
        host = self._host(sa)
        p = self._peer(host)
        if p is None or sa in p.proofs_seen or self.engine.auth_octets(sa, False) is None:
            # One proof per IKE SA: more would only let a peer wear the flash (pin
            # writes) and grow the event list.
            self.stats["proof_ignored"] = self.stats.get("proof_ignored", 0) + 1
            return
        _bounded_add(p.proofs_seen, sa)
        verify = self._sig.verify if self._sig is not None else self._ed25519().verify
        key = proof.check(verify, data, self.engine.auth_octets(sa, False))
        self.engine.forget_octets(sa, False)    # one proof per IKE SA (proofs_seen)
        if key is None:
            self.stats["proof_bad"] += 1
            self.log("proof from %s does not verify on this SA (relayed?)" % host)
            return
        self.stats["proof_ok"] += 1
        # A key the user approved is trusted at every address: no pin per address.
        verdict = "match" if self.pins.key_state(key) == "approved" else \
            self.pins.observe(inet.key(host), key, self._now())
        if verdict == "changed":
            self.stats["key_changed"] += 1
            self._event_out(("key_changed", host, key))
            self.log("KEY CHANGED for %s: not trusted until approved" % host)
        p.key = key
        p = self._identified(p, fingerprint(key))   # a known peer at a new address: joins it
        _bounded_add(p.proofs, (sa, key))
        self._relevel(host)
        if self._sa_level(host, sa) >= AUTHENTICATED:
            self._retire(p, sa)

    def _ed25519(self):
        # Imported on first use and kept: its workspace is one 6 KB block, which a
        # fragmented board heap may not find again (unloading it between proofs made
        # the ESP32-heap simulation fail with MemoryError).
        from pnpipsec.crypto import ed25519
        return ed25519

    def _event_out(self, ev):
        """Notable events for the app (bounded: the oldest go first)."""
        self.events.append(ev)
        if len(self.events) > _MAX_TRACKED:
            self.events.pop(0)

    def _install(self, child):
        c = _Child(child, self.board.aes, self.board.rand, self.esp_soft_packets)
        c.host = self._host(child.ike)
        self.children[child.spi_in] = c
        p = self._peer(c.host)
        if p is not None:
            c.peer = p
            p.children.append(c)
        started = p is not None and p.initiating is not None
        if p is not None:
            p.failed = None
            p.initiating = None
        if started:
            self.discovery.probe_result(inet.key(c.host), PROBE_OK, self._now())
        self._relevel(c.host)
        if self.keylog is not None:
            self.keylog.esp(child)

    def _remove(self, child):
        c = self.children.pop(child.spi_in, None)
        if c is not None:
            p = c.peer if c.peer is not None else self.by_host.get(c.host)
            if p is not None and c in p.children:
                p.children.remove(c)
            if p is not None and self.by_host.get(p.host) is p:
                self._relevel(p.host)
            else:
                self._relevel(c.host)

    async def _timer(self):
        # A flag, not only cancellation: wait_for may swallow a cancel that races with
        # the wake-up event (CPython 3.11), and the loop must still end.
        while self._running:
            try:
                wait = self._timer_pass()
            except Exception as e:  # timers must outlive any bug: log, keep running
                self.log("timer: %r" % e)
                wait = 100
            self._wake.clear()
            await _wait_ms(self._wake.wait(), wait)

    def _timer_pass(self):
        """One pass of retransmissions, probes, level deadlines and keepalives; returns
        how long to sleep (ms, 1..1000: the pass also keeps old stamps in reach)."""
        now = self._now()
        due = [x for x in self._to_probe if diff(now, x[0]) >= 0]
        if due:
            self._to_probe = [x for x in self._to_probe if diff(now, x[0]) < 0]
            for _, host in due:
                self._probe(host)
        self.engine.tick(now)
        self._pump()
        self.levels.tick(now)
        self.decisions.tick(now)
        for key in self.discovery.tick(now):
            self.log("%s: no IKE answer, treated as legacy" % inet.unkey(key))
        if self.keepalive and (self._next_keepalive is None or
                               diff(now, self._next_keepalive) >= 0):
            self._send_keepalives(now)
        self._idle_checks(now)
        dl = self.next_due(now)
        return 1000 if dl is None else max(1, min(1000, dl))

    def next_due(self, now):
        """Milliseconds from `now` to the earliest timer of the node (<= 0: due), or
        None. The timer task sleeps at most 1 s anyway."""
        dl = _earliest(self.engine.next_deadline(now), self.levels.next_deadline(now),
                       self.discovery.next_deadline(now),
                       diff(self._next_keepalive, now) if self.keepalive and
                       self._next_keepalive is not None else None)
        for t, _ in self._to_probe:
            dl = _earliest(dl, diff(t, now))
        return _earliest(dl, self._idle_next(now))

    def _send_keepalives(self, now):
        self._next_keepalive = add(now, self.keepalive)
        for host in [self._track(p.out) for p in self._records() if p.out is not None]:
            try:
                self._send_natt(udpencap.KEEPALIVE, host)
                self.stats["keepalive_out"] += 1
            except OSError:
                pass

    def view(self):
        """{peer host: {"level": n, counters...}} for tables, JSON and tests."""
        out = {}
        for host in set(self.by_host) | set(h for h, _ in self.levels.peers()):
            d = {"level": self.levels.level(host)}
            p = self.by_host.get(host)
            if p is not None:
                d.update(p.stats)
            out[host] = d
        return out


def _order(p):
    return p.n


def _hex(b):
    import binascii
    return binascii.hexlify(b).decode()


async def _sleep_ms(n):
    f = getattr(asyncio, "sleep_ms", None)     # MicroPython: no float
    await (f(n) if f is not None else asyncio.sleep(n / 1000))


async def _wait_ms(aw, n):
    """Await `aw` for at most n ms (a timeout is not an error here)."""
    f = getattr(asyncio, "wait_for_ms", None)  # MicroPython: no float
    try:
        await (f(aw, n) if f is not None else asyncio.wait_for(aw, n / 1000))
    except asyncio.TimeoutError:
        pass


def _trusted(sa):
    """The SA's AUTH method gives configured trust (ike.auth: Psk, Ed25519)."""
    return sa.method is not None and sa.method.trusted


def _bounded_add(lst, item):
    """Append, keeping the newest _SA_SLOTS (an SA's entry goes when it does)."""
    lst.append(item)
    if len(lst) > _SA_SLOTS:
        lst.pop(0)


def _earliest(*times):
    best = None
    for t in times:
        if t is not None and (best is None or t < best):
            best = t
    return best


def _norm(host):
    return inet.norm(host)


def _in_ts(addr, ts_list):
    if not ts_list:
        return True
    for start, end in ts_list:
        if len(start) == len(addr) and start <= addr <= end:
            return True
    return False
