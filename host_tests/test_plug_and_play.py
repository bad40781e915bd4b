"""Plug and play (DESIGN s4-s5): zero-config nodes on loopback, legacy peers, levels.

Nodes run in this process on their own 127.0.0.x with real UDP sockets; a legacy peer
is a plain socket that knows nothing of IPsec. Claims about the wire are checked on the
wire (the legacy peer's own sockets; tcpdump where it says so), not only in counters.
"""

import asyncio
import os
import random
import socket
import time

import pytest

from host_tests.memnet import MemBoard, MemNet
from host_tests.peers import capture as cap
from host_tests.peers import require_real_peers
from pnp_hostboard.board import HostBoard
from pnpipsec import AUTHENTICATED, CLEAR, ENCRYPTED, policy, proof
from pnpipsec.identity import Identity
from pnpipsec.node import LevelTimeout, Node, NodeError, zero_config

# A loopback /24 of this process's own, so parallel test runs never share ports.
_NET = "127.%d.%d." % (random.randint(1, 254), os.getpid() % 250 + 1)
A, B, LEGACY = _NET + "21", _NET + "22", _NET + "29"
APP = 7000


def free_port(hosts):
    for _ in range(100):
        port = random.randint(20000, 60000)
        socks = []
        try:
            for h in hosts:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((h, port))
                s2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s2)
                s2.bind((h, APP))   # the app port must be free too
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port")


def node(addr, port, **kw):
    return Node(HostBoard(bind6=None, bind4=addr), Identity(os.urandom(32)), ike_port=port,
                natt_port=port, accept_any=zero_config(), **kw)


class Legacy:
    """A device that knows nothing of IPsec: it records what reaches its ports."""

    def __init__(self, port):
        self.app = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.app.bind((LEGACY, APP))
        self.app.setblocking(False)
        self.ike = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.ike.bind((LEGACY, port))
        self.ike.setblocking(False)

    @staticmethod
    def drain(s):
        out = []
        while True:
            try:
                out.append(s.recvfrom(4096))
            except BlockingIOError:
                return out

    def close(self):
        self.app.close()
        self.ike.close()


def test_level_timeline_and_first_datagram_not_delayed():
    async def main():
        port = free_port([A, B])
        a, b = node(A, port), node(B, port)
        await a.start()
        await b.start()
        timeline = []
        a.on_level(lambda host, old, new, now: timeline.append((now, host, old, new)))
        inbox = b.endpoint(APP)
        try:
            ep = a.endpoint(APP)
            await asyncio.sleep(0.05)               # both clear sockets bound
            t0 = a.board.now()
            assert await ep.send(b"first", (B, APP)) == CLEAR
            sent_after = a.board.now() - t0
            # Not delayed: send returned while no SA existed and no IKE had even left.
            assert a.level(B) == CLEAR and a.engine.stats.get("rx", 0) == 0 and not a.ike_up
            data, addr, lvl = await asyncio.wait_for(inbox.recv(), 2)
            assert (data, addr, lvl) == (b"first", (A, APP), CLEAR)
            assert await a.wait_level(B, ENCRYPTED, timeout=5) >= ENCRYPTED
            t_enc = a.board.now() - t0
            await a.wait_level(B, AUTHENTICATED, timeout=5)
            t_auth = a.board.now() - t0
            assert await ep.send(b"second", (B, APP)) == AUTHENTICATED
            data, addr, lvl = await asyncio.wait_for(inbox.recv(), 2)
            assert (data, lvl) == (b"second", AUTHENTICATED)
            assert [(h, o, n) for _, h, o, n in timeline] == \
                [(B, CLEAR, ENCRYPTED), (B, ENCRYPTED, AUTHENTICATED)]
            assert a.view()[B] == {"level": AUTHENTICATED, "clear_in": 0, "clear_out": 1,
                                   "esp_in": 0, "esp_out": 1}
            print("\n[loopback] first datagram sent after %.2f ms; ENCRYPTED after %.1f ms; "
                  "AUTHENTICATED after %.1f ms" % (sent_after * 1e3, t_enc * 1e3, t_auth * 1e3))
        finally:
            await a.stop()
            await b.stop()
    asyncio.run(main())


