"""CHILD SAs: our offer, the responder's choice and the initiator's check (used by
IKE_AUTH too), and CREATE_CHILD_SA for new CHILD SAs and CHILD rekeys, both roles
(RFC 7296 sections 1.3.1, 1.3.3, 2.8). A CREATE_CHILD_SA that rekeys the IKE SA goes
to x_rekey. Functions take the engine (eng) first; see engine.py for the contract."""

from pnpipsec.ike import const as C
from pnpipsec.ike import codec
from pnpipsec.ike import ts as TS
from pnpipsec.ike import x_info
from pnpipsec.ike.codec import IkeParseError, notify as _n
from pnpipsec.ike.keys import child_keys
from pnpipsec.ike.props import select, T_DH31
from pnpipsec.ike.sa import ChildSA, ChildFailed, ChildRekeyed, ChildUp, PENDING
from pnpipsec.ticks import add

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_DH_CURVE25519 = const(31)
_INFORMATIONAL = const(37)
_N_CHILD_SA_NOT_FOUND = const(44)
_N_INVALID_KE_PAYLOAD = const(17)
_N_NO_ADDITIONAL_SAS = const(35)
_N_NO_PROPOSAL_CHOSEN = const(14)
_N_REKEY_SA = const(16393)
_N_TEMPORARY_FAILURE = const(43)
_N_TS_UNACCEPTABLE = const(38)
_N_USE_TRANSPORT_MODE = const(16391)
_PROTO_ESP = const(3)
_PROTO_IKE = const(1)
_PT_D = const(42)
_PT_KE = const(34)
_PT_NONCE = const(40)
_PT_SA = const(33)
_PT_TSI = const(44)
_PT_TSR = const(45)
_RETRY_LATER = const(10000)     # ms


# ------------------------------------------------------------------ offer, choice, check

def ts_offer(sa, cfg):
    """(TSi, TSr) we propose as initiator of an exchange creating a CHILD SA."""
    peer = TS.host_of(sa.peer_addr)
    if cfg.mode == "tunnel" or peer is None:
        fam = len(peer) if peer is not None else 16
        return (cfg.local_ts or [TS.full_range(fam)],
                cfg.remote_ts or [TS.full_range(fam)])
    return (cfg.local_ts or [TS.full_range(len(peer))], cfg.remote_ts or [(peer, peer)])


def offer(eng, spi_in, mode, tsi, tsr, dh):
    """Our CHILD SA offer: ([N(USE_TRANSPORT_MODE)], SA) and ([TSi, TSr]); the caller
    puts Nonce/KE between them."""
    p = []
    if mode == "transport":
        p.append(_n(_N_USE_TRANSPORT_MODE))
    props = []
    for num, proto, spi, trs in eng.esp_proposals:
        trs = list(trs)
        if dh:
            trs.append(T_DH31)
        props.append((num, proto, spi_in.to_bytes(4, "big"), trs))
    p.append((_PT_SA, codec.encode_sa(props)))
    return p, [(_PT_TSI, codec.encode_ts(tsi)), (_PT_TSR, codec.encode_ts(tsr))]


def _install(eng, sa, ours, spi_in, chosen, ni, nr, shared, mode, local, remote, now):
    """The CHILD SA of a chosen proposal: keys (RFC 7296 section 2.17), lifetimes; it
    joins sa.children. ours: we initiated the exchange that created it."""
    ei, ai, er, ar = child_keys(sa.keys.sk_d, ni, nr, shared)
    if ours:
        ei, ai, er, ar = er, ar, ei, ai
    child = ChildSA(sa, spi_in, int.from_bytes(chosen[1], "big"), ei, ai, er, ar, mode,
                    local, remote)
    lt = sa.cfg.child_life_ms
    child.rekey_at = eng._jitter(now, lt)
    child.expire_at = add(now, lt) if lt else None
    sa.children.append(child)
    eng._child_up(child)
    return child


def _refuse(eng, sa, ntype):
    eng._emit(ChildFailed(sa, C.error_name(ntype)))
    return None, [_n(ntype)]


