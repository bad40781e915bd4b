"""The node's per-peer record (node.Peer): proofs stay bound to their own IKE SA when a
peer holds two (both ends initiated at once), move with an IKE rekey, and leave with
the SA. Runs on the in-memory world of host_tests/mp/test_time_mp.py."""

import os
import sys

from pnp_hostboard.crypto import CryptographyAES, fast_ed25519, fast_x25519
from pnpipsec import AUTHENTICATED, ENCRYPTED

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "mp"))
import test_time_mp as world  # noqa: E402

A, B = world.A, world.B


def _world():
    return world.World(0, CryptographyAES(), fast_x25519, fast_ed25519)


def test_two_sas_with_one_peer_each_keep_their_proof():
    w = _world()
    w.a._probe(B, True)
    w.b._probe(A, True)              # both ends start at once: two IKE SAs
    w.settle()
    sas = [sa for sa in w.a.engine.sas.values() if sa.state == "established"]
    assert len(sas) == 2, sas
    p = w.a.by_host[B]
    assert len(p.proofs) == 2 and p.key == w.b.identity.public
    for sa in sas:                   # each SA is AUTHENTICATED by the proof made on it
        assert w.a._sa_level(B, sa) == AUTHENTICATED
    assert w.a.level(B) == AUTHENTICATED
    # One SA goes: its proof goes with it, the other stays AUTHENTICATED.
    gone = sas[0]
    w.a.engine.delete(gone, w.tick())
    w.a._pump()
    w.settle()
    assert [s for s, _ in p.proofs] == [sas[1]] and w.a.level(B) == AUTHENTICATED
    assert w.a._sa_level(B, gone) == ENCRYPTED


def test_a_proof_moves_with_an_ike_rekey_and_a_second_proof_on_an_sa_is_ignored():
    w = _world()
    # both keep their AUTH octets after the first proofs (by default they forget them),
    # so b can prove itself again on the same SA below and a can check it
    w.a.engine.forget_octets = w.b.engine.forget_octets = lambda sa, local=True: None
    w.a._probe(B, True)
    w.settle()
    p = w.a.by_host[B]
    old = p.ike
    w.a.engine.rekey_ike(old, w.tick())
    w.a._pump()
    w.settle()
    assert p.ike is not old and [s for s, _ in p.proofs] == [p.ike]
    assert w.a.level(B) == AUTHENTICATED
    seen = w.a.stats["proof_ok"]
    w.b._proof_out(w.b.by_host[A].ike)     # a second proof on the same (rekeyed) SA
    w.b._pump()
    w.settle()
    assert w.a.stats["proof_ok"] == seen + 1   # the rekeyed SA had none yet: counted
    w.b._proof_out(w.b.by_host[A].ike)
    w.b._pump()
    w.settle()
    assert w.a.stats["proof_ok"] == seen + 1 and w.a.stats["proof_ignored"] == 1


def test_the_auth_octets_are_forgotten_once_both_proofs_are_done():
    """A board keeps no AUTH octets (a few hundred bytes per SA) after the proofs; a
    late proof on that SA is ignored, not checked against nothing."""
    w = _world()
    w.quiet = True
    w.a._probe(B, True)
    w.settle()
    w.run(0, end=5000)               # the proofs queue behind the first exchanges
    sa_a, sa_b = w.a.by_host[B].ike, w.b.by_host[A].ike
    assert w.a.level(B) == AUTHENTICATED and w.b.level(A) == AUTHENTICATED
    assert sa_a.octets is None and sa_b.octets is None
    ignored = w.a.stats.get("proof_ignored", 0)
    w.b.engine.send_notify(sa_b, 40969, bytes(97), w.tick())
    w.b._pump()
    w.settle()
    assert w.a.stats["proof_ignored"] == ignored + 1 and w.a.stats["proof_bad"] == 0


def test_the_record_holds_level_discovery_and_identity():
    from pnpipsec.identity import fingerprint
    w = _world()
    w.a._probe(B, True)
    w.settle()
    for _ in range(3):                          # the passes send the proofs
        w.timers()
    p = w.a.by_host[B]
    fp = fingerprint(w.b.identity.public)      # the proof gave the identity
    assert p.fp == fp and w.a.peer_by_id(fp) is p and w.a.peer_by_id("nobody") is None
    assert p.level == AUTHENTICATED == w.a.levels.level(B) and p.since is not None
    assert p.disc is not None and p.disc.state == "ipsec"
    assert p.children and p.out is p.children[-1]
    ike = p.ike
    w.a.engine.delete(ike, w.tick())
    w.a._pump()
    w.settle()
    assert p.level == w.a.level(B) == w.a.levels.level(B) == 0 and not p.children