def test_legacy_peer_sees_exactly_the_app_datagrams_and_probes_are_bounded():
    async def main():
        port = free_port([A, LEGACY])
        a = node(A, port)
        await a.start()
        legacy = Legacy(port)
        try:
            ep = a.endpoint(APP)
            sent = [b"reading %d" % i for i in range(25)]
            for d in sent:
                assert await ep.send(d, (LEGACY, APP)) == CLEAR
                await asyncio.sleep(0.2)   # 5 s: longer than one probe (3.5 s)
            # The legacy device answers in clear and the app gets it, labelled CLEAR.
            legacy.app.sendto(b"ack", (A, APP))
            data, addr, lvl = await asyncio.wait_for(ep.recv(), 2)
            assert (data, addr, lvl) == (b"ack", (LEGACY, APP), CLEAR)
            got = Legacy.drain(legacy.app)
            assert [d for d, _ in got] == sent                       # exactly, in order
            assert {src for _, src in got} == {(A, APP)}
            probes = Legacy.drain(legacy.ike)
            assert 1 <= len(probes) <= 3, probes                   # one probe: <= 3 tries
            for d, _ in probes:
                assert d[:4] == b"\0\0\0\0" and d[4 + 18] == 34    # marker + IKE_SA_INIT
            assert a.discovery.state(socket.inet_aton(LEGACY)) == "legacy"
            # More traffic while the negative cache holds: no new probe.
            for i in range(10):
                await ep.send(b"more", (LEGACY, APP))
            await asyncio.sleep(1.0)
            assert Legacy.drain(legacy.ike) == []
            assert len(Legacy.drain(legacy.app)) == 10
        finally:
            legacy.close()
            await a.stop()
    asyncio.run(main())


class RootNs:
    """tcpdump in this namespace, for capture.Capture."""
    import subprocess as _sp

    def popen(self, cmd, **kw):
        return self._sp.Popen(cmd, start_new_session=True, **kw)


def test_require_sends_nothing_in_clear_on_the_wire(tmp_path):
    require_real_peers(charon=False, capture=True)
    spd = policy.Spd.from_dicts([{"peer": "any", "port": APP, "action": "require", "level": "encrypted"}])

    async def main():
        port = free_port([A, B, LEGACY])
        a, b = node(A, port, spd=spd), node(B, port)
        await a.start()
        await b.start()
        inbox = b.endpoint(APP)
        legacy = Legacy(port)
        try:
            ep = a.endpoint(APP)
            for i in range(5):
                assert await ep.send(b"secret %d" % i, (B, APP), timeout=5) >= ENCRYPTED
            for i in range(5):
                data, _, lvl = await asyncio.wait_for(inbox.recv(), 2)
                assert data == b"secret %d" % i and lvl >= ENCRYPTED
            with pytest.raises(LevelTimeout):
                await ep.send(b"to legacy", (LEGACY, APP), timeout=1.0)
            with pytest.raises(NodeError):   # now known legacy: refused at once
                await ep.send(b"to legacy", (LEGACY, APP), timeout=5.0)
            assert Legacy.drain(legacy.app) == []
            assert a.stats["clear_out"] == 0
        finally:
            legacy.close()
            await a.stop()
            await b.stop()
    pcap = str(tmp_path / "require.pcap")
    with cap.Capture(RootNs(), "lo", f"udp and port {APP} and (host {A} or host {B} or host {LEGACY})", pcap):
        asyncio.run(main())
    assert cap.tshark_fields(pcap, ["frame.number"]) == []   # not one clear datagram on port 7000