def accept(eng, sa, props, tsi, tsr, transport, ni, nr, shared, dh, old, mid_payloads, now):
    """Responder side of a CHILD SA (peer is "i"). Returns (child or None, payloads).
    mid_payloads go between SA and TSi (Nr, KEr in CREATE_CHILD_SA)."""
    cfg = sa.cfg
    chosen = select(props, _PROTO_ESP, 4, dh)
    if chosen is None:
        return _refuse(eng, sa, _N_NO_PROPOSAL_CHOSEN)
    if cfg.mode == "transport" and not transport and old is None:
        # A transport-mode policy never grants a tunnel: its selectors would let the
        # peer speak for other addresses.
        return _refuse(eng, sa, _N_NO_PROPOSAL_CHOSEN)
    mode = "transport" if transport and cfg.mode == "transport" else "tunnel"
    pi, pr = TS.ranges(tsi), TS.ranges(tsr)
    peer = TS.host_of(sa.peer_addr)
    own = [(peer, peer)] if peer is not None and TS.covered([(peer, peer)], pi) else None
    if old is not None:
        remote, local = old.remote_ts, old.local_ts
        mode = old.mode
    elif mode == "transport":
        remote = cfg.remote_ts or own
        local = cfg.local_ts
        if local is None and len(pr) >= 1 and pr[0][0] == pr[0][1]:
            local = [pr[0]]
    else:
        # Unless configured, a peer's selector is its own address: never a range
        # it picked (it could then send as any inner source).
        remote = cfg.remote_ts or own
        local = cfg.local_ts or pr
    if remote is None or local is None or not TS.covered(remote, pi) \
            or not TS.covered(local, pr):
        return _refuse(eng, sa, _N_TS_UNACCEPTABLE)
    spi_in = eng._new_esp_spi()
    child = _install(eng, sa, False, spi_in, chosen, ni, nr, shared, mode, local, remote, now)
    p = [_n(_N_USE_TRANSPORT_MODE)] if mode == "transport" else []
    p.append((_PT_SA, codec.encode_sa([(chosen[0], _PROTO_ESP,
                                         spi_in.to_bytes(4, "big"), chosen[2])])))
    p += mid_payloads
    p.append((_PT_TSI, codec.encode_ts(remote)))
    p.append((_PT_TSR, codec.encode_ts(local)))
    return child, p


def finish(eng, sa, msg, offer, ni, nr, shared, dh, now):
    """Initiator side: check the responder's SA/TS answer for our offer
    (spi_in, mode, tsi, tsr). Returns the ChildSA or None (ChildFailed emitted)."""
    spi_in, mode, tsi, tsr = offer
    err = msg.error_notify()
    sab = msg.get(_PT_SA)
    if err is not None or sab is None:
        eng._emit(ChildFailed(sa, C.error_name(err[0]) if err else "no SA in answer"))
        return None
    props = codec.parse_sa(sab)
    tib, trb = msg.get(_PT_TSI), msg.get(_PT_TSR)
    if tib is None or trb is None:
        raise IkeParseError("CHILD answer without TS")
    ri, rr = TS.ranges(codec.parse_ts(tib)), TS.ranges(codec.parse_ts(trb))
    chosen = select(props, _PROTO_ESP, 4, dh) if len(props) == 1 else None
    why = None
    if chosen is None:
        why = "NO_PROPOSAL_CHOSEN"
    elif not TS.covered(ri, tsi) or not TS.covered(rr, tsr):
        why = "TS_UNACCEPTABLE"
    elif (mode == "transport") != (msg.notify(_N_USE_TRANSPORT_MODE) is not None):
        why = "mode mismatch"
    if why is not None:
        eng._emit(ChildFailed(sa, why))
        if chosen is not None:
            # the peer installed its half: delete it (by our inbound SPI)
            eng._request(sa, _INFORMATIONAL, x_info.Simple(
                [(_PT_D, codec.encode_delete(_PROTO_ESP, [spi_in.to_bytes(4, "big")]))]), now)
        return None
    return _install(eng, sa, True, spi_in, chosen, ni, nr, shared, mode, ri, rr, now)


