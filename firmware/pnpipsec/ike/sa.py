"""IKEv2 engine data: configuration, SA records and events (see engine.py docstring)."""

from pnpipsec.ike import auth as A
from pnpipsec.ticks import add, ms


class LocalIdentity:
    """Our long-term identity: an Ed25519 seed (for auth="pubkey") and optional
    psk_ids, a dict {id_type_and_bytes: psk} a policy function may use."""

    def __init__(self, ed25519_seed=None, psk_ids=None):
        self.ed25519_seed = ed25519_seed
        self.psk_ids = psk_ids or {}
        self._pub = None

    @property
    def public_key(self):
        if self._pub is None and self.ed25519_seed is not None:
            from pnpipsec.crypto import ed25519
            self._pub = ed25519.public_key(self.ed25519_seed)
        return self._pub


class PeerConfig:
    def __init__(self, auth="null", local_id=None, remote_id=None, psk=None,
                 peer_pubkey=None, mode="transport", local_ts=None, remote_ts=None,
                 childless=False, child_lifetime=3600, ike_lifetime=14400,
                 retransmit_base=0.5, retransmit_tries=10, pfs=False, dpd=0,
                 retransmit_max=4, init_tries=None):
        self.auth = auth
        self.local_id = local_id
        self.remote_id = remote_id
        self.psk = psk
        self.peer_pubkey = peer_pubkey
        self.mode = mode
        self.local_ts = local_ts
        self.remote_ts = remote_ts
        self.childless = childless
        # Given in seconds, kept as integer ms (pnpipsec.ticks); 0 lifetime: no expiry.
        self.child_life_ms = ms(child_lifetime)
        self.ike_life_ms = ms(ike_lifetime)
        self.rt_base_ms = ms(retransmit_base)
        # RFC 7296 section 2.1: an exchange with a peer that answered once is retried
        # for about 40 s (11 sends, the interval doubling up to retransmit_max), so 30 %
        # loss each way fails one exchange in about 1,600. init_tries, when set,
        # bounds only our IKE_SA_INIT: a short probe of a peer that may not speak IKE.
        self.retransmit_tries = retransmit_tries
        self.rt_max_ms = ms(retransmit_max)
        self.init_tries = init_tries
        self.pfs = pfs          # CHILD rekeys we start carry KE (group 31)
        self.dpd_ms = ms(dpd)   # without inbound IKE before a liveness check; 0 off


class ChildSA:
    # Defaults live in the class: on MicroPython an instance's attribute map holds only
    # what was assigned, so fields still at their default cost no RAM per SA.
    rekeying = False
    rekey_at = None
    expire_at = None

    def __init__(self, ike, spi_in, spi_out, enc_in, int_in, enc_out, int_out, mode,
                 local_ts, remote_ts):
        self.ike = ike
        self.peer_addr = ike.peer_addr
        self.spi_in = spi_in
        self.spi_out = spi_out
        self.enc_in = enc_in
        self.int_in = int_in
        self.enc_out = enc_out
        self.int_out = int_out
        self.mode = mode
        self.local_ts = local_ts
        self.remote_ts = remote_ts
        self.state = "up"       # up, rekeyed (replaced, awaiting delete), deleting, down

    def __repr__(self):
        return "<ChildSA in=%08x out=%08x %s %s>" % (self.spi_in, self.spi_out, self.mode,
                                                     self.state)


class Pending:
    """Our outstanding request: bytes for retransmission and the response handler.
    addr: where it goes when not sa.peer_addr (a MOBIKE return-routability check),
    until job.tries sends went unanswered (then job.addr_failed, and the old one)."""
    addr = None
    job = None

    def __init__(self, mid, exch, data, on_resp, now, base, tries, cap):
        self.mid = mid
        self.exch = exch
        self.data = data
        self.on_resp = on_resp
        self.tries = 0
        self.max_tries = tries
        self.cap = cap
        self.interval = base    # ms
        self.next_at = add(now, base)


# A policy's answer "not yet": the engine holds the request (see engine.py, HELD
# DECISIONS) until eng.decided() or its deadline. A string, compared with ==, so a
# PeerConfig or None never equals it.
PENDING = "pending"


class Held:
    """A peer's request waiting for a decision (transient: at most max_held exist, and
    none outlives decision_timeout). msg is parsed and its ICV checked; addr where it
    came from; until the deadline (tick); peer_id and method (name) what the policy was
    asked with; absorbed counts the retransmissions swallowed meanwhile."""

    def __init__(self, sa, msg, addr, until, peer_id, method):
        self.sa = sa
        self.msg = msg
        self.addr = addr
        self.until = until
        self.peer_id = peer_id
        self.method = method
        self.absorbed = 0


