"""Ours <-> ours over real UDP sockets on loopback (no root): each node on its own 127.0.0.x.

The engine tests prove the exchanges in memory; these prove the runtime around them:
sockets, the RFC 3948 marker, ESP install and rekey, delivery to endpoints.
"""

import asyncio
import os
import random
import socket

import pytest

from pnp_hostboard.board import HostBoard
from pnpipsec import AUTHENTICATED, ENCRYPTED
from pnpipsec.identity import Identity
from pnpipsec.ike.engine import PeerConfig
from pnpipsec.node import Node, NodeError, PeerEntry

ID_FQDN = 2
# A loopback /24 of this process's own, so parallel test runs never share ports.
_NET = "127.%d.%d." % (random.randint(1, 254), os.getpid() % 250 + 1)
HA, HB, HX = _NET + "2", _NET + "3", _NET + "4"


def free_port():
    for _ in range(50):
        port = random.randint(20000, 60000)
        ok = True
        for host in (HA, HB):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind((host, port))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return port
    raise RuntimeError("no free port")


def cfgs(auth, ia, ib, psk_a=b"correct horse", psk_b=b"correct horse"):
    if auth == "null":
        mk = lambda **k: PeerConfig(auth="null", local_id=(13, b""), remote_id=(13, b""), **k)  # noqa: E731
        return mk(), mk()
    if auth == "psk":
        a = PeerConfig(auth="psk", psk=psk_a, local_id=(ID_FQDN, b"a"), remote_id=(ID_FQDN, b"b"))
        b = PeerConfig(auth="psk", psk=psk_b, local_id=(ID_FQDN, b"b"), remote_id=(ID_FQDN, b"a"))
        return a, b
    a = PeerConfig(auth="pubkey", peer_pubkey=ib.public, local_id=(ID_FQDN, b"a"), remote_id=(ID_FQDN, b"b"))
    b = PeerConfig(auth="pubkey", peer_pubkey=ia.public, local_id=(ID_FQDN, b"b"), remote_id=(ID_FQDN, b"a"))
    return a, b


async def pair(auth, node_kw=None, **kw):
    """Two nodes on 127.0.0.2 / 127.0.0.3 with the same free port for IKE and NAT-T."""
    port = free_port()
    ia, ib = Identity(os.urandom(32)), Identity(os.urandom(32))
    ca, cb = cfgs(auth, ia, ib, **kw)
    nk = node_kw or {}
    a = Node(HostBoard(bind6=None, bind4=HA), ia,
             peers=[PeerEntry(HB, ca, ike_port=port, natt_port=port)], ike_port=port, natt_port=port, **nk)
    b = Node(HostBoard(bind6=None, bind4=HB), ib,
             peers=[PeerEntry(HA, cb, ike_port=port, natt_port=port)], ike_port=port, natt_port=port, **nk)
    await a.start()
    await b.start()
    return a, b, port


async def echo(node, port):
    ep = node.endpoint(port)
    while True:
        data, addr, level = await ep.recv()
        await ep.send(data, addr)


@pytest.mark.parametrize("auth,level", [("null", ENCRYPTED), ("psk", AUTHENTICATED), ("pubkey", AUTHENTICATED)])
def test_handshake_and_echo(auth, level):
    async def main():
        a, b, _ = await pair(auth)
        t = asyncio.create_task(echo(b, 7000))
        try:
            assert await a.connect(HB, timeout=10) == level
            # NULL auth starts ENCRYPTED; the channel-bound proof (trust on first use)
            # then lifts both sides to AUTHENTICATED without a new handshake.
            assert await a.wait_level(HB, AUTHENTICATED, timeout=5) == AUTHENTICATED
            assert await b.wait_level(HA, AUTHENTICATED, timeout=5) == AUTHENTICATED
            ep = a.endpoint(40000)
            await ep.send(b"hello through ESP", (HB, 7000))
            data, addr, lvl = await asyncio.wait_for(ep.recv(), 5)
            assert (data, addr, lvl) == (b"hello through ESP", (HB, 7000), AUTHENTICATED)
            assert a.stats["esp_out"] == 1 and a.stats["esp_in"] == 1
        finally:
            t.cancel()
            await a.stop()
            await b.stop()
    asyncio.run(main())


