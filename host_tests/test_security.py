"""Hostile peers: each test is an attack found in review, and fails without its fix.

The attacker is our own engine driven by hand (it holds its own SA's keys, as a real
attacker would), talking to a victim engine or node.
"""

import asyncio
import os

from host_tests.memnet import MemBoard, MemNet
from host_tests.oracles import AES
from host_tests.test_ike_engine import A_HOST, B_HOST, Net, up
from pnpipsec import AUTHENTICATED, ENCRYPTED, policy, proof
from pnpipsec.crypto import ed25519
from pnpipsec.identity import Identity, fingerprint
from pnpipsec.ike.engine import Engine
from pnpipsec.ike.sa import ChildFailed, ChildUp, LocalIdentity, PeerConfig
from pnpipsec.node import LevelTimeout, Node, zero_config

ANY4 = (bytes(4), b"\xff" * 4)
A4, B4 = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def shuttle(m, v, m_addr, v_addr, now=0, rounds=10):
    for _ in range(rounds):
        a, b = m.pop_datagrams(), v.pop_datagrams()
        if not a and not b:
            return
        for d, _ in a:
            v.receive(d, m_addr, now)
        for d, _ in b:
            m.receive(d, v_addr, now)


def test_transport_policy_refuses_a_tunnel_with_wide_selectors():
    net = Net(PeerConfig(mode="tunnel", local_ts=[ANY4], remote_ts=[ANY4]))   # B: zero-config
    up(net)
    assert not [e for e in net.ev_b if isinstance(e, ChildUp)]
    assert [e.reason for e in net.of("b", ChildFailed)] == ["NO_PROPOSAL_CHOSEN"]


def test_tunnel_without_configured_selectors_gives_the_peer_only_its_own_address():
    net = Net(PeerConfig(mode="tunnel", local_ts=[ANY4], remote_ts=[ANY4]),
              lambda addr, pid, m: PeerConfig(mode="tunnel"))
    up(net)
    kids = [e.child for e in net.ev_b if isinstance(e, ChildUp)]
    assert all(c.remote_ts == [(A4, A4)] for c in kids)   # never 0.0.0.0-255.255.255.255


def test_ike_auth_from_another_address_does_not_move_the_sa():
    """An attacker's SA must not be moved onto a victim's address by a spoofed source."""
    m = Engine(os.urandom, AES, LocalIdentity())
    v = Engine(os.urandom, AES, LocalIdentity())
    m.initiate((B_HOST, 4500), PeerConfig(), 0)
    shuttle(m, v, ("10.0.0.66", 4500), (B_HOST, 4500), rounds=1)      # IKE_SA_INIT, real source
    shuttle(m, v, ("10.0.0.5", 4500), (B_HOST, 4500), rounds=2)       # IKE_AUTH "from" 10.0.0.5
    (sa,) = v.sas.values()
    assert sa.peer_addr[0] == "10.0.0.66"
    assert all(c.peer_addr[0] == "10.0.0.66" for c in sa.children)


def test_rekeys_without_deletes_are_bounded():
    m = Engine(os.urandom, AES, LocalIdentity())
    v = Engine(os.urandom, AES, LocalIdentity())
    sa = m.initiate((B_HOST, 4500), PeerConfig(), 0)
    shuttle(m, v, (A_HOST, 4500), (B_HOST, 4500))
    (vsa,) = v.sas.values()
    m._del_child = lambda sa, child, now: None       # the attacker never deletes old SAs
    for _ in range(50):
        ch = [c for c in sa.children if c.state == "up"][-1]
        m.rekey_child(ch, 0)
        shuttle(m, v, (A_HOST, 4500), (B_HOST, 4500))
    assert len(vsa.children) <= 2 * v.max_children


def test_forged_error_answer_does_not_abort_the_handshake():
    """Anyone on the path can answer IKE_SA_INIT with an error; the real answer wins."""
    net = Net()
    net.start()
    (init, _), = net.a.pop_datagrams()
    net.b.receive(init, (A_HOST, 500), 0)
    (resp, _), = net.b.pop_datagrams()
    forged = bytearray(resp[:28])
    forged[16] = 41                                           # next payload: N
    body = bytes([0, 0, 0, 8, 0, 0, 0, 14])                   # N(NO_PROPOSAL_CHOSEN)
    forged[24:28] = (28 + len(body)).to_bytes(4, "big")
    net.a.receive(bytes(forged) + body, (B_HOST, 500), 0)
    assert net.sa.state == "init_sent" and net.a.stats.get("init_error_noted") == 1
    net.a.receive(resp, (B_HOST, 500), 0)                   # the genuine answer
    assert net.sa.state == "auth_sent"


def test_unreserved_esp_spi_refused():
    net = Net()
    net.a._new_esp_spi = lambda: 7            # the peer picks a reserved SPI for us to use
    up(net)
    assert not [e for e in net.ev_b if isinstance(e, ChildUp)]


async def _nodes(net, n):
    nodes = []
    for i in range(n):
        node = Node(MemBoard(net, "10.0.0.%d" % (i + 1)), Identity(os.urandom(32)),
                    ike_port=4500, natt_port=4500, accept_any=zero_config())
        await node.start()
        nodes.append(node)
    return nodes


