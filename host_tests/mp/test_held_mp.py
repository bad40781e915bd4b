# Held decisions (issue 10, item 7) under MicroPython and CPython: the responder's
# policy answers PENDING for IKE_AUTH or a new CHILD SA; the engine holds the request,
# absorbs its retransmissions and finishes when eng.decided() brings the answer, or at
# decision_timeout with the fallback (the local answer). The oracle for "finishes as the
# synchronous path would": the same handshake with a synchronous policy and the same
# deterministic rand gives the same response bytes. Plain asserts; imports only pnpipsec
# and what MicroPython has.

from pnpipsec.crypto.aes import default_provider
from pnpipsec.ike import codec
from pnpipsec.ike import const as C
from pnpipsec.ike.engine import Engine
from pnpipsec.ike.sa import LocalIdentity, PeerConfig, PENDING
from test_ike_mp import Rand  # the deterministic rand of these modules (same folder)

A_ADDR = ("fd00:1::1", 500)
B_ADDR = ("fd00:1::2", 500)
AES = default_provider()


class Policy:
    """B's policy: answers IKE_SA_INIT at once; IKE_AUTH / CHILD SAs PENDING when
    `hold` is set, else PeerConfig(). Counts the questions."""

    def __init__(self, hold):
        self.hold = hold
        self.asked = []

    def __call__(self, addr, peer_id, method):
        self.asked.append(method)
        if method is not None and self.hold:
            return PENDING
        return PeerConfig()


class Wire:
    """A and B in memory; `t` the clock (ms); B's outgoing datagrams are logged."""

    def __init__(self, hold, fallback=None, seed=b"", **kw):
        self.t = 0
        self.pol = Policy(hold)
        self.a = Engine(Rand(b"a" + seed), AES, LocalIdentity())
        self.b = Engine(Rand(b"b" + seed), AES, LocalIdentity(), self.pol,
                        fallback=fallback, **kw)
        self.b_out = []         # (exch, response, bytes)
        self.ev_a = []
        self.ev_b = []

    def step(self):
        moved = False
        for d, to, resp, exch, spi, via in self.a.pop_tagged():
            moved = True
            self.b.receive(d, (A_ADDR[0], to[1]), self.t, "b-sock")
        for d, to, resp, exch, spi, via in self.b.pop_tagged():
            moved = True
            self.b_out.append((exch, resp, d))
            self.a.receive(d, (B_ADDR[0], to[1]), self.t)
        self.ev_a += self.a.pop_events()
        self.ev_b += self.b.pop_events()
        return moved

    def settle(self):
        while self.step():
            pass

    def wait(self, ms, dt=250):
        """Let ms pass in steps of dt, timers and deliveries included."""
        end = self.t + ms
        while self.t < end:
            self.t += dt
            self.a.tick(self.t)
            self.b.tick(self.t)
            self.settle()

    def kinds(self, side):
        return [e.kind for e in (self.ev_a if side == "a" else self.ev_b)]

    def held_sa(self):
        evs = [e for e in self.ev_b if e.kind == "decision_pending"]
        return evs[-1].sa if evs else None


def _answers(w, exch):
    return [d for x, r, d in w.b_out if x == exch and r]


def test_pending_then_allow_gives_the_sync_answer():
    sync = Wire(False)
    sync.a.initiate(B_ADDR, PeerConfig(), 0)
    sync.settle()
    assert sync.kinds("a") == ["ike_up", "child_up"]

    w = Wire(True)
    w.a.initiate(B_ADDR, PeerConfig(), 0)
    w.settle()
    sa = w.held_sa()
    assert sa is not None and w.b.holding(sa) and w.kinds("a") == []
    assert _answers(w, C.IKE_AUTH) == [] and w.b.stats["held"] == 1
    asked = len(w.pol.asked)
    w.wait(1500)        # A retransmits at 0.5 and 1.5 s: absorbed, no work, no answer
    assert w.b.stats["held_absorbed"] == 2 and len(w.pol.asked) == asked
    assert _answers(w, C.IKE_AUTH) == [] and w.a.stats["retransmit"] == 2
    assert w.b.decided(sa, PeerConfig(), w.t)
    w.settle()
    assert w.kinds("a") == ["ike_up", "child_up"]
    assert w.kinds("b") == ["decision_pending", "ike_up", "child_up"]
    # the same answer bytes as the synchronous path, for every exchange
    assert [d for x, r, d in w.b_out] == [d for x, r, d in sync.b_out]
    assert not w.b.holding(sa) and not w.b.decided(sa, PeerConfig(), w.t)
    assert w.b.stats["decision_late"] == 1


def test_an_absorbed_retransmission_gets_the_answer_replayed_after():
    w = Wire(True)
    w.a.initiate(B_ADDR, PeerConfig(), 0)
    w.settle()
    sa = w.held_sa()
    w.b.decided(sa, PeerConfig(), w.t)
    (resp, to, r, exch, spi, via), = w.b.pop_tagged()
    assert r and exch == C.IKE_AUTH and spi == sa.spi_r and via == "b-sock"
    # the answer was lost; A's retransmission now gets it replayed
    w.wait(500)
    assert w.b.stats["replay"] == 1 and w.kinds("a") == ["ike_up", "child_up"]
    assert _answers(w, C.IKE_AUTH) == [resp]