def answer_ke(eng, sa, msg, ke):
    """Our DH half for the peer's KE in a CREATE_CHILD_SA request: (pub, shared), or
    None after answering INVALID_KE_PAYLOAD (not group 31) / NO_PROPOSAL_CHOSEN
    (an all-zero shared secret)."""
    if ke is None or ke[0] != _DH_CURVE25519:
        eng._respond(sa, msg, [_n(_N_INVALID_KE_PAYLOAD, b"\x00\x1f")])
        return None
    priv, pub = eng.dh.keypair(eng.rand)
    try:
        return pub, eng.dh.x25519(priv, ke[1])
    except ValueError:
        eng._respond(sa, msg, [_n(_N_NO_PROPOSAL_CHOSEN)])
        return None


# ------------------------------------------------------------------ CREATE_CHILD_SA

def request(eng, sa, msg, now, cfg=PENDING):
    """Responder: a peer's CREATE_CHILD_SA (new CHILD SA, CHILD rekey or IKE rekey).
    cfg: the policy's answer when the engine resumes a held request for a new CHILD SA
    (PENDING: ask the policy now; if it says PENDING too, the engine holds it)."""
    sab, nb = msg.get(_PT_SA), msg.get(_PT_NONCE)
    if sab is None or nb is None:
        raise IkeParseError("CREATE_CHILD_SA lacks SA or Nonce")
    props = codec.parse_sa(sab)
    ni = codec.parse_nonce(nb)
    keb = msg.get(_PT_KE)
    ke = codec.parse_ke(keb) if keb is not None else None
    for pr in props:
        if pr[1] == _PROTO_IKE:
            from pnpipsec.ike import x_rekey
            x_rekey.request(eng, sa, msg, props, ni, ke, now)
            return
    tib, trb = msg.get(_PT_TSI), msg.get(_PT_TSR)
    if tib is None or trb is None:
        raise IkeParseError("CREATE_CHILD_SA lacks TS")
    tsi, tsr = codec.parse_ts(tib), codec.parse_ts(trb)
    rk = msg.notify(_N_REKEY_SA)
    transport = msg.notify(_N_USE_TRANSPORT_MODE) is not None
    old = None
    if rk is not None:
        spi = int.from_bytes(rk[2], "big") if len(rk[2]) == 4 else -1
        for ch in sa.children:
            if ch.spi_out == spi:
                old = ch
        if old is None:
            eng._respond(sa, msg, [_n(_N_CHILD_SA_NOT_FOUND, b"", _PROTO_ESP, rk[2])])
            return
        if old.state != "up" or (old.rekeying and not sa.initiator) \
                or len(sa.children) >= 2 * eng.max_children:
            # (a peer that rekeys and never deletes the old SAs must not grow our
            # table: one predecessor per CHILD SA may linger, no more)
            eng._respond(sa, msg, [_n(_N_TEMPORARY_FAILURE)])
            return
    elif len(sa.children) >= eng.max_children:
        eng._respond(sa, msg, [_n(_N_NO_ADDITIONAL_SAS)])
        return
    else:
        # a new CHILD SA is a new proposal: the policy may have changed its mind
        if cfg == PENDING:
            cfg = eng.policy(sa.peer_addr, sa.peer_id, sa.method.name)
            if cfg == PENDING:
                eng._hold(sa, msg, sa.peer_addr, sa.peer_id, sa.method.name, now)
                return
        if cfg is None:
            eng._respond(sa, msg, [_n(_N_NO_PROPOSAL_CHOSEN)])
            return
    shared = None
    nr = eng.rand(32)
    mid = [(_PT_NONCE, nr)]
    if ke is not None:
        dh = answer_ke(eng, sa, msg, ke)
        if dh is None:
            return
        pub, shared = dh
        mid.append((_PT_KE, codec.encode_ke(_DH_CURVE25519, pub)))
    child, p = accept(eng, sa, props, tsi, tsr, transport, ni, nr, shared,
                      "require" if ke is not None else "none", old, mid, now)
    eng._respond(sa, msg, p)
    if child is None:
        return
    if old is not None:
        old.state = "rekeyed"
        eng._emit(ChildRekeyed(old, child))
    else:
        eng._emit(ChildUp(child))


