"""MOBIKE (RFC 4555), both roles: address updates of an established IKE SA and its
CHILD SAs without a new handshake. The engine imports this module when an SA that
negotiated MOBIKE (N(MOBIKE_SUPPORTED) both ways in IKE_AUTH: sa.mobike) first needs
it. Functions take the engine (eng) first; see engine.py (MOBIKE) for the contract.

Original initiator (we moved, or pick another peer address): eng.move() queues an
INFORMATIONAL with UPDATE_SA_ADDRESSES, NAT_DETECTION_SOURCE/DESTINATION_IP computed
for the addresses now in use, and COOKIE2, which the answer must echo (section 3.5).

Original responder: an authenticated (ICV checked) INFORMATIONAL with
UPDATE_SA_ADDRESSES from a new source address is answered there (with NAT-D and the
COOKIE2 echo), but sa.peer_addr changes only after a return-routability check
(section 3.6): our INFORMATIONAL with a fresh COOKIE2 goes to the new address, and
the SA moves (IkeMoved) when the answer echoes it. An ICV proves only that the
sender holds this SA's keys, not that it owns the address: without the check, a peer
could point our ESP at a victim. No answer from the new address within RR_TRIES
sends: the same request goes to the old address ("rr_failed"), and the SA stays.
A peer's ADDITIONAL_IP4/IP6_ADDRESS (at most MAX_ADDRS) or NO_ADDITIONAL_ADDRESSES,
in IKE_AUTH or INFORMATIONAL, are kept in sa.peer_addrs (host texts)."""

from pnpipsec import inet
from pnpipsec.ike import codec, x_info
from pnpipsec.ike.codec import ct_eq, notify as _n

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_INFORMATIONAL = const(37)
_N_NAT_D_SRC = const(16388)
_N_NAT_D_DST = const(16389)
_N_MOBIKE_SUPPORTED = const(16396)
_N_ADD_IP4 = const(16397)
_N_ADD_IP6 = const(16398)
_N_NO_ADD = const(16399)
_N_UPDATE_SA_ADDRESSES = const(16400)
_N_COOKIE2 = const(16401)
MAX_ADDRS = const(8)       # a peer's additional addresses we keep
RR_TRIES = const(3)        # sends of the return-routability check to a new address


def natd_notifies(eng, sa, peer):
    """NAT-D for an UPDATE or its answer: fresh random values, so both ends keep seeing
    a NAT, as after IKE_SA_INIT (see PORTS AND NAT-T: ESP-in-UDP is the only ESP we
    do). Real hashes would tell a peer like charon that the NAT is gone ("local host
    is not behind NAT anymore", seen with charon 5.9.8), and change how it sends ESP."""
    return [_n(_N_NAT_D_SRC, eng.rand(20)), _n(_N_NAT_D_DST, eng.rand(20))]


def addr_notifies(eng, exclude=None):
    """ADDITIONAL_IP4/IP6_ADDRESS for our addresses (eng.local_addrs, at most
    MAX_ADDRS, without `exclude`), NO_ADDITIONAL_ADDRESSES when there is none; [] when
    the node never told us its addresses."""
    addrs = eng.local_addrs
    if addrs is None:
        return []
    out = []
    for a in addrs:
        if a == exclude or len(out) >= MAX_ADDRS:
            continue
        try:
            b = inet.pton(a)
        except (ValueError, TypeError):
            continue
        if b[:2] == b"\xfe\x80" or b[:1] == b"\x7f" or b == bytes(16):
            continue        # link-local, loopback, unspecified: useless to a peer
        out.append(_n(_N_ADD_IP6 if len(b) == 16 else _N_ADD_IP4, b))
    return out or [_n(_N_NO_ADD)]


def offer(eng):
    """Our MOBIKE notifies for IKE_AUTH (request and answer)."""
    return [_n(_N_MOBIKE_SUPPORTED)] + addr_notifies(eng)


def learn(sa, notes):
    """The peer's address list from its notifies (None: it sent none)."""
    seen = False
    addrs = []
    for nt in notes:
        t = nt[0]
        if t == _N_NO_ADD:
            seen = True
        elif (t == _N_ADD_IP4 and len(nt[3]) == 4) or (t == _N_ADD_IP6 and len(nt[3]) == 16):
            seen = True
            a = inet.ntop(nt[3])
            if a not in addrs and len(addrs) < MAX_ADDRS:
                addrs.append(a)
    if seen:
        sa.peer_addrs = addrs