def test_wrong_psk_fails_clearly():
    async def main():
        a, b, _ = await pair("psk", psk_b=b"another secret")
        try:
            with pytest.raises(NodeError) as ei:
                await a.connect(HB, timeout=10)
            assert "failed" in str(ei.value)
            assert not a.out and not b.out
            # Policy wants encryption for this datagram: it fails, it does not go clear.
            with pytest.raises(NodeError):
                await a.endpoint(40009).send(b"x", (HB, 7000), min_level=ENCRYPTED, timeout=0.5)
            assert a.stats["clear_out"] == 0
        finally:
            await a.stop()
            await b.stop()
    asyncio.run(main())


def test_rekey_under_steady_traffic_loses_nothing():
    async def main():
        a, b, _ = await pair("psk")
        t = asyncio.create_task(echo(b, 7000))
        try:
            await a.connect(HB, timeout=10)
            ep = a.endpoint(40001)
            first_spi = a.out[HB].child.spi_out
            got = []
            for i in range(300):
                if i == 100:
                    a.engine.rekey_child(a.out[HB].child, a.board.now_ms())
                    a._pump()
                if i == 200:
                    b.engine.rekey_child(b.out[HA].child, b.board.now_ms())
                    b._pump()
                await ep.send(b"%d" % i, (HB, 7000))
                await asyncio.sleep(0.002)
                while ep._items:
                    got.append((await ep.recv())[0])
            deadline = asyncio.get_running_loop().time() + 3
            while len(got) < 300 and asyncio.get_running_loop().time() < deadline:
                try:
                    got.append((await asyncio.wait_for(ep.recv(), 0.5))[0])
                except asyncio.TimeoutError:
                    pass
            assert sorted(int(x) for x in got) == list(range(300))
            assert a.out[HB].child.spi_out != first_spi  # really rekeyed
            assert a.stats["esp_drop"] == 0 and b.stats["esp_drop"] == 0
        finally:
            t.cancel()
            await a.stop()
            await b.stop()
    asyncio.run(main())


def test_garbage_is_counted_and_node_keeps_working():
    async def main():
        a, b, port = await pair("null")
        t = asyncio.create_task(echo(b, 7000))
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((HX, 0))
        try:
            rnd = random.Random(7)
            junk = [b"", b"\x00", b"\x00\x00\x00\x00", b"\x00\x00\x00\x00" + bytes(30), b"\x01\x02\x03\x04" * 10]
            junk += [bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 300))) for _ in range(200)]
            for j in junk:
                s.sendto(j, (HB, port))
            await asyncio.sleep(0.3)
            counted = (b.stats["bad_datagram"] + b.stats["no_sa"]
                       + sum(v for k, v in b.engine.stats.items() if k.startswith("drop")))
            assert counted >= len(junk) - 2  # the empty and 1-byte 0xFF keepalive-like may be benign
            assert await a.connect(HB, timeout=10) == ENCRYPTED
            ep = a.endpoint(40002)
            await ep.send(b"still alive", (HB, 7000))
            assert (await asyncio.wait_for(ep.recv(), 5))[0] == b"still alive"
        finally:
            s.close()
            t.cancel()
            await a.stop()
            await b.stop()
    asyncio.run(main())


def test_nat_keepalives_flow_while_sa_is_up():
    async def main():
        a, b, _ = await pair("null", node_kw={"keepalive": 0.05})
        try:
            await a.connect(HB, timeout=10)
            await asyncio.sleep(0.4)
            assert a.stats["keepalive_out"] >= 3 and b.stats["keepalive_in"] >= 3
            assert b.stats["bad_datagram"] == 0
        finally:
            await a.stop()
            await b.stop()
    asyncio.run(main())


def test_soft_sequence_limit_rekeys_without_loss():
    async def main():
        a, b, _ = await pair("psk", node_kw={"esp_soft_packets": 40})
        t = asyncio.create_task(echo(b, 7000))
        try:
            await a.connect(HB, timeout=10)
            first = a.out[HB].child.spi_out
            ep = a.endpoint(40003)
            got = []
            for i in range(150):
                await ep.send(b"%d" % i, (HB, 7000))
                await asyncio.sleep(0.002)
                while ep._items:
                    got.append((await ep.recv())[0])
            while len(got) < 150:
                got.append((await asyncio.wait_for(ep.recv(), 3))[0])
            assert sorted(int(x) for x in got) == list(range(150))
            assert a.out[HB].child.spi_out != first
            assert a.out[HB].out.seq < 150   # the counter restarted on a new SA
        finally:
            t.cancel()
            await a.stop()
            await b.stop()
    asyncio.run(main())


