# MOBIKE (RFC 4555) state machine under MicroPython (and CPython): two engines in
# memory, the original initiator "a" moves from A1 to A2; the original responder "b"
# answers the authenticated UPDATE_SA_ADDRESSES, checks return routability and only
# then moves the SA. Spoofed and unauthenticated packets never move it. Plain asserts;
# imports only pnpipsec and modules MicroPython has.

import hashlib

from pnpipsec import esp
from pnpipsec.crypto.aes_pure import PureAES
from pnpipsec.ike import codec
from pnpipsec.ike.engine import Engine
from pnpipsec.ike.sa import LocalIdentity, PeerConfig

A1 = "fd00:1::1"
A2 = "fd00:2::1"
EVIL = "fd00:66::6"
B = "fd00:1::2"
AES = PureAES()

N_NAT_D_SRC = 16388
N_NAT_D_DST = 16389
N_MOBIKE_SUPPORTED = 16396
N_UPDATE_SA_ADDRESSES = 16400
N_COOKIE2 = 16401


class Rand:
    def __init__(self, seed):
        self.seed = seed
        self.n = 0

    def __call__(self, n):
        out = b""
        while len(out) < n:
            self.n += 1
            out += hashlib.sha256(self.seed + self.n.to_bytes(4, "big")).digest()
        return out[:n]


class Net:
    """a at host self.a_host (port 4500 after IKE_SA_INIT), b at B. Datagrams to a
    host other than where a is are lost (and kept in self.lost)."""

    def __init__(self, a, b):
        self.a, self.b = a, b
        self.a_host = A1
        self.lost = []
        self.to_a = []      # (data, addr) a received
        self.to_b = []      # (data, source) b received

    def run(self, now=0, rounds=12):
        for _ in range(rounds):
            moved = False
            for d, to in self.a.pop_datagrams():
                moved = True
                src = (self.a_host, 4500)
                self.to_b.append((d, src))
                self.b.receive(d, src, now)
            for d, to in self.b.pop_datagrams():
                moved = True
                if to[0] != self.a_host:
                    self.lost.append((d, to))
                    continue
                self.to_a.append((d, to))
                self.a.receive(d, (B, to[1]), now)
            if not moved:
                break


def _up(b_mobike=True, a_addrs=None):
    a = Engine(Rand(b"a"), AES, LocalIdentity())
    b = Engine(Rand(b"b"), AES, LocalIdentity())
    b.mobike = b_mobike
    if a_addrs is not None:
        a.local_addrs = a_addrs
    net = Net(a, b)
    sa_a = a.initiate((B, 500), PeerConfig(), 0)
    net.run()
    ea = [e.kind for e in a.pop_events()]
    eb = b.pop_events()
    assert ea == ["ike_up", "child_up"], ea
    assert [e.kind for e in eb] == ["ike_up", "child_up"], eb
    return a, b, net, sa_a, eb[0].sa


def _open(eng, data, sa, from_initiator):
    msg = codec.parse(data)
    k = sa.keys
    if from_initiator:
        codec.decrypt(msg, k.sk_ei, k.sk_ai, AES)
    else:
        codec.decrypt(msg, k.sk_er, k.sk_ar, AES)
    return msg


def _esp_flows(ca, cb):
    out = esp.EspOut(ca.spi_out, ca.enc_out, ca.int_out, AES, Rand(b"e"))
    inp = esp.EspIn(cb.spi_in, cb.enc_in, cb.int_in, AES)
    nh, payload = inp.open(out.seal(b"after the move", 17))
    return payload == b"after the move"


def test_mobike_supported_negotiated():
    a, b, net, sa_a, sa_b = _up()
    assert sa_a.mobike and sa_b.mobike
    # both directions carried N(MOBIKE_SUPPORTED)
    req = _open(b, net.to_b[1][0], sa_b, True)
    resp = _open(a, net.to_a[1][0], sa_a, False)
    assert req.notify(N_MOBIKE_SUPPORTED) is not None
    assert resp.notify(N_MOBIKE_SUPPORTED) is not None
    a, b, net, sa_a, sa_b = _up(b_mobike=False)
    assert not sa_a.mobike and not sa_b.mobike
    assert not a.move(sa_a, A2, now=1000)