def test_pending_then_deny_refuses_and_frees_the_sa():
    w = Wire(True)
    w.a.initiate(B_ADDR, PeerConfig(), 0)
    w.settle()
    sa = w.held_sa()
    assert w.b.decided(sa, None, w.t)
    w.settle()
    (ans,) = _answers(w, C.IKE_AUTH)
    assert w.kinds("b") == ["decision_pending", "auth_failed", "ike_down"]
    assert w.ev_b[-1].reason == "AUTHENTICATION_FAILED" and sa.state == "dead"
    assert "ike_down" in w.kinds("a") and "ike_up" not in w.kinds("a")
    w.wait(11000)       # the refusal is kept 10 s for retransmissions, then gone
    assert sa.spi_r not in w.b.sas and not w.b.held


def test_pending_then_timeout_takes_the_fallback():
    calls = []

    def local(addr, peer_id, method):
        calls.append(method)
        return PeerConfig()
    w = Wire(True, fallback=local, decision_timeout=2)
    w.a.initiate(B_ADDR, PeerConfig(), 0)
    w.settle()
    sa = w.held_sa()
    w.wait(1750)
    assert w.b.holding(sa) and w.kinds("a") == [] and calls == []
    assert 0 < w.b.next_deadline(w.t) <= 250
    w.wait(250)
    assert calls == ["null"] and w.b.stats["decision_timeout"] == 1
    assert w.kinds("a") == ["ike_up", "child_up"] and w.a.stats.get("timeout", 0) == 0
    assert not w.b.decided(sa, None, w.t)       # too late: nothing changes
    assert sa.state == "established"


def test_timeout_without_fallback_refuses():
    w = Wire(True, decision_timeout=1)
    w.a.initiate(B_ADDR, PeerConfig(), 0)
    w.settle()
    w.wait(1000)
    assert w.kinds("b") == ["decision_pending", "auth_failed", "ike_down"]


def _established(hold_child):
    w = Wire(False, seed=b"c")
    sa = w.a.initiate(B_ADDR, PeerConfig(), 0)
    w.settle()
    w.pol.hold = hold_child
    return w, sa


def test_a_new_child_sa_is_held_and_answered():
    sync, sa_s = _established(False)
    sync.a.create_child(sa_s, sync.t)
    sync.settle()
    w, sa = _established(True)
    w.a.create_child(sa, w.t)
    w.settle()
    held = w.held_sa()
    assert held is not None and held.spi_i == sa.spi_i and w.b.holding(held)
    assert _answers(w, C.CREATE_CHILD_SA) == []
    w.wait(500)
    assert w.b.stats["held_absorbed"] == 1
    assert w.b.decided(held, PeerConfig(), w.t)
    w.settle()
    assert w.kinds("a")[-1] == "child_up" and w.kinds("b")[-1] == "child_up"
    assert len(sa.children) == 2 and len(held.children) == 2
    assert _answers(w, C.CREATE_CHILD_SA) == _answers(sync, C.CREATE_CHILD_SA)


def test_a_held_child_sa_refused():
    w, sa = _established(True)
    w.a.create_child(sa, w.t)
    w.settle()
    w.b.decided(w.held_sa(), None, w.t)
    w.settle()
    (ans,) = _answers(w, C.CREATE_CHILD_SA)
    assert w.kinds("a")[-1] == "child_failed" and w.ev_a[-1].reason == "NO_PROPOSAL_CHOSEN"
    assert len(sa.children) == 1 and sa.state == "established"


def test_held_requests_are_bounded():
    w = Wire(True, max_held=1)
    w.a.initiate(B_ADDR, PeerConfig(), 0)
    other = Engine(Rand(b"o"), AES, LocalIdentity())
    other.initiate(B_ADDR, PeerConfig(), 0)
    w.settle()
    first = w.held_sa()

    def relay():
        for d, to in other.pop_datagrams():
            w.b.receive(d, ("fd00:1::3", 500), w.t)
        for d, to in w.b.pop_datagrams():
            other.receive(d, (B_ADDR[0], to[1]), w.t)
    for _ in range(3):
        relay()
    assert w.b.stats["drop_held_full"] == 1 and len(w.b.held) == 1
    assert w.b.decided(first, PeerConfig(), w.t)
    w.settle()
    w.t += 500
    other.tick(w.t)
    relay()             # the dropped request's retransmission is held now
    (h,) = list(w.b.held.values())
    assert h.sa is not first and h.sa.peer_addr[0] == "fd00:1::3"
    assert w.b.stats["held"] == 2


def test_a_held_sa_that_goes_forgets_its_request():
    w = Wire(True, half_open_timeout=1, decision_timeout=5)
    w.a.initiate(B_ADDR, PeerConfig(), 0)
    w.settle()
    sa = w.held_sa()
    w.wait(1000)        # the half-open SA expires before any decision
    assert not w.b.held and not w.b.decided(sa, PeerConfig(), w.t)