def test_without_tofu_null_peer_stays_encrypted_until_approved():
    async def main():
        a, b, _ = await pair("null", node_kw={"tofu": False})
        try:
            assert await a.connect(HB, timeout=10) == ENCRYPTED
            await asyncio.sleep(0.2)                         # the proofs arrived meanwhile
            assert a.stats["proof_ok"] == 1 and a.level(HB) == ENCRYPTED
            with pytest.raises(NodeError):
                await a.wait_level(HB, AUTHENTICATED, timeout=0.3)
            a.approve(HB, b.identity.public)        # the user scanned b's QR code
            assert a.level(HB) == AUTHENTICATED
            assert b.level(HA) == ENCRYPTED         # b has not approved a
        finally:
            await a.stop()
            await b.stop()
    asyncio.run(main())


def test_proved_level_survives_ike_rekey():
    async def main():
        a, b, _ = await pair("null")
        t = asyncio.create_task(echo(b, 7000))
        try:
            await a.connect(HB, timeout=10)
            await a.wait_level(HB, AUTHENTICATED, timeout=5)
            old = a.ike_up[HB]
            a.engine.rekey_ike(old, a.board.now_ms())
            a._pump()
            for _ in range(100):
                await asyncio.sleep(0.02)
                if a.ike_up[HB] is not old:
                    break
            assert a.ike_up[HB] is not old and a.ike_up[HB].spi_i != old.spi_i
            assert a.level(HB) == AUTHENTICATED and b.level(HA) == AUTHENTICATED
            ep = a.endpoint(40004)
            await ep.send(b"after rekey", (HB, 7000))
            assert await asyncio.wait_for(ep.recv(), 5) == (b"after rekey", (HB, 7000), AUTHENTICATED)
        finally:
            t.cancel()
            await a.stop()
            await b.stop()
    asyncio.run(main())


def test_restarted_peer_is_reached_on_its_new_sa():
    """b restarts with a new identity; a still holds the old, AUTHENTICATED SA (whose keys
    b lost). Traffic must go on b's new SA, and the changed key must not be trusted."""
    async def main():
        a, b, port = await pair("null")
        try:
            await a.connect(HB, timeout=10)
            await a.wait_level(HB, AUTHENTICATED, timeout=5)
            await b.stop()
            b2 = Node(HostBoard(bind6=None, bind4=HB), Identity(os.urandom(32)),
                      peers=[PeerEntry(HA, cfgs("null", None, None)[1], ike_port=port, natt_port=port)],
                      ike_port=port, natt_port=port)
            await b2.start()
            t = asyncio.create_task(echo(b2, 7000))
            try:
                assert await b2.connect(HA, timeout=10) == ENCRYPTED
                await asyncio.sleep(0.2)                     # proofs crossed
                assert a.stats["key_changed"] == 1           # reported ...
                assert a.level(HB) == ENCRYPTED              # ... and not trusted
                ep = a.endpoint(40005)
                await ep.send(b"to the new b", (HB, 7000))
                assert (await asyncio.wait_for(ep.recv(), 5))[0] == b"to the new b"
            finally:
                t.cancel()
                await b2.stop()
        finally:
            await a.stop()
    asyncio.run(main())


def test_many_senders_do_not_grow_per_peer_tables():
    """Datagrams from 100 addresses (ESP-looking junk to the NAT-T port, clear datagrams
    to an endpoint) are counted, but the per-peer tables stay capped."""
    async def main():
        a, b, port = await pair("null")
        b.endpoint(7000)
        socks = []
        try:
            await asyncio.sleep(0.05)
            base = _NET.rsplit(".", 2)[0]
            for i in range(100):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("%s.200.%d" % (base, i + 1), 0))
                socks.append(s)
                s.sendto(b"\x01\x02\x03\x04" + bytes(40), (HB, port))   # ESP-shaped, unknown SPI
                s.sendto(b"hello", (HB, 7000))                           # clear datagram
            await asyncio.sleep(0.3)
            assert b.stats["no_sa"] == 100
            ep = b.endpoints[7000]
            assert b.stats["clear_in"] == 100 and ep.pending() + ep.dropped == 100   # queue bounded
            # nothing learnt from unauthenticated junk; one bounded record per peer, and
            # (a record per sender, bounded)
            assert all(p.natt_port is None for h, p in b.by_host.items() if h != HA)
            assert len(b.by_host) <= 64
            assert b.stats["peer_table_full"] == 0  # strangers push out strangers only
        finally:
            for s in socks:
                s.close()
            await a.stop()
            await b.stop()
    asyncio.run(main())