def test_initiator_moves_after_return_routability():
    a, b, net, sa_a, sa_b = _up()
    ca, cb = sa_a.children[0], sa_b.children[0]
    spis = (ca.spi_in, ca.spi_out, sa_a.spi_i, sa_a.spi_r)
    net.a_host = A2
    assert a.move(sa_a, A2, now=1000)
    out = a.pop_datagrams()
    assert len(out) == 1 and out[0][1] == (B, 4500)
    upd = _open(b, out[0][0], sa_b, True)
    assert upd.notify(N_UPDATE_SA_ADDRESSES) is not None and upd.notify(N_COOKIE2) is not None
    b.receive(out[0][0], (A2, 4500), 1000)
    got = b.pop_datagrams()
    # the answer goes where the UPDATE came from; then the check, to the new address
    assert [to for _, to in got] == [(A2, 4500), (A2, 4500)], got
    assert sa_b.peer_addr == (A1, 4500)     # not yet: return routability first
    ans = _open(a, got[0][0], sa_a, False)
    assert ans.notify(N_COOKIE2)[3] == upd.notify(N_COOKIE2)[3]
    rr = _open(a, got[1][0], sa_a, False)
    assert rr.notify(N_COOKIE2) is not None and not rr.is_response
    assert b.stats.get("rr_sent") == 1
    for d, to in got:
        a.receive(d, (B, 4500), 1000)
    echo = a.pop_datagrams()
    assert len(echo) == 1
    assert _open(b, echo[0][0], sa_b, True).notify(N_COOKIE2)[3] == rr.notify(N_COOKIE2)[3]
    b.receive(echo[0][0], (A2, 4500), 1000)
    ev = b.pop_events()
    assert [e.kind for e in ev] == ["ike_moved"], ev
    assert ev[0].old == (A1, 4500) and ev[0].new == (A2, 4500)
    assert sa_b.peer_addr == (A2, 4500) and cb.peer_addr == (A2, 4500)
    assert b.hosts.get(A2) == [sa_b] and A1 not in b.hosts
    assert (ca.spi_in, ca.spi_out, sa_a.spi_i, sa_a.spi_r) == spis
    assert sa_b.children == [cb] and cb.state == "up"
    assert _esp_flows(ca, cb) and _esp_flows(cb, ca)
    # IKE continues at the new address: a liveness check from b reaches A2
    b.check_liveness(sa_b, 2000)
    net.run(2000)
    assert not net.lost and sa_b.pending is None
    assert b.stats.get("moved") == 1 and not b.stats.get("rr_failed")


def test_spoofed_update_refused():
    a, b, net, sa_a, sa_b = _up()
    a.move(sa_a, A2, now=1000)
    (data, _), = a.pop_datagrams()
    bad = bytearray(data)
    bad[-1] ^= 1                            # a forged ICV
    b.receive(bytes(bad), (EVIL, 4500), 1000)
    assert b.stats.get("drop_icv") == 1
    assert b.pop_datagrams() == [] and b.pop_events() == []
    assert sa_b.peer_addr == (A1, 4500)
    # a valid packet of this SA from a new address without UPDATE: answered, not moved
    a.check_liveness(sa_a, 1000)            # queued behind the UPDATE
    b.receive(data, (A1, 4500), 1000)       # the real UPDATE, from the old address
    net.run(1000)
    assert sa_b.peer_addr == (A1, 4500) and not b.stats.get("rr_sent")
    a.check_liveness(sa_a, 2000)
    (ping, _), = a.pop_datagrams()
    b.receive(ping, (EVIL, 4500), 2000)
    # (answered where it came from, as RFC 7296 section 2.11 wants: a path check)
    assert [to for _, to in b.pop_datagrams()] == [(EVIL, 4500)]
    assert sa_b.peer_addr == (A1, 4500) and b.pop_events() == []
    assert b.stats.get("moved") is None and b.stats.get("rr_sent") is None
    # the UPDATE replayed from a spoofed source after all this: moves nothing
    b.receive(data, (EVIL, 4500), 3000)
    b.pop_datagrams()
    assert sa_b.peer_addr == (A1, 4500) and b.pop_events() == []
    # the original initiator never moves on the responder's UPDATE
    assert not b.move(sa_b, None, (EVIL, 4500), 3000) or sa_b.peer_addr == (A1, 4500)


def test_spoofed_source_after_move_refused():
    a, b, net, sa_a, sa_b = _up()
    net.a_host = A2
    a.move(sa_a, A2, now=1000)
    net.run(1000)
    assert sa_b.peer_addr == (A2, 4500)
    b.pop_events()
    # an attacker replays the (authenticated) UPDATE from his own address
    upd = [d for d, src in net.to_b if src[0] == A2][0]
    b.receive(upd, (EVIL, 4500), 2000)
    b.pop_datagrams()
    # a fresh UPDATE under a's keys from a spoofed source: checked, refused
    a.move(sa_a, A2, now=3000)
    (fresh, _), = a.pop_datagrams()
    b.receive(fresh, (EVIL, 4500), 3000)
    out = b.pop_datagrams()
    assert [to[0] for _, to in out] == [EVIL, EVIL]     # answer, check: both to EVIL
    for t in (3500, 4500, 6500):
        b.tick(t)
    late = b.pop_datagrams()
    # 3 sends to EVIL unanswered: the check goes on to the address that is proven
    assert [to[0] for _, to in late] == [EVIL, EVIL, A2], late
    assert b.stats.get("rr_failed") == 1
    for d, to in late[-1:]:
        a.receive(d, (B, 4500), 6500)
    net.run(6500)
    assert sa_b.peer_addr == (A2, 4500) and b.pop_events() == []
    assert b.stats.get("moved") == 1


