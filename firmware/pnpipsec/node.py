"""Node runtime on asyncio: the board's sockets around the sans-IO engine and ESP.

Runs unchanged on CPython and MicroPython asyncio (no Queue, no datagram transports:
the board's socket offers `await recvfrom()` and `sendto()`).

Ports: `ike_port` (500 in interop) carries marker-less IKE; `natt_port` (4500) carries
RFC 3948 traffic: IKE behind the non-ESP marker, ESP, keepalives. A peer whose
ike_port equals its natt_port is spoken to on the NAT-T port only (our nodes may
start directly on 4500).
"""

import asyncio

from pnpipsec import CLEAR, ENCRYPTED, AUTHENTICATED
from pnpipsec import esp, inet, udpencap
from pnpipsec.ike import engine as ike

_IKE_SA_INIT = 34
_FLAG_RESPONSE = 0x20


class NodeError(Exception):
    pass


class PeerEntry:
    """Where a configured peer lives and how to talk IKE with it."""

    def __init__(self, host, cfg, ike_port=500, natt_port=4500):
        self.host = host
        self.cfg = cfg
        self.ike_port = ike_port
        self.natt_port = natt_port


class _Child:
    """One installed CHILD SA: the engine's record plus its two ESP directions."""

    def __init__(self, child, aes, rand, soft_packets):
        self.child = child
        self.rekey_asked = False
        self.out = esp.EspOut(child.spi_out, child.enc_out, child.int_out, aes, rand,
                              soft_packets=soft_packets)
        self.inp = esp.EspIn(child.spi_in, child.enc_in, child.int_in, aes)
        self.host = _norm(child.peer_addr[0])
        self.level = AUTHENTICATED if child.ike.auth in ("psk", "pubkey") else ENCRYPTED


class Endpoint:
    """A UDP-like port whose datagrams travel inside the SA to each peer."""

    def __init__(self, node, port, limit=64):
        self.node = node
        self.port = port
        self._items = []
        self._limit = limit
        self._event = asyncio.Event()
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

    def send(self, data, addr):
        self.node.send(data, addr, self.port)