class New:
    """Initiator: a new CHILD SA over an established IKE SA (RFC 7296 section 1.3.1)."""

    def __init__(self, eng, sa, cfg):
        self.eng = eng
        self.sa = sa
        self.cfg = cfg

    def build(self, now):
        eng, sa, cfg = self.eng, self.sa, self.cfg
        if sa.state != "established":
            sa.creating_child = False
            return None
        self.ni = eng.rand(32)
        spi_in = eng._new_esp_spi()
        tsi, tsr = ts_offer(sa, cfg)
        self.offer = (spi_in, cfg.mode, tsi, tsr)
        a, b = offer(eng, spi_in, cfg.mode, tsi, tsr, False)
        return a + [(_PT_NONCE, self.ni)] + b

    def done(self, sa, msg, now):
        eng = self.eng
        sa.creating_child = False
        err = msg.error_notify()
        nb = msg.get(_PT_NONCE)
        if err is not None or nb is None or sa.state != "established":
            eng._emit(ChildFailed(sa, C.error_name(err[0]) if err else "no CHILD SA in answer"))
            return
        child = finish(eng, sa, msg, self.offer, self.ni, codec.parse_nonce(nb), None,
                       "none", now)
        if child is not None:
            eng._emit(ChildUp(child))


class Rekey:
    """Initiator: rekey a CHILD SA (RFC 7296 section 2.8), with KE when cfg.pfs."""

    def __init__(self, eng, sa, old):
        self.eng = eng
        self.sa = sa
        self.old = old

    def build(self, now):
        eng, sa, old = self.eng, self.sa, self.old
        if old.state != "up" or sa.state != "established":
            old.rekeying = False
            return None
        self.spi_in = eng._new_esp_spi()
        self.ni = eng.rand(32)
        pfs = sa.cfg.pfs
        p = [_n(_N_REKEY_SA, b"", _PROTO_ESP, old.spi_in.to_bytes(4, "big"))]
        a, b = offer(eng, self.spi_in, old.mode, old.local_ts, old.remote_ts, pfs)
        p += a
        p.append((_PT_NONCE, self.ni))
        self.priv = None
        if pfs:
            self.priv, pub = eng.dh.keypair(eng.rand)
            p.append((_PT_KE, codec.encode_ke(_DH_CURVE25519, pub)))
        return p + b

    def done(self, sa, msg, now):
        eng, old = self.eng, self.old
        old.rekeying = False
        nb = msg.get(_PT_NONCE)
        err = msg.error_notify()
        if err is not None or nb is None:
            if old.state == "up":
                old.rekey_at = add(now, _RETRY_LATER)
            return
        nr = codec.parse_nonce(nb)
        shared = None
        if self.priv is not None:
            keb = msg.get(_PT_KE)
            if keb is None:
                raise IkeParseError("no KE in CHILD rekey answer")
            g, kd = codec.parse_ke(keb)
            try:
                shared = eng.dh.x25519(self.priv, kd) if g == _DH_CURVE25519 else None
            except ValueError:
                shared = None
            if shared is None:
                eng._emit(ChildFailed(sa, "bad KE"))
                return
        offer_ = (self.spi_in, old.mode, old.local_ts, old.remote_ts)
        new = finish(eng, sa, msg, offer_, self.ni, nr, shared,
                     "require" if self.priv is not None else "none", now)
        self.priv = None
        if new is None:
            return
        if old.ike is not sa:
            # the IKE SA was rekeyed meanwhile: the new CHILD SA follows the old one
            sa.children.remove(new)
            new.ike = old.ike
            old.ike.children.append(new)
            sa = old.ike
        if old.state == "up":
            old.state = "rekeyed"
        eng._emit(ChildRekeyed(old, new))
        old.state = "deleting"
        eng._del_child(sa, old, now)
