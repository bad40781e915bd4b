"""IKE_SA_INIT, both roles (RFC 7296 section 1.2): our request and its answer as
initiator (cookie and INVALID_KE retries, then IKE_AUTH), a peer's request as
responder (a half-open SA). Under load the cookie check is x_cookie's (loaded then).
Functions take the engine (eng) first; see engine.py for the contract."""

from pnpipsec.ike import const as C
from pnpipsec.ike import codec
from pnpipsec.ike import x_auth
from pnpipsec.ike.codec import IkeParseError, notify as _n
from pnpipsec.ike.keys import ike_keys
from pnpipsec.ike.props import select
from pnpipsec.ike.sa import IkeSA, Pending, PeerConfig, PENDING
from pnpipsec.ticks import add

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_DH_CURVE25519 = const(31)
_F_INITIATOR = const(8)
_F_RESPONSE = const(32)
_HASH_IDENTITY = const(5)
_IKE_AUTH = const(35)
_IKE_SA_INIT = const(34)
_N_CHILDLESS_IKEV2_SUPPORTED = const(16418)
_N_COOKIE = const(16390)
_N_INVALID_KE_PAYLOAD = const(17)
_N_NAT_DETECTION_DESTINATION_IP = const(16389)
_N_NAT_DETECTION_SOURCE_IP = const(16388)
_N_NO_PROPOSAL_CHOSEN = const(14)
_N_SIGNATURE_HASH_ALGORITHMS = const(16431)
_N_UNSUPPORTED_CRITICAL_PAYLOAD = const(1)
_PROTO_IKE = const(1)
_PT_KE = const(34)
_PT_NONCE = const(40)
_PT_SA = const(33)

ZERO8 = b"\x00" * 8


class Refused(IkeParseError):
    """An (unauthenticated) IKE_SA_INIT answer that refuses us: noted, not acted on."""


def new_ke(eng, sa, group):
    sa.ke_group = group
    if group == _DH_CURVE25519:
        sa.dh_priv, sa.ke_pub = eng.dh.keypair(eng.rand)
    else:
        sa.dh_priv, sa.ke_pub = None, eng.rand(64)


def _nat_d(eng, p):
    p.append(_n(_N_NAT_DETECTION_SOURCE_IP, eng.rand(20)))
    p.append(_n(_N_NAT_DETECTION_DESTINATION_IP, eng.rand(20)))
    p.append(_n(_N_CHILDLESS_IKEV2_SUPPORTED))


def send(eng, sa, now):
    """(Re)send our IKE_SA_INIT request (message ID 0)."""
    p = []
    if sa.cookie is not None:
        p.append(_n(_N_COOKIE, sa.cookie))
    p.append((_PT_SA, codec.encode_sa(eng.ike_proposals)))
    p.append((_PT_KE, codec.encode_ke(sa.ke_group, sa.ke_pub)))
    p.append((_PT_NONCE, sa.ni))
    _nat_d(eng, p)
    if sa.method.signs:
        p.append(_n(_N_SIGNATURE_HASH_ALGORITHMS, _HASH_IDENTITY.to_bytes(2, "big")))
    data = codec.encode(sa.spi_i, ZERO8, _IKE_SA_INIT, _F_INITIATOR, 0, p)
    sa.init_req = data
    sa.send_mid = 1
    tries = sa.init_tries if sa.init_tries is not None else sa.cfg.retransmit_tries
    sa.pending = Pending(0, _IKE_SA_INIT, data, lambda s, m, t: response(eng, s, m, t), now,
                         sa.cfg.rt_base_ms, tries, sa.cfg.rt_max_ms)
    eng._send(data, sa, _IKE_SA_INIT)


def parts(msg):
    """(proposals, DH group, KE data, nonce) of an IKE_SA_INIT; IkeParseError if absent."""
    sab, keb, nb = msg.get(_PT_SA), msg.get(_PT_KE), msg.get(_PT_NONCE)
    if sab is None or keb is None or nb is None:
        raise IkeParseError("IKE_SA_INIT lacks SA, KE or Nonce")
    group, kedata = codec.parse_ke(keb)
    return codec.parse_sa(sab), group, kedata, codec.parse_nonce(nb)


def _plain_reply(eng, msg, addr, ntype, data):
    eng._answer(codec.encode(msg.spi_i, ZERO8, _IKE_SA_INIT, _F_RESPONSE, 0,
                             [_n(ntype, data)]), addr, msg, None)