class IkeSA:
    # Defaults live in the class (see ChildSA): an established SA's map holds about
    # half of these fields.
    peer_id = None
    peer_pubkey = None
    keys = None
    ni = None
    nr = None
    dh_priv = None
    ke_group = 31
    ke_pub = None
    cookie = None
    cookie_tries = 0
    init_req = None         # RealMessage1 (until IKE_AUTH completes)
    init_resp = None        # RealMessage2 (until IKE_AUTH completes)
    octets = None           # (ours, peer's) AUTH signed octets, until each proof is done
    peer_hash_algs = False
    send_mid = 0
    recv_mid = 0
    pending = None
    last_resp = None        # (mid, bytes)
    pending_child = None
    rekeying = False
    creating_child = False
    rekey_at = None
    expire_at = None
    last_rx = None
    init_tries = None       # retransmissions of our IKE_SA_INIT (None: cfg's)
    proven = False          # half-open: its IKE_SA_INIT returned our cookie
    delete_sent = False     # our DELETE of this IKE SA has left
    init_key = None         # its key in engine.init_idx (responders)
    id_key = None           # its key in engine.ids (a trusted identity)
    # MOBIKE (ike/x_mobike.py): negotiated in IKE_AUTH; our address in use when the
    # node said it (None: unknown); the peer's additional addresses (host texts, or
    # None when it sent no list); our queued UPDATE / address list, our pending
    # return-routability check
    mobike = False
    local_addr = None
    peer_addrs = None
    updating = None
    rr = None

    def __init__(self, initiator, spi_i, peer_addr, cfg):
        self.initiator = initiator
        self.spi_i = spi_i
        self.spi_r = b"\x00" * 8
        self.peer_addr = peer_addr
        self.cfg = cfg
        # the AUTH method object (pnpipsec.ike.auth): the configured one until IKE_AUTH
        # completed, then the one the peer proved itself with
        self.method = A.of(cfg.auth) if cfg is not None else None
        # init_sent, auth_sent, half_open, established, rekeyed, deleting, dead
        self.state = "new"
        self.children = []
        self.queue = []
        self.surfaced = initiator
        self.n = 0                # registration order in the engine's table

    @property
    def sk_ei(self):
        return self.keys.sk_ei if self.keys else None

    @property
    def sk_er(self):
        return self.keys.sk_er if self.keys else None

    @property
    def sk_ai(self):
        return self.keys.sk_ai if self.keys else None

    @property
    def sk_ar(self):
        return self.keys.sk_ar if self.keys else None

    @property
    def auth(self):
        """The method's name ("null"/"psk"/"pubkey"), for the runtime and policies."""
        return self.method.name if self.method is not None else None

    @property
    def local_spi(self):
        return self.spi_i if self.initiator else self.spi_r

    def __repr__(self):
        import binascii
        return "<IkeSA %s %s %s>" % (binascii.hexlify(self.spi_i).decode(),
                                     binascii.hexlify(self.spi_r).decode(), self.state)


class Event:
    """An engine event: .kind, plus the fields named in _f (set from the positional
    arguments, in order)."""
    kind = "event"
    _f = ()

    def __init__(self, *args):
        for k, v in zip(self._f, args):
            setattr(self, k, v)

    def __repr__(self):
        return "<%s %r>" % (self.kind, self.__dict__)


class IkeUp(Event):
    kind = "ike_up"
    _f = ("sa",)


class IkeDown(Event):
    kind = "ike_down"
    _f = ("sa", "reason")


class IkeRekeyed(Event):
    kind = "ike_rekeyed"
    _f = ("old", "new")


class IkeMoved(Event):
    """sa.peer_addr changed from old to new (MOBIKE, after the peer's authenticated
    UPDATE_SA_ADDRESSES and our return-routability check, or our own move): IKE and
    ESP to the peer go to new; its CHILD SAs (same SPIs) moved with it."""
    kind = "ike_moved"
    _f = ("sa", "old", "new")


class AuthFailed(Event):
    kind = "auth_failed"
    _f = ("sa", "reason")


class ChildUp(Event):
    kind = "child_up"
    _f = ("child",)


class ChildRekeyed(Event):
    kind = "child_rekeyed"
    _f = ("old", "new")


class ChildDown(Event):
    kind = "child_down"
    _f = ("child",)


class ChildFailed(Event):
    kind = "child_failed"
    _f = ("sa", "reason")


class NotifyReceived(Event):
    kind = "notify"
    _f = ("sa", "type", "data")


class DecisionPending(Event):
    """The policy answered PENDING for sa (IKE_AUTH or a new CHILD SA): ask whoever
    decides, then eng.decided(sa, cfg_or_None, now); the engine falls back at its
    deadline. peer_id and method are what the policy was asked with."""
    kind = "decision_pending"
    _f = ("sa", "peer_id", "method")