def test_one_proof_per_sa_no_flash_wear():
    """Fresh keys proved again and again on one SA: one pin write, no event flood."""
    async def main():
        net = MemNet()
        a, b = await _nodes(net, 2)
        # a keeps its AUTH octets after its own proof (it forgets them by default), so
        # the test can sign more proofs that would verify on this SA
        a.engine.forget_octets = lambda sa, local=True: None
        try:
            await a.connect("10.0.0.2", timeout=5)
            await asyncio.sleep(0.1)
            writes = b.pins.counters["writes"]
            sa = a.ike_up["10.0.0.2"]
            for _ in range(20):
                k = Identity(os.urandom(32))
                a.engine.send_notify(sa, proof.PROOF, proof.make(ed25519.sign, k.seed, k.public,
                                     a.engine.auth_octets(sa, True)), a.board.now_ms())
                a._pump()
                await asyncio.sleep(0.01)
            assert b.pins.counters["writes"] == writes and not b.events
            assert b.stats["proof_ignored"] == 20 and b.level("10.0.0.1") == AUTHENTICATED
        finally:
            await a.stop()
            await b.stop()
    asyncio.run(main())


def test_endpoint_min_level_also_filters_what_comes_in():
    async def main():
        net = MemNet()
        a, b = await _nodes(net, 2)
        b.tofu = False
        strict = b.endpoint(7000, min_level=AUTHENTICATED)
        try:
            await asyncio.sleep(0.05)
            await a.endpoint(7001).send(b"clear, refused", ("10.0.0.2", 7000))
            assert await a.connect("10.0.0.2", timeout=5) >= ENCRYPTED   # a trusts b (TOFU)...
            await a.endpoint(7001).send(b"encrypted, not enough", ("10.0.0.2", 7000))  # b not a
            await asyncio.sleep(0.2)
            assert strict.pending() == 0, strict._items
            assert b.stats["clear_refused"] == 1 and b.stats["inner_refused"] == 1
            b.approve("10.0.0.1", a.identity.public)
            await a.endpoint(7001).send(b"now", ("10.0.0.2", 7000))
            assert (await asyncio.wait_for(strict.recv(), 2))[0] == b"now"
        finally:
            await a.stop()
            await b.stop()
    asyncio.run(main())


def test_fingerprint_spd_entries_match_an_authenticated_peer():
    async def main():
        net = MemNet()
        a, b = await _nodes(net, 2)
        try:
            fp = fingerprint(b.identity.public)
            a.decisions.spd = policy.Spd.from_dicts([
                {"peer": "fp:" + fp, "port": 7000, "action": "require", "level": "authenticated"},
                {"peer": "any", "port": 7000, "action": "bypass"}])
            # unknown peer: the fp entry cannot match, the bypass entry does
            assert await a.endpoint(7001).send(b"x", ("10.0.0.2", 7000)) == 0
            await a.connect("10.0.0.2", timeout=5)
            await a.wait_level("10.0.0.2", AUTHENTICATED, timeout=2)
            assert a._fp("10.0.0.2") == fp
            assert await a.endpoint(7001).send(b"y", ("10.0.0.2", 7000)) == AUTHENTICATED
        finally:
            await a.stop()
            await b.stop()
    asyncio.run(main())


def test_one_address_cannot_take_every_sa_slot():
    m = Engine(os.urandom, AES, LocalIdentity())
    v = Engine(os.urandom, AES, LocalIdentity())
    for _ in range(20):
        m.initiate((B_HOST, 4500), PeerConfig(), 0)
    shuttle(m, v, ("10.0.0.66", 4500), (B_HOST, 4500))
    live = [sa for sa in v.sas.values() if sa.state != "dead"]
    assert 0 < len(live) <= v.max_per_host + v.max_half_open_per_host < v.max_sas
    assert len([sa for sa in live if sa.state == "half_open"]) <= v.max_half_open_per_host
    assert v.stats.get("cookie_sent", 0) > 0          # beyond two half-open: prove the address
    other = Engine(os.urandom, AES, LocalIdentity())          # another peer still gets in
    other.initiate((B_HOST, 4500), PeerConfig(), 0)
    shuttle(other, v, ("10.0.0.7", 4500), (B_HOST, 4500))
    assert [sa for sa in v.sas.values() if sa.peer_addr[0] == "10.0.0.7" and sa.state == "established"]


def test_policy_is_asked_again_for_a_new_child_sa():
    from host_tests.test_ike_engine import _create_child
    verdict = {"ok": True}
    net = Net(None, lambda addr, pid, m: PeerConfig() if verdict["ok"] else None)
    sa_a, _ = up(net)
    allowed = _create_child(net, sa_a)                 # control: the policy still agrees
    assert allowed.get(33) is not None                 # an SA payload: the child was made
    verdict["ok"] = False                              # e.g. the policy server now blocks it
    refused = _create_child(net, sa_a)
    assert refused.notify(14) is not None and refused.get(33) is None   # NO_PROPOSAL_CHOSEN
