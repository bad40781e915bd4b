# Peers are identities (issue 12, items 1 and 6), in memory under MicroPython and
# CPython: the outside review's scenario. A and B are AUTHENTICATED (NULL auth plus the
# Ed25519 proof, trust on first use); then B's address changes from fd00::2 to fd00::3,
# either on the same SA (its ESP now comes from fd00::3) or by a new SA made from
# fd00::3 with the same key (B restarted there). A must label B's datagrams with B's
# identity and new address, report the identity's level at every address, never send
# to fd00::3 in clear, keep one record (and its counters) for B, and not leave the old
# SA up on its own. Plain asserts; imports only pnpipsec and what MicroPython has.

from pnpipsec import AUTHENTICATED, CLEAR
from pnpipsec.identity import Identity, fingerprint
from pnpipsec.node import Endpoint, Node, zero_config
from test_ike_mp import Rand  # the deterministic rand of these modules (same folder)

A, B, B2 = "fd00::1", "fd00::2", "fd00::3"
APP = 7000


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
    """A socket whose address the world can change under it (the host moved)."""

    def __init__(self, world, host, port):
        self.world, self.host, self.port = world, host, port

    def sendto(self, data, addr):
        self.world.send(self, bytes(data), addr)

    def close(self):
        pass


class World:
    def __init__(self, mobike=True):
        self.t = 1000
        self.aes = _aes()
        self.q = []
        self.wire = []          # (src, dst, dport, kind)
        self.nodes = {}
        self.a, self.ep_a = self.node(A, b"A")
        self.b, self.ep_b = self.node(B, b"B")
        # mobike=False: peers that do not speak MOBIKE (a NAT rebinding, say), whose
        # ESP from a new source a proved identity's record follows; on a MOBIKE SA only
        # UPDATE_SA_ADDRESSES and the return-routability check move anything
        self.a.engine.mobike = self.b.engine.mobike = mobike

    def node(self, host, seed):
        n = Node(Board(self, seed), Identity(Rand(seed + b"id")(32)), ike_port=500,
                 natt_port=4500, keepalive=0, accept_any=zero_config())
        n.sock_ike = Sock(self, host, 500)
        n.sock_natt = Sock(self, host, 4500)
        ep = Endpoint(n, APP)
        ep.sock = Sock(self, host, APP)     # the clear socket: anything on it is clear
        n.endpoints[APP] = ep
        self.nodes[host] = n
        return n, ep

    def move(self, node, host):
        """node's address changes: what it sends comes from `host`, what is sent to its
        old address reaches nobody."""
        for h in list(self.nodes):
            if self.nodes[h] is node:
                del self.nodes[h]
        for s in (node.sock_ike, node.sock_natt, node.endpoints[APP].sock):
            s.host = host
        self.nodes[host] = node

    def send(self, sock, data, addr):
        dst, dport = addr
        if dport == APP:
            kind = "clear"
        elif dport == 4500 and data[:4] != b"\0\0\0\0":
            kind = "esp" if len(data) > 1 else "keepalive"
        else:
            kind = "ike"
        self.wire.append((sock.host, dst, dport, kind))
        if dst in self.nodes:
            self.q.append((sock.host, sock.port, dst, dport, data))

    def settle(self):
        n = 0
        while self.q:
            src, sport, dst, dport, data = self.q.pop(0)
            node = self.nodes.get(dst)
            if node is None:
                continue
            if dport == APP:
                node._clear_in(node.endpoints[APP], data, (src, sport))
            else:
                node._datagram(data, (src, sport), node.sock_natt if dport == 4500 else
                               node.sock_ike, dport == 4500)
            n += 1
            assert n < 10000, "datagrams never stop"

    def timers(self, passes=4):
        for _ in range(passes):
            for n in list(self.nodes.values()):
                n._timer_pass()
                self.settle()
            self.t += 10

    def up(self):
        self.a._probe(B, True)
        self.settle()
        self.timers()
        assert self.a.level(B) == AUTHENTICATED and self.b.level(A) == AUTHENTICATED
        return self

    def got(self, ep):
        items = ep._items
        ep._items = []
        return items

    def since(self, n):
        return self.wire[n:]


def _send(node, data, addr):
    """node.send: it either finishes at once (ESP, or clear; returns the level) or would
    wait for a level ("held"). In a short event loop where the port has asyncio.run
    (driving the coroutine by hand crashes MicroPython's unix port once it awaits an
    asyncio primitive); by hand on the WebAssembly port, whose asyncio is the host's
    loop and has no run()."""
    import asyncio
    if getattr(asyncio, "run", None) is None:
        c = node.send(data, addr, APP)
        try:
            c.send(None)
        except StopIteration as e:
            return e.args[0] if e.args else None
        c.close()
        return "held"

    async def go():
        try:
            return await asyncio.wait_for(node.send(data, addr, APP), 0.05)
        except asyncio.TimeoutError:
            return "held"
    return asyncio.run(go())


def _fp(node):
    return fingerprint(node.identity.public)


