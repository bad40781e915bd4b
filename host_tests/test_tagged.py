"""Tagged engine output (issue 10, item 6): every datagram the engine queues carries
what the node needs to send it -- destination, response or request, exchange type,
our IKE SPI, and for a response the arrival tag (`via`) of the request it answers --
and the node picks its socket from the tag, never from the header bytes.

The oracle for the tag is the header itself, decoded by pnpipsec.ike.codec."""

import os
import sys

from pnp_hostboard.crypto import CryptographyAES, fast_ed25519, fast_x25519
from pnpipsec import udpencap
from pnpipsec.ike import codec, const as C
from pnpipsec.ike.engine import Engine
from pnpipsec.ike.sa import LocalIdentity, PeerConfig

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "mp"))
import test_time_mp as world  # noqa: E402

AES = CryptographyAES()
A_HOST, B_HOST = "10.0.0.1", "10.0.0.2"
ZERO8 = b"\x00" * 8


def check_tag(rec, eng):
    """The record's fields against the header codec decodes from its bytes."""
    data, addr, response, exch, spi, via = rec
    m = codec.parse(data)
    assert response == m.is_response
    assert exch == m.exch
    if response and m.spi_r == ZERO8:
        assert spi is None                  # a stateless IKE_SA_INIT answer
    else:
        # ours: SPIi when we initiated the IKE SA (its I flag), else SPIr
        assert spi == (m.spi_i if m.from_initiator else m.spi_r)
    if not response:
        assert via is None
    return m


class Pair:
    """A (initiator) and B (responder) engines; each delivery says which of B's
    sockets it came in on (via), and every record is checked against its header."""

    def __init__(self, b_policy=None, **kw):
        self.now = 0
        self.a = Engine(os.urandom, AES, LocalIdentity())
        self.b = Engine(os.urandom, AES, LocalIdentity(), b_policy, **kw)
        self.b_via = "sock500"          # B's socket A's next datagram arrives on
        self.seen = []                  # (side, record, parsed message)

    def step(self):
        moved = False
        for rec in self.a.pop_tagged():
            moved = True
            self.seen.append(("a", rec, check_tag(rec, self.a)))
            self.b.receive(rec[0], (A_HOST, rec[1][1]), self.now, self.b_via)
        for rec in self.b.pop_tagged():
            moved = True
            self.seen.append(("b", rec, check_tag(rec, self.b)))
            self.a.receive(rec[0], (B_HOST, 500 if rec[3] == C.IKE_SA_INIT else 4500),
                           self.now, "a-sock")
        return moved

    def settle(self):
        while self.step():
            pass


def test_every_record_matches_its_header_through_a_life():
    p = Pair()
    sa = p.a.initiate((B_HOST, 500), PeerConfig(), 0)
    p.settle()
    assert sa.state == "established"
    p.b_via = "sock4500"
    p.a.create_child(sa, p.now)
    p.settle()
    child = sa.children[0]
    p.a.rekey_child(child, p.now)
    p.settle()
    p.a.check_liveness(sa, p.now)
    p.settle()
    p.a.rekey_ike(sa, p.now)
    p.settle()
    new = [s for s in p.a.sas.values() if s.state == "established"][0]
    p.a.delete(new, p.now)
    p.settle()
    exchs = set((side, rec[3], rec[2]) for side, rec, _ in p.seen)
    for e in (C.IKE_SA_INIT, C.IKE_AUTH, C.CREATE_CHILD_SA, C.INFORMATIONAL):
        assert ("a", e, False) in exchs and ("b", e, True) in exchs, e
    for side, rec, m in p.seen:
        if side == "b":
            # B only answers here, and each answer carries the socket its request
            # arrived on: IKE_SA_INIT and IKE_AUTH came on 500, the rest on 4500
            assert rec[2] and rec[5] == ("sock500" if m.exch in (C.IKE_SA_INIT, C.IKE_AUTH)
                                         else "sock4500"), (m.exch, rec[5])


