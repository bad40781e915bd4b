"""IKE_AUTH, both roles (RFC 7296 sections 1.2, 2.15): our AUTH, the check of the
peer's (through the method objects of pnpipsec.ike.auth), INITIAL_CONTACT, and the
CHILD SA it carries (x_child). Functions take the engine (eng) first; see engine.py
for the contract."""

from pnpipsec.ike import const as C
from pnpipsec.ike import auth as A
from pnpipsec.ike import codec
from pnpipsec.ike import x_child
from pnpipsec.ike.codec import IkeParseError, notify as _n
from pnpipsec.ike.sa import AuthFailed, ChildUp, IkeUp, PENDING
from pnpipsec.ticks import add

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_ID_KEY_ID = const(11)
_ID_NULL = const(13)
_INFORMATIONAL = const(37)
_N_AUTHENTICATION_FAILED = const(24)
_N_INITIAL_CONTACT = const(16384)
_N_MOBIKE_SUPPORTED = const(16396)
_N_NO_ADDITIONAL_SAS = const(35)
_N_USE_TRANSPORT_MODE = const(16391)
_PT_AUTH = const(39)
_PT_IDI = const(35)
_PT_IDR = const(36)
_PT_SA = const(33)
_PT_TSI = const(44)
_PT_TSR = const(45)
_DEAD_KEEP = const(10000)       # ms a failed IKE_AUTH answer stays for retransmissions


def local_id(eng, cfg, m):
    """Our ID for method m: ID_NULL for NULL; else cfg.local_id, else our key's ID."""
    if m is A.NULL:
        return _ID_NULL, b""
    if cfg.local_id is not None:
        return cfg.local_id
    pub = eng.local.public_key
    return _ID_KEY_ID, pub if pub is not None else b"pnpipsec"


def _signed(sa, idb, by_initiator):
    """(octets, SK_p) of the initiator's or the responder's AUTH (section 2.15)."""
    k = sa.keys
    if by_initiator:
        return A.signed_octets(sa.init_req, sa.nr, k.sk_pi, idb), k.sk_pi
    return A.signed_octets(sa.init_resp, sa.ni, k.sk_pr, idb), k.sk_pr


def _ours(eng, sa, idb):
    """Our AUTH payload over ID body idb, and the octets it covers."""
    octets, sk_p = _signed(sa, idb, sa.initiator)
    num, data = A.make(sa.method, octets, sk_p, sa.cfg.psk, eng.local.ed25519_seed, eng.sig)
    return (_PT_AUTH, codec.encode_auth(num, data)), octets


def _check(eng, sa, cfg, m, peer_id, idb, data):
    """The peer's AUTH (method m, data) under cfg: (None, the octets it covered), or
    (why it fails, None)."""
    if m.trusted and cfg.remote_id is not None and cfg.remote_id != peer_id:
        return "peer ID mismatch", None
    octets, sk_p = _signed(sa, idb, not sa.initiator)
    if not m.check(data, octets, sk_p, cfg.psk, cfg.peer_pubkey, eng.sig):
        return "bad AUTH (%s)" % m.name, None
    return None, octets


def _identify(eng, sa, cfg, m, peer_id, msg):
    """The peer proved itself: the SA takes its identity and configuration."""
    sa.cfg = cfg
    sa.method = m
    sa.peer_id = peer_id
    if m.signs:
        sa.peer_pubkey = cfg.peer_pubkey
    eng._identified(sa)
    if msg.notify(_N_INITIAL_CONTACT) is not None:
        _initial_contact(eng, sa)


def _establish(eng, sa, octets, now):
    sa.octets = octets
    sa.init_req = sa.init_resp = None
    sa.state = "established"
    sa.expire_at = None
    sa.rekey_at = eng._jitter(now, sa.cfg.ike_life_ms)
    eng._emit(IkeUp(sa))


