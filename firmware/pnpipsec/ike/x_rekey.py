"""IKE SA rekey, both roles (CREATE_CHILD_SA with an IKE proposal, RFC 7296 section
1.3.2): the new IKE SA takes over the children and the identity, the old one is
deleted. The engine imports this module at the first rekey. Functions take the engine
(eng) first; see engine.py for the contract."""

from pnpipsec.ike import codec
from pnpipsec.ike import x_child, x_info
from pnpipsec.ike.codec import notify as _n
from pnpipsec.ike.keys import ike_keys
from pnpipsec.ike.props import select
from pnpipsec.ike.sa import IkeSA, IkeRekeyed
from pnpipsec.ticks import add

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_DH_CURVE25519 = const(31)
_N_NO_PROPOSAL_CHOSEN = const(14)
_N_TEMPORARY_FAILURE = const(43)
_PROTO_IKE = const(1)
_PT_KE = const(34)
_PT_NONCE = const(40)
_PT_SA = const(33)
_REKEYED_KEEP = const(30000)    # ms
_RETRY_LATER = const(10000)


def request(eng, sa, msg, props, ni, ke, now):
    """Responder: the peer rekeys the IKE SA (x_child.request parsed the message)."""
    if (sa.rekeying and not sa.initiator) or eng.owned_count() >= 2 * eng.max_sas:
        eng._respond(sa, msg, [_n(_N_TEMPORARY_FAILURE)])
        return
    chosen = select(props, _PROTO_IKE, 8, "require")
    if chosen is None:
        eng._respond(sa, msg, [_n(_N_NO_PROPOSAL_CHOSEN)])
        return
    dh = x_child.answer_ke(eng, sa, msg, ke)
    if dh is None:
        return
    pub, shared = dh
    new = IkeSA(False, chosen[1], sa.peer_addr, sa.cfg)
    new.spi_r = eng._new_ike_spi()
    new.nr = eng.rand(32)
    new.ni = ni
    new.keys = ike_keys(ni, new.nr, shared, new.spi_i, new.spi_r, sa.keys.sk_d)
    eng._respond(sa, msg, [
        (_PT_SA, codec.encode_sa([(chosen[0], _PROTO_IKE, new.spi_r, chosen[2])])),
        (_PT_NONCE, new.nr), (_PT_KE, codec.encode_ke(_DH_CURVE25519, pub))])
    _move(eng, sa, new, now)
    eng._add(new)


def _move(eng, old, new, now):
    """Finish an IKE rekey: new SA takes over the children and the identity."""
    for k in ("peer_id", "method", "peer_pubkey", "octets", "mobike", "local_addr",
              "peer_addrs"):
        setattr(new, k, getattr(old, k))
    eng._identified(new)
    new.surfaced = True
    new.state = "established"
    new.last_rx = now
    new.rekey_at = eng._jitter(now, new.cfg.ike_life_ms)
    new.children = old.children
    for ch in new.children:
        ch.ike = new
        if ch.rekeying:
            # its rekey exchange is stranded on the old IKE SA: retry on the new one
            ch.rekeying = False
            ch.rekey_at = add(now, _RETRY_LATER)
    old.children = []
    old.state = "rekeyed"
    old.rekeying = False
    old.expire_at = add(now, _REKEYED_KEEP)
    eng._emit(IkeRekeyed(old, new))


class Rekey:
    """Initiator: rekey the IKE SA."""

    def __init__(self, eng, sa):
        self.eng = eng
        self.sa = sa

    def build(self, now):
        eng, sa = self.eng, self.sa
        if sa.state != "established":
            sa.rekeying = False
            return None
        self.spi = eng._new_ike_spi()
        self.ni = eng.rand(32)
        self.priv, pub = eng.dh.keypair(eng.rand)
        props = [(n, _PROTO_IKE, self.spi, t) for n, _, _, t in eng.ike_proposals]
        return [(_PT_SA, codec.encode_sa(props)), (_PT_NONCE, self.ni),
                (_PT_KE, codec.encode_ke(_DH_CURVE25519, pub))]

    def done(self, sa, msg, now):
        eng = self.eng
        sa.rekeying = False
        err = msg.error_notify()
        sab, nb, keb = msg.get(_PT_SA), msg.get(_PT_NONCE), msg.get(_PT_KE)
        if err is not None or sab is None or nb is None or keb is None:
            if sa.state == "established":
                sa.rekey_at = add(now, _RETRY_LATER)
            return
        props = codec.parse_sa(sab)
        nr = codec.parse_nonce(nb)
        g, kd = codec.parse_ke(keb)
        chosen = select(props, _PROTO_IKE, 8, "require") if len(props) == 1 else None
        shared = None
        if chosen is not None and g == _DH_CURVE25519:
            try:
                shared = eng.dh.x25519(self.priv, kd)
            except ValueError:
                shared = None
        self.priv = None
        if shared is None or sa.state != "established":
            sa.rekey_at = add(now, _RETRY_LATER)
            return
        new = IkeSA(True, self.spi, sa.peer_addr, sa.cfg)
        new.spi_r = chosen[1]
        new.ni, new.nr = self.ni, nr
        new.keys = ike_keys(self.ni, nr, shared, new.spi_i, new.spi_r, sa.keys.sk_d)
        eng._add(new)
        _move(eng, sa, new, now)
        x_info.del_ike(eng, sa, now)