def test_rr_failure_keeps_old_address():
    a, b, net, sa_a, sa_b = _up()
    net.a_host = A2                          # a sends from A2, but A2 hears nothing
    a.move(sa_a, A2, now=1000)
    (upd, _), = a.pop_datagrams()
    net.a_host = A1                          # ... it really is back at A1
    b.receive(upd, (A2, 4500), 1000)
    assert [to[0] for _, to in b.pop_datagrams()] == [A2, A2]
    now = 1000
    sent = []
    for _ in range(8):
        now += 1000
        b.tick(now)
        sent += b.pop_datagrams()
        if sent and sent[-1][1][0] == A1:
            break
    assert [to[0] for _, to in sent][-1] == A1 and b.stats.get("rr_failed") == 1
    a.receive(sent[-1][0], (B, 4500), now)
    net.run(now)
    assert sa_b.peer_addr == (A1, 4500) and sa_b.pending is None
    assert b.pop_events() == [] and b.stats.get("moved") is None
    assert sa_b.state == "established" and sa_b.children[0].state == "up"


def test_natd_recomputed():
    a, b, net, sa_a, sa_b = _up()
    net.a_host = A2
    a.move(sa_a, A2, now=1000)
    net.run(1000)
    upd = _open(b, [d for d, s in net.to_b if s[0] == A2][0], sa_b, True)
    ans = [_open(a, d, sa_a, False) for d, to in net.to_a if to[0] == A2]
    ans = [m for m in ans if m.is_response][0]
    for m in (upd, ans):
        assert len(m.notify(N_NAT_D_SRC)[3]) == 20 and len(m.notify(N_NAT_D_DST)[3]) == 20
    # made anew: not the IKE_SA_INIT values, not the same in both messages
    first = codec.parse(net.to_b[0][0])
    vals = [first.notify(N_NAT_D_SRC)[3], first.notify(N_NAT_D_DST)[3]]
    for m in (upd, ans):
        for t in (N_NAT_D_SRC, N_NAT_D_DST):
            assert m.notify(t)[3] not in vals
            vals.append(m.notify(t)[3])
    # a second move: new values again
    a.move(sa_a, A2, now=2000)
    net.run(2000)
    upd2 = _open(b, net.to_b[-1][0], sa_b, True)
    assert upd2.notify(N_UPDATE_SA_ADDRESSES) is not None
    assert upd2.notify(N_NAT_D_DST)[3] not in vals


def test_additional_addresses():
    a, b, net, sa_a, sa_b = _up(a_addrs=[A1, A2, "fe80::1", "10.0.0.7"])
    assert sa_b.peer_addrs == [A1, A2, "10.0.0.7"]
    assert sa_a.peer_addrs is None           # b never said its addresses
    b.set_local_addresses([B], 1000)         # first list: nothing went, nothing sent
    assert b.pop_datagrams() == []
    b.set_local_addresses(["fd00:9::2"], 2000)
    net.run(2000)
    assert sa_a.peer_addrs == ["fd00:9::2"]
    b.set_local_addresses([], 3000)
    net.run(3000)
    assert sa_a.peer_addrs == []             # NO_ADDITIONAL_ADDRESSES
    assert sa_b.peer_addr == (A1, 4500) and sa_a.peer_addr == (B, 4500)
    # a's address went away: a (original initiator) sends UPDATE_SA_ADDRESSES
    net.a_host = A2
    told = a.set_local_addresses([A2], 4000)
    assert told == [sa_a]
    net.run(4000)
    assert sa_b.peer_addr == (A2, 4500) and sa_b.peer_addrs == [A2]
    assert [e.kind for e in b.pop_events()] == ["ike_moved"]


def test_mobike_survives_ike_rekey():
    a, b, net, sa_a, sa_b = _up()
    a.rekey_ike(sa_a, 1000)
    net.run(1000)
    ev = [e for e in a.pop_events() if e.kind == "ike_rekeyed"]
    assert ev and ev[0].new.mobike
    b.pop_events()
    net.a_host = A2
    assert a.move(ev[0].new, A2, now=2000)
    net.run(2000)
    assert [e.kind for e in b.pop_events()] == ["ike_moved"]