def test_esp_from_a_new_address_is_the_same_peer():
    w = World(mobike=False).up()
    rec = w.a.by_host.get(B)
    w.move(w.b, B2)                        # same SA; B's datagrams now come from fd00::3
    w.b.send_esp(b"moved", (A, APP), APP)
    w.settle()
    items = w.got(w.ep_a)
    assert len(items) == 1
    data, (host, port), level = items[0]   # unpacks as three, as before
    assert data == b"moved" and host == B2 and port == APP and level == AUTHENTICATED
    assert items[0].peer == _fp(w.b) and items[0].addr == (B2, APP)
    # one record for B at both addresses, at the identity's level
    assert w.a.by_host.get(B2) is rec and rec.addrs == [B2, B] and rec.fp == _fp(w.b)
    assert w.a.level(B2) == w.a.level(B) == AUTHENTICATED
    assert w.a.levels.level(B2) == AUTHENTICATED
    # the reply to fd00::3 leaves in ESP, never in clear
    n = len(w.wire)
    assert _send(w.a, b"reply", (B2, APP)) == AUTHENTICATED
    sent = w.since(n)
    assert [x for x in sent if x[3] == "clear"] == [] and [x[3] for x in sent] == ["esp"], sent
    assert sent[0][1] == B          # in the SA, to the SA's address (the engine moves it)
    # statistics belong to the identity
    assert rec.stats["esp_in"] >= 1 and rec.stats["esp_out"] >= 1 and rec.stats["clear_out"] == 0
    assert w.a.peer_stats[B2] is w.a.peer_stats[B]


class Moved:
    kind = "sa_moved"

    def __init__(self, sa):
        self.sa = sa


def test_once_the_sa_moves_the_reply_reaches_the_new_address():
    w = World().up()
    w.move(w.b, B2)
    sa = w.a.by_host.get(B).ike
    sa.peer_addr = (B2, sa.peer_addr[1])   # what MOBIKE's UPDATE_SA_ADDRESSES does
    for ch in sa.children:
        ch.peer_addr = sa.peer_addr
    w.a.engine.events.append(Moved(sa))    # the engine's event about it
    w.a._pump()
    n = len(w.wire)
    assert _send(w.a, b"reply", (B2, APP)) == AUTHENTICATED
    w.settle()
    assert [x[1] for x in w.since(n)] == [B2], w.since(n)
    items = w.got(w.ep_b)
    assert len(items) == 1 and items[0].data == b"reply" and items[0].peer == _fp(w.a)
    assert w.a.by_host.get(B2) is w.a.by_host.get(B) and w.a.by_host.get(B).host == B2


def test_a_sticky_address_of_the_identity_never_gets_clear():
    # B moved and is silent: A knows fd00::3 only from B's ESP. With the SA gone (B's
    # state lost), a send to fd00::3 waits for IPsec instead of leaving in clear.
    w = World(mobike=False).up()
    w.move(w.b, B2)
    w.b.send_esp(b"here", (A, APP), APP)
    w.settle()
    sa = w.a.by_host.get(B).ike
    w.a.engine.abandon(sa, w.t)
    w.a._pump()
    w.settle()
    assert w.a.level(B2) == CLEAR
    from pnpipsec import inet
    from pnpipsec.discovery import SEND_CLEAR
    from pnpipsec.policy import Action, OPPORTUNISTIC
    what, probe, why = w.a.discovery.on_send(inet.pton(B2), Action(OPPORTUNISTIC), CLEAR, w.t)
    assert what != SEND_CLEAR and why == "sticky", (what, why)
    n = len(w.wire)
    try:
        _send(w.a, b"secret", (B2, APP))    # waits for IPsec (no event loop here)
    except Exception:
        pass
    assert [x for x in w.since(n) if x[3] == "clear"] == []


def test_a_new_sa_from_a_new_address_with_the_same_key_joins_the_peer():
    w = World().up()
    old = w.a.by_host.get(B)
    old_sa = old.ike
    w.b.send_esp(b"before", (A, APP), APP)
    w.settle()
    w.got(w.ep_a)
    # B restarts at fd00::3 with the same key and makes a new SA to A
    del w.nodes[B]
    b2, ep_b2 = w.node(B2, b"B")
    assert b2.identity.public == w.b.identity.public
    b2._probe(A, True)
    w.settle()
    w.timers()
    rec = w.a.by_host.get(B2)
    assert rec is w.a.by_host.get(B) is old and w.a.peer_by_id(_fp(b2)) is rec
    assert rec.addrs[0] == B2 and B in rec.addrs
    assert rec.ike is not old_sa and rec.ike.peer_addr[0] == B2
    # the identity's level at every address; the old SA is not left up on its own
    assert w.a.level(B2) == w.a.level(B) == AUTHENTICATED
    assert old_sa.state != "established", old_sa.state
    assert rec.out.child.ike is rec.ike
    # the app sees the identity and the new address
    b2.send_esp(b"after", (A, APP), APP)
    w.settle()
    items = w.got(w.ep_a)
    assert len(items) == 1 and items[0].addr == (B2, APP) and items[0].peer == _fp(b2)
    # a reply to either address goes in the new SA, to fd00::3
    for dst in (B, B2):
        n = len(w.wire)
        assert _send(w.a, b"reply", (dst, APP)) == AUTHENTICATED
        assert [(x[1], x[3]) for x in w.since(n)] == [(B2, "esp")], w.since(n)
    w.settle()
    assert [x.data for x in w.got(ep_b2)] == [b"reply", b"reply"]
    # counters of both addresses in one record
    assert rec.stats["esp_in"] == 2 and rec.stats["esp_out"] == 2
    assert len([p for p in w.a._records() if p.fp == _fp(b2)]) == 1
