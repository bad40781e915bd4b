"""IKEv2 engine, sans-IO: datagrams and time in, datagrams and events out.

CONTRACT (the node runtime in pnpipsec/node.py and the tests code against this):

    eng = Engine(rand, aes, local, policy=None)
        rand(n) -> bytes; aes: an AES provider (pnpipsec.crypto.aes);
        local: LocalIdentity(ed25519_seed=None, psk_ids=None) -- our long-term identity;
        policy(peer_addr, peer_id, auth_method) -> PeerConfig or None: asked on every
        incoming IKE_SA_INIT (peer_id None then) and again in IKE_AUTH with the peer's
        ID; None refuses (NO_PROPOSAL_CHOSEN / AUTHENTICATION_FAILED).

    sa = eng.initiate(peer_addr, peer_cfg, now)   -> IkeSA  (queues IKE_SA_INIT)
    eng.receive(data, peer_addr, now)              IKE message without non-ESP marker
    eng.tick(now)                                  retransmit, give up, rekey, liveness
    eng.next_deadline() -> float or None
    eng.pop_datagrams() -> list of (bytes, peer_addr)   to send (node adds marker on 4500)
    eng.pop_events() -> list of events (see Event classes below)
    eng.rekey_child(child, now); eng.rekey_ike(sa, now); eng.delete(sa, now)
    eng.stats: dict of counters, e.g. "drop_malformed", "drop_unknown_spi", "retransmit"

    PeerConfig(auth="null"|"psk"|"pubkey", local_id=None, remote_id=None, psk=None,
               peer_pubkey=None, mode="transport"|"tunnel", local_ts=None,
               remote_ts=None, childless=False, child_lifetime=3600,
               ike_lifetime=14400, retransmit_base=0.5, retransmit_tries=5)
        ids are (id_type, bytes); traffic selectors are lists of
        (start_addr_bytes, end_addr_bytes) with 4- or 16-byte addresses.

    Events: IkeUp(sa), ChildUp(child), ChildRekeyed(old, new), ChildDown(child),
            IkeDown(sa, reason), AuthFailed(sa, reason), NotifyReceived(sa, type, data).
    A ChildSA carries spi_in, spi_out (4-byte ints), enc_in, int_in, enc_out, int_out
    (bytes), mode, local_ts, remote_ts, peer_addr, ike (the IkeSA).
    An IkeSA carries spi_i, spi_r (8 bytes), initiator (bool), peer_addr, peer_id,
    auth ("null"/"psk"/"pubkey"), peer_pubkey (for pubkey auth), state, keys for the
    key log (sk_ei, sk_er, sk_ai, sk_ar), and children.
"""
