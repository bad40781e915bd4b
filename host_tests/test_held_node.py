"""Held decisions in the node (issue 10, item 7): with a policy server
(node.decisions.ask) the engine holds IKE_AUTH until the server answers, and the node
finishes it through the DecisionPoint; the answer, given after receive() returned,
still leaves by the socket its request came in on (issue 10, item 6: the arrival tag
travels with the request, not in a node attribute set around receive). When the
server stays silent, the engine's deadline takes the DecisionPoint's local answer.

Runs on the simulated world of host_tests/mp/test_time_mp.py, inside asyncio (the
question to the server is a task)."""

import asyncio
import os
import sys

from pnp_hostboard.crypto import CryptographyAES, fast_ed25519, fast_x25519
from pnpipsec import udpencap
from pnpipsec.ike import codec, const as C
from pnpipsec.ike.engine import Engine
from pnpipsec.ike.sa import LocalIdentity
from pnpipsec.node import zero_config

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "mp"))
import test_time_mp as world  # noqa: E402
from host_tests.test_tagged import TapSock, _ike_of  # noqa: E402

AES = CryptographyAES()
X = "10.0.0.9"          # a bare engine's host: B's answers to it are only logged


def _world():
    w = world.World(0, AES, fast_x25519, fast_ed25519)
    log = []
    w.b.sock_ike = TapSock(w, world.B, 500, log)
    w.b.sock_natt = TapSock(w, world.B, 4500, log)
    return w, log


class Server:
    """A policy server that answers when the test says so."""

    def __init__(self, answer):
        self.answer = answer
        self.go = asyncio.Event()
        self.asked = []

    async def __call__(self, req):
        self.asked.append(req.auth_method)
        await self.go.wait()
        return self.answer


async def _spin(n=20):
    for _ in range(n):
        await asyncio.sleep(0)


def _answers(log, exch):
    return [(port, d, addr) for port, d, addr in log
            if _ike_of(port, d) == (exch, True)]


def _bare_handshake_to_port_500(w, log):
    """A bare initiator on X that stays on port 500 (no NAT-T move): IKE_SA_INIT and
    IKE_AUTH both reach B's port-500 socket. Returns the engine after IKE_AUTH left."""
    x = Engine(os.urandom, AES, LocalIdentity(), natt_ports=None)
    x.initiate((world.B, 500), zero_config(), 0)
    (d, _), = x.pop_datagrams()
    w.b._datagram(d, (X, 500), w.b.sock_ike, False)
    (port, resp, _), = _answers(log, C.IKE_SA_INIT)
    assert port == 500
    x.receive(resp, (world.B, 500), 0)
    (d, to), = x.pop_datagrams()
    assert to == (world.B, 500) and codec.parse(d).exch == C.IKE_AUTH
    w.b._datagram(d, (X, 500), w.b.sock_ike, False)
    return x, d


def test_a_held_answer_leaves_by_its_requests_socket_after_receive_returned():
    async def main():
        w, log = _world()
        srv = Server({"accept": True})
        w.b.decisions.ask = srv
        x, auth = _bare_handshake_to_port_500(w, log)
        eng = w.b.engine
        await _spin()                       # the question is asked in a task
        assert eng.stats["held"] == 1 and srv.asked == ["null"]
        assert _answers(log, C.IKE_AUTH) == []
        # Meanwhile a request from the same address arrives on the other socket
        # (4500) and is answered there.
        y = Engine(os.urandom, AES, LocalIdentity())
        y.initiate((world.B, 4500), zero_config(), 0)
        (d, _), = y.pop_datagrams()
        w.b._datagram(udpencap.MARKER + d, (X, 4500), w.b.sock_natt, True)
        assert [p for p, _, _ in _answers(log, C.IKE_SA_INIT)] == [500, 4500]
        # a retransmission of the held IKE_AUTH is absorbed
        w.b._datagram(auth, (X, 500), w.b.sock_ike, False)
        assert eng.stats["held_absorbed"] == 1 and _answers(log, C.IKE_AUTH) == []
        srv.go.set()
        await _spin()
        (port, resp, to), = _answers(log, C.IKE_AUTH)
        # back on the port-500 socket, without the non-ESP marker, to the requester
        assert port == 500 and to == (X, 500) and resp[:4] != udpencap.MARKER
        x.receive(resp, (world.B, 500), 0)
        assert [e.kind for e in x.pop_events()] == ["ike_up", "child_up"]
        assert w.b.decisions.counters["remote"] == 1 and not eng.held
    asyncio.run(main())


def test_a_refusing_server_answers_authentication_failed():
    async def main():
        w, log = _world()
        srv = Server({"accept": False, "reason": "not on the list"})
        w.b.decisions.ask = srv
        x, _ = _bare_handshake_to_port_500(w, log)
        srv.go.set()
        await _spin()
        (port, resp, _), = _answers(log, C.IKE_AUTH)
        assert port == 500
        x.receive(resp, (world.B, 500), 0)
        assert "ike_down" in [e.kind for e in x.pop_events()]
        assert not w.b.engine.held and w.b.decisions.counters["reject"] == 1
    asyncio.run(main())


def test_a_silent_server_falls_back_to_the_local_spd_at_the_deadline():
    async def main():
        w, log = _world()
        srv = Server({"accept": False})     # never released
        w.b.decisions.ask = srv
        w.a._probe(world.B, True)           # two whole nodes
        w.settle()
        await _spin()
        eng = w.b.engine
        assert eng.stats["held"] == 1 and world.B not in w.a.ike_up
        w.t += 1000
        w.timers()                          # A retransmits IKE_AUTH: absorbed
        assert eng.stats["held_absorbed"] >= 1 and eng.held
        w.t += 1000                         # decisions.timeout (2 s): the local SPD
        w.timers()
        await _spin()
        assert not eng.held and eng.stats["decision_timeout"] == 1
        dp = w.b.decisions
        assert dp.counters["remote_timeout"] == 1
        assert dp.counters["accept"] == 2      # IKE_SA_INIT (local) and the fallback
        assert world.B in w.a.ike_up and world.A in w.b.ike_up
        for t in w.b._asking:
            t.cancel()
    asyncio.run(main())