def request(eng, msg, addr, now):
    """Responder: a peer's IKE_SA_INIT request -> a half-open SA and our answer."""
    if msg.spi_r != ZERO8 or msg.mid != 0 or not msg.from_initiator:
        eng._count("drop_unexpected")
        return
    old = eng.init_idx.get((msg.spi_i, addr))
    if old is not None:
        if old.init_req == msg.raw and old.last_resp is not None:
            eng._count("replay")
            eng._answer(old.init_resp, addr, msg, old.spi_r)
        else:
            eng._count("drop_unexpected")
        return
    if msg.crit is not None:
        _plain_reply(eng, msg, addr, _N_UNSUPPORTED_CRITICAL_PAYLOAD, bytes((msg.crit,)))
        return
    props, group, kedata, ni = parts(msg)
    notes = msg.notifies()
    mine = eng._half_open_of(addr[0])
    proven = False
    if eng.half_open() >= eng.cookie_threshold or len(mine) >= eng.max_half_open_per_host:
        # Under load, or a second half-open SA from one address: prove the address
        # first (the cookie is bound to it), before any DH or state.
        from pnpipsec.ike import x_cookie
        if not x_cookie.admit(eng, msg, addr, mine, now):
            return
        proven = True
    cfg = eng.policy(addr, None, None)
    if cfg == PENDING:
        cfg = PeerConfig()      # no identity yet: IKE_AUTH decides (and may hold)
    chosen = select(props, _PROTO_IKE, 0, "require") if cfg is not None else None
    if chosen is None:
        _plain_reply(eng, msg, addr, _N_NO_PROPOSAL_CHOSEN, b"")
        return
    if group != _DH_CURVE25519:
        eng._count("invalid_ke_sent")
        _plain_reply(eng, msg, addr, _N_INVALID_KE_PAYLOAD, b"\x00\x1f")
        return
    priv, pub = eng.dh.keypair(eng.rand)
    try:
        shared = eng.dh.x25519(priv, kedata)
    except ValueError:
        eng._count("drop_bad_ke")
        return
    sa = IkeSA(False, msg.spi_i, addr, cfg)
    sa.proven = proven
    sa.spi_r = eng._new_ike_spi()
    sa.ni = ni
    sa.nr = eng.rand(32)
    sa.keys = ike_keys(ni, sa.nr, shared, sa.spi_i, sa.spi_r)
    for nt in notes:
        if nt[0] == _N_SIGNATURE_HASH_ALGORITHMS:
            sa.peer_hash_algs = True
    p = [(_PT_SA, codec.encode_sa([(chosen[0], _PROTO_IKE, b"", chosen[2])])),
         (_PT_KE, codec.encode_ke(_DH_CURVE25519, pub)),
         (_PT_NONCE, sa.nr)]
    _nat_d(eng, p)
    if sa.peer_hash_algs:
        p.append(_n(_N_SIGNATURE_HASH_ALGORITHMS, _HASH_IDENTITY.to_bytes(2, "big")))
    resp = codec.encode(sa.spi_i, sa.spi_r, _IKE_SA_INIT, _F_RESPONSE, 0, p)
    sa.init_req = msg.raw
    sa.init_resp = resp
    sa.last_resp = (0, resp)
    sa.recv_mid = 1
    sa.state = "half_open"
    sa.expire_at = add(now, eng.half_open_ms)
    sa.last_rx = now
    eng._add(sa)
    eng._index_init(sa, addr)
    eng._answer(resp, addr, msg, sa.spi_r)


def _refused(sa, reason):
    """An IKE_SA_INIT answer refuses us. It is not authenticated, so anyone on the
    path could forge it (RFC 7296 section 2.21): note the reason and keep waiting
    for a valid answer; the give-up reports it."""
    sa.init_error = reason
    raise Refused(reason)


def response(eng, sa, msg, now):
    """Initiator: the answer to our IKE_SA_INIT; on success IKE_AUTH follows."""
    if msg.crit is not None:
        _refused(sa, "unsupported critical payload")
    c = msg.notify(_N_COOKIE)
    if c is not None and msg.get(_PT_SA) is None:
        sa.cookie_tries += 1
        if sa.cookie_tries > 3 or not 1 <= len(c[3]) <= 64:
            eng._kill(sa, "cookie loop")
            return
        sa.cookie = c[3]
        send(eng, sa, now)
        return
    ike = msg.notify(_N_INVALID_KE_PAYLOAD)
    if ike is not None:
        g = int.from_bytes(ike[3], "big") if len(ike[3]) == 2 else -1
        if g == _DH_CURVE25519 and sa.ke_group != g:
            new_ke(eng, sa, g)
            send(eng, sa, now)
        else:
            _refused(sa, "INVALID_KE_PAYLOAD")
        return
    err = msg.error_notify()
    if err is not None:
        _refused(sa, C.error_name(err[0]))
    props, group, kedata, nr = parts(msg)
    chosen = select(props, _PROTO_IKE, 0, "require") if len(props) == 1 else None
    if chosen is None or group != _DH_CURVE25519 or sa.ke_group != group:
        _refused(sa, "NO_PROPOSAL_CHOSEN")
    try:
        shared = eng.dh.x25519(sa.dh_priv, kedata)
    except ValueError:
        _refused(sa, "bad KE")
    sa.spi_r = msg.spi_r
    sa.nr = nr
    sa.init_resp = msg.raw
    sa.keys = ike_keys(sa.ni, nr, shared, sa.spi_i, sa.spi_r)
    sa.dh_priv = None
    sa.ke_pub = None
    np = eng.natt_ports
    if np and sa.peer_addr[1] == np[0]:
        sa.peer_addr = (sa.peer_addr[0], np[1]) + tuple(sa.peer_addr[2:])
    sa.state = "auth_sent"
    eng._request(sa, _IKE_AUTH, x_auth.Auth(eng, sa), now)