def test_retransmission_answer_goes_back_the_way_the_retransmission_came():
    """Two copies of one request from the same address and port on different sockets
    of ours: each answer (the second a replay) carries its own copy's socket."""
    p = Pair()
    p.a.initiate((B_HOST, 500), PeerConfig(), 0)
    (init,) = p.a.pop_tagged()
    p.b.receive(init[0], (A_HOST, 500), 0, "sock500")
    p.b.receive(init[0], (A_HOST, 500), 0, "sock4500")
    r1, r2 = p.b.pop_tagged()
    assert r1[0] == r2[0] and p.b.stats["replay"] == 1
    assert (r1[1], r1[5]) == ((A_HOST, 500), "sock500")
    assert (r2[1], r2[5]) == ((A_HOST, 500), "sock4500")
    for r in (r1, r2):
        m = check_tag(r, p.b)
        assert r[2] and r[3] == C.IKE_SA_INIT and r[4] == m.spi_r != ZERO8


def test_stateless_answers_are_tagged_without_an_spi():
    refuse = Pair(b_policy=lambda addr, pid, m: None)
    refuse.a.initiate((B_HOST, 500), PeerConfig(), 0)
    refuse.step()
    (no,) = [r for s, r, _ in refuse.seen if s == "b"]
    assert no[2] and no[3] == C.IKE_SA_INIT and no[4] is None and no[5] == "sock500"
    assert codec.parse(no[0]).notify(C.N_NO_PROPOSAL_CHOSEN) is not None
    # under load: a cookie from the header alone, tagged the same way
    load = Pair(cookie_threshold=0)
    load.a.initiate((B_HOST, 500), PeerConfig(), 0)
    load.b_via = "sock4500"
    load.step()
    (ck,) = [r for s, r, _ in load.seen if s == "b"]
    assert load.b.stats["cookie_sent"] == 1
    assert ck[2] and ck[3] == C.IKE_SA_INIT and ck[4] is None and ck[5] == "sock4500"


def test_pop_datagrams_keeps_its_pairs():
    p = Pair()
    p.a.initiate((B_HOST, 500), PeerConfig(), 0)
    (d, to), = p.a.pop_datagrams()
    assert to == (B_HOST, 500) and codec.parse(d).exch == C.IKE_SA_INIT


# ---------------------------------------------------------------- the node

class TapSock(world.Sock):
    """A node's socket in the simulated world that also notes what left it."""

    def __init__(self, w, host, port, log):
        world.Sock.__init__(self, w, host, port)
        self.log = log

    def sendto(self, data, addr):
        self.log.append((self.port, bytes(data), addr))
        world.Sock.sendto(self, data, addr)


def _tapped_world():
    w = world.World(0, CryptographyAES(), fast_x25519, fast_ed25519)
    log = []
    w.b.sock_ike = TapSock(w, world.B, 500, log)
    w.b.sock_natt = TapSock(w, world.B, 4500, log)
    return w, log


def _ike_of(port, data):
    """(exchange, response) of an IKE datagram as it left a socket, or None."""
    if port == 4500:
        if data[:4] != udpencap.MARKER:
            return None
        data = data[4:]
    m = codec.parse(data)
    return m.exch, m.is_response


def test_node_answers_on_the_socket_each_request_came_in_on():
    w, log = _tapped_world()
    w.a._probe(world.B, True)        # IKE_SA_INIT to B:500, then IKE_AUTH on 4500
    w.settle()
    assert w.b.by_host[world.A].ike is not None
    sent = [(port, _ike_of(port, d)) for port, d, _ in log]
    assert (500, (C.IKE_SA_INIT, True)) in sent
    assert (4500, (C.IKE_AUTH, True)) in sent
    for port, what in sent:
        if what is not None and what[1]:
            assert port == (500 if what[0] == C.IKE_SA_INIT else 4500), (port, what)
    # Two more IKE_SA_INITs from A's address, one on each of B's sockets: each answer
    # leaves by its own request's socket (marker only on 4500).
    del log[:]
    other = Engine(os.urandom, AES, LocalIdentity())
    for port in (4500, 500):
        other.initiate((world.B, port), PeerConfig(), 0)
        (d, _), = other.pop_datagrams()
        if port == 4500:
            w.b._datagram(udpencap.MARKER + d, (world.A, 4500), w.b.sock_natt, True)
        else:
            w.b._datagram(d, (world.A, 500), w.b.sock_ike, False)
    got = [(port, _ike_of(port, d), addr) for port, d, addr in log
           if _ike_of(port, d)[1]]       # (B's own proof request may leave meanwhile)
    assert got == [(4500, (C.IKE_SA_INIT, True), (world.A, 4500)),
                   (500, (C.IKE_SA_INIT, True), (world.A, 500))], got