def _initial_contact(eng, sa):
    """The peer says `sa` is the only IKE SA it holds with us (RFC 7296 section
    2.4; it restarted): its other SAs of the same authenticated identity go. A
    NULL identity proves nothing, so there the identity is the address too."""
    for o in eng.same_peer(sa):
        if o is sa or o.state not in ("established", "rekeyed", "deleting") or \
                o.method is not sa.method:
            continue
        if not sa.method.trusted or sa.peer_id is None:
            same = o.peer_addr[0] == sa.peer_addr[0]
        else:
            same = o.peer_id == sa.peer_id and o.peer_pubkey == sa.peer_pubkey
        if same:
            eng._count("initial_contact")
            eng._kill(o, "replaced (INITIAL_CONTACT)")


def _mobike_offer(eng):
    """N(MOBIKE_SUPPORTED), and our address list once the node gave us one."""
    if eng.local_addrs is None:
        return [_n(_N_MOBIKE_SUPPORTED)]
    from pnpipsec.ike import x_mobike
    return x_mobike.offer(eng)


def _mobike(eng, sa, msg):
    """MOBIKE (RFC 4555) when both ends offer it: sa.mobike, the peer's addresses; our
    notifies for the answer (responder)."""
    if not eng.mobike or msg.notify(_N_MOBIKE_SUPPORTED) is None:
        return []
    sa.mobike = True
    notes = msg.notifies()
    for nt in notes:
        if 16397 <= nt[0] <= 16399:     # ADDITIONAL_IP4/IP6_ADDRESS, NO_ADDITIONAL_...
            from pnpipsec.ike import x_mobike
            x_mobike.learn(sa, notes)
            break
    return [] if sa.initiator else _mobike_offer(eng)


def _answer_and_die(eng, sa, msg, ntype, reason, now):
    eng._respond(sa, msg, [_n(ntype)])
    eng._kill(sa, reason)
    # keep the answer for retransmissions for a while
    sa.expire_at = add(now, _DEAD_KEEP)
    eng._add(sa)


def request(eng, sa, msg, addr, now, cfg=PENDING):
    """Responder: the peer's IKE_AUTH request on a half-open SA. cfg: the policy's
    answer when the engine resumes a held request (PENDING: ask the policy now; if it
    says PENDING too, the engine holds the request and we answer nothing yet)."""
    idb, ab = msg.get(_PT_IDI), msg.get(_PT_AUTH)
    if idb is None or ab is None:
        raise IkeParseError("IKE_AUTH lacks IDi or AUTH")
    peer_id = codec.parse_id(idb)
    num, adata = codec.parse_auth(ab)
    sab = msg.get(_PT_SA)
    props = tsi = tsr = None
    if sab is not None:
        props = codec.parse_sa(sab)
        tib, trb = msg.get(_PT_TSI), msg.get(_PT_TSR)
        if tib is None or trb is None:
            raise IkeParseError("IKE_AUTH SA without TS")
        tsi, tsr = codec.parse_ts(tib), codec.parse_ts(trb)
    transport = msg.notify(_N_USE_TRANSPORT_MODE) is not None
    # everything parsed and the ICV checked: from here on state changes
    eng._follow(sa, addr)
    sa.last_rx = now
    eng._surface(sa)
    m = A.BY_NUM.get(num)
    if m is None:
        cfg = None
    elif cfg == PENDING:
        cfg = eng.policy(sa.peer_addr, peer_id, m.name)
        if cfg == PENDING:
            eng._hold(sa, msg, addr, peer_id, m.name, now)
            return
    peer_octets = None
    if cfg is None:
        why = "refused by policy" if m is not None else "unsupported AUTH method %d" % num
    elif A.of(cfg.auth) is not m:
        why = "AUTH method %s, expected %s" % (m.name, cfg.auth)
    else:
        why, peer_octets = _check(eng, sa, cfg, m, peer_id, idb, adata)
    if why is not None:
        eng._emit(AuthFailed(sa, why))
        _answer_and_die(eng, sa, msg, _N_AUTHENTICATION_FAILED, "AUTHENTICATION_FAILED", now)
        return
    _identify(eng, sa, cfg, m, peer_id, msg)
    if not eng._make_room(sa):
        _answer_and_die(eng, sa, msg, _N_NO_ADDITIONAL_SAS, "no room", now)
        return
    my_id = codec.encode_id(*local_id(eng, cfg, m))
    auth, octets = _ours(eng, sa, my_id)
    resp = [(_PT_IDR, my_id), auth]
    child = None
    if props is not None:
        child, extra = x_child.accept(eng, sa, props, tsi, tsr, transport, sa.ni, sa.nr,
                                      None, "ignore", None, [], now)
        resp += extra
    resp += _mobike(eng, sa, msg)
    _establish(eng, sa, (octets, peer_octets), now)
    eng._respond(sa, msg, resp)
    if child is not None:
        eng._emit(ChildUp(child))