def request(eng, sa, msg, addr, now):
    """A peer's authenticated INFORMATIONAL on a MOBIKE SA. True when it carried MOBIKE
    notifies and is answered here (to its source address, as RFC 7296 section 2.11
    wants: a path probe from a new address must be answered there)."""
    notes = msg.notifies()
    update = False
    cookie2 = None
    mine = False
    for nt in notes:
        t = nt[0]
        if _N_MOBIKE_SUPPORTED <= t <= _N_COOKIE2:
            mine = True
            if t == _N_UPDATE_SA_ADDRESSES:
                update = True
            elif t == _N_COOKIE2:
                cookie2 = nt[3]
    if not mine:
        return False
    learn(sa, notes)
    extra = []
    if cookie2 is not None and 8 <= len(cookie2) <= 64:
        extra.append(_n(_N_COOKIE2, cookie2))
    if update:
        extra = natd_notifies(eng, sa, addr) + extra
    x_info.request(eng, sa, msg, now, extra, addr)
    if not update:
        _follow_list(eng, sa, addr, now)
        return True
    if sa.initiator:
        # only the original initiator may move the SA (RFC 4555 section 3.5)
        eng._count("mobike_refused")
        return True
    eng._count("mobike_update")
    if addr[0] == sa.peer_addr[0]:
        eng._follow(sa, addr)
        stale = sa.rr
        if stale is not None:
            stale.addr = None       # back where it was: a pending check moves nothing
        return True
    check(eng, sa, addr, now)
    return True


def _follow_list(eng, sa, src, now):
    # Original initiator: the responder's addresses changed (renumbered, deprecated).
    # Its authenticated INFORMATIONAL came from `src`, the address it now uses, and
    # lists its others (ADDITIONAL_*_ADDRESS name the addresses besides the one in the
    # header, RFC 4555 section 3.6). When the address we use is in neither, we decide
    # (section 3.8) and move to src: our UPDATE_SA_ADDRESSES to it, echoing COOKIE2,
    # is the return-routability check.
    if not sa.initiator:
        return
    addrs = sa.peer_addrs or ()
    if sa.peer_addr[0] != src[0] and sa.peer_addr[0] not in addrs:
        eng._count("mobike_follow_list")
        move(eng, sa, None, src, now)


class Check:
    """Our return-routability check of a new peer address (RFC 4555 section 3.6):
    an INFORMATIONAL with COOKIE2 sent to `addr`; the SA moves there when the
    authenticated answer echoes the cookie."""

    def __init__(self, eng, sa, addr):
        self.eng = eng
        self.sa = sa
        self.addr = addr
        self.tries = RR_TRIES
        self.cookie = None

    def build(self, now):
        if self.addr is None:
            return None
        self.cookie = self.eng.rand(16)
        self.eng._count("rr_sent")
        return [_n(_N_COOKIE2, self.cookie)]

    def addr_failed(self, sa, now):
        """The new address never answered: the request goes on to the old one."""
        self.eng._count("rr_failed")
        self.addr = None

    def done(self, sa, msg, now):
        eng = self.eng
        if sa.rr is self:
            sa.rr = None
        c = msg.notify(_N_COOKIE2)
        if self.addr is None:
            return
        if c is None or not ct_eq(c[3], self.cookie):
            eng._count("rr_failed")
            return
        eng._readdress(sa, self.addr)


def check(eng, sa, addr, now):
    """Start (or retarget) the return-routability check of addr for sa."""
    job = sa.rr
    if job is not None:
        if job.cookie is None:
            job.addr = addr         # still queued: check the newest address only
            return
        job.addr = None             # in flight to an older address: it moves nothing
    job = sa.rr = Check(eng, sa, addr)
    eng._request(sa, _INFORMATIONAL, job, now)


class Update:
    """Original initiator: INFORMATIONAL with UPDATE_SA_ADDRESSES, NAT-D for the
    addresses now in use, COOKIE2 and our address list (RFC 4555 section 3.5)."""

    def __init__(self, eng, sa):
        self.eng = eng
        self.sa = sa
        self.cookie = None

    def build(self, now):
        eng, sa = self.eng, self.sa
        sa.updating = None          # a later move queues a new UPDATE
        self.cookie = eng.rand(16)
        eng._count("mobike_update_sent")
        return [_n(_N_UPDATE_SA_ADDRESSES)] + natd_notifies(eng, sa, sa.peer_addr) + \
            [_n(_N_COOKIE2, self.cookie)] + addr_notifies(eng, sa.local_addr)

    def done(self, sa, msg, now):
        c = msg.notify(_N_COOKIE2)
        if c is None or not ct_eq(c[3], self.cookie):
            self.eng._count("mobike_cookie2_bad")
        learn(sa, msg.notifies())
        err = msg.error_notify()
        if err is not None:
            self.eng._count("mobike_update_refused")


class Addresses:
    """Original responder: our address list changed (INFORMATIONAL with
    ADDITIONAL_*_ADDRESS or NO_ADDITIONAL_ADDRESSES; the initiator decides)."""

    def __init__(self, eng, sa):
        self.eng = eng
        self.sa = sa

    def build(self, now):
        self.sa.updating = None
        return addr_notifies(self.eng, self.sa.local_addr) or None

    def done(self, sa, msg, now):
        learn(sa, msg.notifies())


def move(eng, sa, new_local, new_peer, now):
    """See Engine.move."""
    if new_local is not None:
        sa.local_addr = new_local
    if sa.initiator:
        if new_peer is not None and new_peer != sa.peer_addr:
            eng._readdress(sa, new_peer)
        job = Update(eng, sa)
    else:
        job = Addresses(eng, sa)
    if sa.updating is not None:
        return True                 # one is queued already and will say the latest
    sa.updating = job
    eng._request(sa, _INFORMATIONAL, job, now)
    return True