def test_sticky_security_refuses_downgrade():
    async def main():
        port = free_port([A, B])
        a, b = node(A, port), node(B, port)
        await a.start()
        await b.start()
        ep = a.endpoint(APP)
        try:
            assert await a.connect(B, timeout=5) >= ENCRYPTED
            assert await ep.send(b"x", (B, APP)) >= ENCRYPTED
            # An attacker takes B's place: IKE to B is now blocked, a plain socket
            # listens on B's app port, and A's SA goes away.
            await b.stop()
            impostor = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            impostor.bind((B, APP))
            impostor.setblocking(False)
            if B in a.ike_up:          # B's DELETE usually got here first
                a.engine.delete(a.ike_up[B], a.board.now_ms())
                a._pump()
            deadline = time.monotonic() + 8
            while a.level(B) != CLEAR and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert a.level(B) == CLEAR
            before = a.stats["clear_out"]
            with pytest.raises(NodeError):
                await ep.send(b"must not leak", (B, APP), timeout=6)
            assert a.stats["clear_out"] == before
            assert Legacy.drain(impostor) == []
            impostor.close()
        finally:
            await a.stop()
    asyncio.run(main())


def test_relaying_man_in_the_middle_leaves_both_victims_encrypted():
    """A and B each believe they talk to the other; M1 (as B toward A) and M2 (as A
    toward B) terminate IKE with NULL auth and relay each victim's proof into the
    other SA. The proofs are bound to the SA they were made for, so both fail."""
    async def main():
        net = MemNet()
        mk = lambda addr, claim=None, ident=True: Node(  # noqa: E731
            MemBoard(net, addr, claim), Identity(os.urandom(32)) if ident else None,
            ike_port=4500, natt_port=4500, accept_any=zero_config())
        a, b = mk("10.0.0.1"), mk("10.0.0.2")
        m1, m2 = mk("10.0.0.66", claim="10.0.0.2", ident=False), mk("10.0.0.67", claim="10.0.0.1", ident=False)
        net.hijack("10.0.0.1", "10.0.0.2", "10.0.0.66")
        net.hijack("10.0.0.2", "10.0.0.1", "10.0.0.67")
        relayed = []

        def relay(into, peer):
            def forward(sa, data):   # held until the attacker's other leg is up
                relayed.append((into, peer, data))
            return forward

        def flush():
            for into, peer, data in relayed:
                into.engine.send_notify(into.ike_up[peer], proof.PROOF, data, into.board.now_ms())
                into._pump()
        m1._proof_in = relay(m2, "10.0.0.2")   # A's proof goes on to B
        m2._proof_in = relay(m1, "10.0.0.1")   # B's proof goes on to A
        for n in (a, b, m1, m2):
            await n.start()
        try:
            await m2.connect("10.0.0.2", timeout=15)    # M's leg toward B first
            assert await a.connect("10.0.0.2", timeout=15) == ENCRYPTED
            await asyncio.sleep(0.1)
            assert len(relayed) == 2
            flush()                                    # both proofs relayed...
            await asyncio.sleep(0.2)
            assert a.stats["proof_bad"] == 1 and b.stats["proof_bad"] == 1
            assert a.stats["proof_ok"] == 0 and b.stats["proof_ok"] == 0
            assert a.level("10.0.0.2") == ENCRYPTED and b.level("10.0.0.1") == ENCRYPTED
            with pytest.raises(LevelTimeout):
                await a.wait_level("10.0.0.2", AUTHENTICATED, timeout=0.5)
        finally:
            for n in (a, b, m1, m2):
                await n.stop()

    asyncio.run(main())


def test_without_man_in_the_middle_the_same_setup_authenticates():
    """Control for the test above: the same memory network, no hijack."""
    async def main():
        net = MemNet()
        a = Node(MemBoard(net, "10.0.0.1"), Identity(os.urandom(32)), ike_port=4500, natt_port=4500,
                 accept_any=zero_config())
        b = Node(MemBoard(net, "10.0.0.2"), Identity(os.urandom(32)), ike_port=4500, natt_port=4500,
                 accept_any=zero_config())
        await a.start()
        await b.start()
        try:
            await a.connect("10.0.0.2", timeout=5)
            assert await a.wait_level("10.0.0.2", AUTHENTICATED, timeout=2) == AUTHENTICATED
            assert await b.wait_level("10.0.0.1", AUTHENTICATED, timeout=2) == AUTHENTICATED
            assert a.proved["10.0.0.2"] == b.identity.public
        finally:
            await a.stop()
            await b.stop()
    asyncio.run(main())