class Auth:
    """Initiator: our IKE_AUTH request (with a CHILD SA unless cfg.childless)."""

    def __init__(self, eng, sa):
        self.eng = eng
        self.sa = sa

    def build(self, now):
        eng, sa = self.eng, self.sa
        cfg = sa.cfg
        idb = codec.encode_id(*local_id(eng, cfg, sa.method))
        auth, self.octets = _ours(eng, sa, idb)
        p = [(_PT_IDI, idb)]
        if cfg.remote_id is not None and sa.method.trusted:
            p.append((_PT_IDR, codec.encode_id(*cfg.remote_id)))
        p.append(auth)
        if not eng._established_with(sa):
            # RFC 7296 section 2.4: we hold no other IKE SA with this peer (first contact
            # since boot, or ours died): whatever SAs it still holds with us are stale.
            p.append(_n(_N_INITIAL_CONTACT))
        if eng.mobike:
            p += _mobike_offer(eng)
        if not cfg.childless:
            spi_in = eng._new_esp_spi()
            tsi, tsr = x_child.ts_offer(sa, cfg)
            sa.pending_child = (spi_in, cfg.mode, tsi, tsr)
            a, b = x_child.offer(eng, spi_in, cfg.mode, tsi, tsr, False)
            p += a + b
        return p

    def done(self, sa, msg, now):
        eng = self.eng
        cfg = sa.cfg
        idb, ab = msg.get(_PT_IDR), msg.get(_PT_AUTH)
        err = msg.error_notify()
        if ab is None or idb is None:
            name = C.error_name(err[0]) if err else "no AUTH in answer"
            if err is not None and err[0] == _N_AUTHENTICATION_FAILED:
                eng._emit(AuthFailed(sa, "peer: AUTHENTICATION_FAILED"))
            eng._kill(sa, name)
            return
        peer_id = codec.parse_id(idb)
        num, adata = codec.parse_auth(ab)
        m = sa.method
        if A.BY_NUM.get(num) is not m:
            why = "AUTH method %d, expected %s" % (num, m.name)
        else:
            why, peer_octets = _check(eng, sa, cfg, m, peer_id, idb, adata)
        if why is not None:
            eng._emit(AuthFailed(sa, why))
            # tell the peer (best effort, not retransmitted), then go
            mid = sa.send_mid
            sa.send_mid += 1
            eng._send(eng._encode(sa, _INFORMATIONAL, False, mid,
                                  [_n(_N_AUTHENTICATION_FAILED)]), sa, _INFORMATIONAL)
            eng._kill(sa, "AUTHENTICATION_FAILED")
            return
        _identify(eng, sa, cfg, m, peer_id, msg)
        _mobike(eng, sa, msg)
        _establish(eng, sa, (self.octets, peer_octets), now)
        offer = sa.pending_child
        sa.pending_child = None
        if offer is not None:
            child = x_child.finish(eng, sa, msg, offer, sa.ni, sa.nr, None, "ignore", now)
            if child is not None:
                eng._emit(ChildUp(child))