class Node:
    def __init__(self, board, identity, peers=(), ike_port=500, natt_port=4500,
                 addresses=(), keylog=None, log=None, accept_any=None,
                 keepalive=20.0, esp_soft_packets=1 << 31):
        self.board = board
        self.peers = list(peers)
        self.ike_port = ike_port
        self.natt_port = natt_port
        self.addresses = list(addresses)
        self.keylog = keylog
        self.log = log or (lambda msg: None)
        self.accept_any = accept_any  # PeerConfig for unknown initiators, or None
        # RFC 3948 section 4: NAT keepalives hold the mapping open (we always claim NAT).
        self.keepalive = keepalive
        self.esp_soft_packets = esp_soft_packets
        self._next_keepalive = 0.0
        local = ike.LocalIdentity(ed25519_seed=identity.seed if identity else None)
        # A board may offer faster DH / signatures (the host board: OpenSSL); same API.
        self.engine = ike.Engine(board.rand, board.aes, local, policy=self._policy,
                                 natt_ports=(ike_port, natt_port),
                                 dh=getattr(board, "dh", None), sig=getattr(board, "sig", None))
        self.children = {}      # spi_in -> _Child
        self.out = {}           # peer host -> _Child used for sending
        self.endpoints = {}
        self.stats = {"esp_in": 0, "esp_out": 0, "esp_drop": 0, "bad_datagram": 0,
                      "no_sa": 0, "inner_refused": 0, "keepalive_in": 0, "keepalive_out": 0}
        self._arrival = {}      # peer (host, port) -> socket the last request came in on
        self._natt_seen = {}    # peer host -> its NAT-T source port
        self._waiters = []
        self._failed = {}       # peer host -> why its last SA attempt ended
        self._initiating = {}   # peer host -> IkeSA we started and that is not up yet
        self.ike_up = {}        # peer host -> established IkeSA
        self._wake = asyncio.Event()
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
        self._tasks.append(asyncio.create_task(self._timer()))

    async def stop(self):
        for t in self._tasks:
            t.cancel()
        self._tasks = []
        for s in (self.sock_ike, self.sock_natt):
            if s is not None:
                s.close()

    def endpoint(self, port):
        ep = self.endpoints.get(port)
        if ep is None:
            ep = self.endpoints[port] = Endpoint(self, port)
        return ep

    # -- peers and SAs -----------------------------------------------------------
    def peer_for(self, host):
        key = inet.pton(host)
        for p in self.peers:
            if p.host != "any" and inet.pton(p.host) == key:
                return p
        return None

    def _policy(self, peer_addr, peer_id, auth_method):
        p = self.peer_for(peer_addr[0])
        if p is not None:
            return p.cfg
        return self.accept_any

    def level(self, host):
        c = self.out.get(_norm(host))
        return c.level if c else CLEAR

    async def connect(self, host, timeout=10):
        """Bring up an SA with a configured peer; returns its level or raises NodeError."""
        host = _norm(host)
        await self._bring_up(host, timeout, lambda: host in self.out)
        return self.out[host].level

    async def connect_ike(self, host, timeout=10):
        """Bring up the IKE SA only (enough for a childless peer); returns the IkeSA."""
        host = _norm(host)
        await self._bring_up(host, timeout, lambda: host in self.ike_up)
        return self.ike_up[host]

    async def _bring_up(self, host, timeout, done):
        if done():
            return
        p = self.peer_for(host)
        if p is None:
            raise NodeError("no peer configured for %s" % host)
        self._failed.pop(host, None)
        if host not in self._initiating and host not in self.ike_up:
            port = p.ike_port if p.ike_port != p.natt_port else p.natt_port
            self._initiating[host] = self.engine.initiate((host, port), p.cfg, self.board.now())
            self._pump()
        deadline = self.board.now() + timeout
        ev = asyncio.Event()
        self._waiters.append(ev)
        try:
            while not done():
                reason = self._failed.get(host)
                if reason:
                    raise NodeError("SA with %s failed: %s" % (host, reason))
                left = deadline - self.board.now()
                if left <= 0:
                    raise NodeError("no SA with %s after %s s" % (host, timeout))
                ev.clear()
                try:
                    await asyncio.wait_for(ev.wait(), left)
                except asyncio.TimeoutError:
                    pass
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

    def _datagram(self, data, addr, sock, natt):
        now = self.board.now()
        if not natt:
            self._ike_in(data, addr, sock, now)
            return
        self._natt_seen[addr[0]] = addr[1]
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
        if len(msg) > 19 and not msg[19] & _FLAG_RESPONSE:
            self._arrival[addr] = sock
        self.engine.receive(msg, addr, now)
        self._pump()

    def _esp_in(self, packet, addr):
        spi = int.from_bytes(packet[0:4], "big")
        c = self.children.get(spi)
        if c is None:
            self.stats["no_sa"] += 1
            return
        try:
            nh, payload = c.inp.open(packet)
        except esp.EspDrop:
            self.stats["esp_drop"] += 1
            return
        self.stats["esp_in"] += 1
        if nh == 59:
            return
        if nh == 17:
            sport, dport, data = inet.parse_udp(payload)
            src = c.host
        elif nh in (41, 4):
            src_b, dst_b, sport, dport, data = inet.parse_ip_udp(payload)
            if not (_in_ts(src_b, c.child.remote_ts) and _in_ts(dst_b, c.child.local_ts)):
                # The SA vouches only for its selectors: a spoofed inner source is refused.
                self.stats["inner_refused"] += 1
                return
            src = inet.ntop(src_b)
        else:
            self.stats["inner_refused"] += 1
            return
        ep = self.endpoints.get(dport)
        if ep is not None:
            ep._deliver((data, (src, sport), c.level))

    # -- datagrams to the sockets ------------------------------------------------
    def send(self, data, addr, sport):
        host = _norm(addr[0])
        c = self.out.get(host)
        if c is None:
            raise NodeError("no SA with %s: call connect() first" % host)
        if c.child.mode == "tunnel":
            src = self._inner_source(c, host)
            nh, payload = inet.build_ip_udp(src, inet.pton(host), sport, addr[1], data)
        else:
            # Checksum 0: the ESP ICV already covers these bytes (see inet's docstring).
            payload = inet.build_udp(sport, addr[1], data)
            nh = 17
        packet = c.out.seal(payload, nh)
        self.stats["esp_out"] += 1
        self._send_natt(packet, host)
        if c.out.needs_rekey and not c.rekey_asked:
            # Soft sequence limit: rekey long before the 32-bit counter could wrap.
            c.rekey_asked = True
            self.engine.rekey_child(c.child, self.board.now())
            self._pump()

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
        port = self._natt_seen.get(host)
        if port is None:
            p = self.peer_for(host)
            port = p.natt_port if p else 4500
        self.sock_natt.sendto(data, (host, port))

    def _send_ike(self, msg, addr):
        if msg[19] & _FLAG_RESPONSE:
            sock = self._arrival.get(addr, self.sock_natt)
            if sock is self.sock_natt:
                sock.sendto(udpencap.MARKER + msg, addr)
            else:
                sock.sendto(msg, addr)
            return
        host = addr[0]
        p = self.peer_for(host)
        if msg[18] == _IKE_SA_INIT and self.sock_ike is not None and addr[1] != self.natt_port \
                and (p is None or p.ike_port != p.natt_port):
            self.sock_ike.sendto(msg, addr)
        else:
            self._send_natt(udpencap.MARKER + msg, host)

    # -- engine output -------------------------------------------------------------
    def _pump(self):
        for msg, addr in self.engine.pop_datagrams():
            try:
                self._send_ike(msg, addr)
            except OSError as e:
                self.log("send to %s failed: %s" % (addr[0], e))
        for ev in self.engine.pop_events():
            self._event(ev)
        self._wake.set()

    def _event(self, ev):
        name = ev.__class__.__name__
        if name == "IkeUp":
            host = _norm(ev.sa.peer_addr[0])
            self.ike_up[host] = ev.sa
            self._initiating.pop(host, None)
            if self.keylog is not None:
                self.keylog.ike(ev.sa)
        elif name == "ChildUp":
            self._install(ev.child)
        elif name == "ChildRekeyed":
            self._install(ev.new)
        elif name == "ChildDown":
            self._remove(ev.child)
        elif name in ("IkeDown", "AuthFailed"):
            sa = ev.sa
            host = _norm(sa.peer_addr[0])
            self._failed[host] = ev.reason
            self._initiating.pop(host, None)
            if self.ike_up.get(host) is sa:
                del self.ike_up[host]
            for ch in list(getattr(sa, "children", ())):
                self._remove(ch)
        self.log("%s %s" % (name, getattr(ev, "reason", "")))
        for w in self._waiters:
            w.set()

    def _install(self, child):
        c = _Child(child, self.board.aes, self.board.rand, self.esp_soft_packets)
        self.children[child.spi_in] = c
        self.out[c.host] = c
        self._failed.pop(c.host, None)
        self._initiating.pop(c.host, None)
        if self.keylog is not None:
            self.keylog.esp(child)

    def _remove(self, child):
        self.children.pop(child.spi_in, None)
        for host, c in list(self.out.items()):
            if c.child is child:
                del self.out[host]

    async def _timer(self):
        while True:
            now = self.board.now()
            self.engine.tick(now)
            self._pump()
            if self.keepalive and now >= self._next_keepalive:
                self._send_keepalives(now)
            dl = self.engine.next_deadline()
            if self.keepalive:
                dl = self._next_keepalive if dl is None else min(dl, self._next_keepalive)
            wait = 1.0 if dl is None else max(0.001, min(1.0, dl - now))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except asyncio.TimeoutError:
                pass


    def _send_keepalives(self, now):
        self._next_keepalive = now + self.keepalive
        for host in list(self.out):
            try:
                self._send_natt(udpencap.KEEPALIVE, host)
                self.stats["keepalive_out"] += 1
            except OSError:
                pass


def _norm(host):
    return inet.ntop(inet.pton(host))


def _in_ts(addr, ts_list):
    if not ts_list:
        return True
    for start, end in ts_list:
        if len(start) == len(addr) and start <= addr <= end:
            return True
    return False
