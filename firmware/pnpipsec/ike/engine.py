"""IKEv2 engine, sans-IO: datagrams and time in, datagrams and events out.

CONTRACT (the node runtime in pnpipsec/node.py and the tests code against this):

    eng = Engine(rand, aes, local, policy=None, cookie_threshold=8,
                 half_open_timeout=30, natt_ports=(500, 4500), dh=None, sig=None,
                 max_sas=32, max_children=4, max_half_open=16, rank=None,
                 max_answer_rate=5000, answer_sources=64)
        rand(n) -> bytes; aes: an AES provider (pnpipsec.crypto.aes);
        local: LocalIdentity(ed25519_seed=None, psk_ids=None) -- our long-term identity;
        policy(peer_addr, peer_id, auth_method) -> PeerConfig or None: asked on every
        incoming IKE_SA_INIT (peer_id and auth_method None then) and again in IKE_AUTH
        with the peer's ID (id_type, bytes) and its method ("null"/"psk"/"pubkey");
        None refuses (NO_PROPOSAL_CHOSEN / AUTHENTICATION_FAILED). policy=None accepts
        every peer with NULL authentication (PeerConfig() defaults).
        dh / sig: optional module-like providers standing in for pnpipsec.crypto.x25519
        (keypair, x25519) and pnpipsec.crypto.ed25519 (sign, verify), e.g. the host
        board's OpenSSL-backed ones; default: the pure-Python modules.
        max_sas, max_half_open, max_answer_rate, answer_sources, rank: see COOKIES AND
        BUDGETS below;
        max_children: CHILD SAs per IKE SA beyond which a peer's CREATE_CHILD_SA for a
        new (not rekeyed) CHILD SA gets NO_ADDITIONAL_SAS.

    sa = eng.initiate(peer_addr, peer_cfg, now)   -> IkeSA  (queues IKE_SA_INIT)
    eng.receive(data, peer_addr, now)              IKE message without non-ESP marker
    eng.tick(now)                                  retransmit, give up, rekey, liveness
    eng.next_deadline(now) -> ms until the nearest timer (<= 0: due), or None
    `now` is always integer milliseconds that wrap (pnpipsec.ticks); durations in the
    constructor and PeerConfig are seconds, kept as integer ms.
    eng.pop_datagrams() -> list of (bytes, peer_addr)   to send (node adds marker on 4500)
    eng.pop_events() -> list of events (see Event classes below)
    eng.rekey_child(child, now); eng.rekey_ike(sa, now)
    eng.create_child(sa, now)                      a new CHILD SA over an established IKE SA
    eng.abandon(sa, now)                           DELETE once, without waiting; IkeDown
    eng.seen(sa, now)                              ESP proved the peer alive
    eng.delete(sa_or_child, now)                   IKE SA (with its children) or one CHILD SA
    eng.check_liveness(sa, now)                    empty INFORMATIONAL (dead peer detection)
    eng.send_notify(sa, ntype, data, now)          INFORMATIONAL carrying one status notify
    eng.auth_octets(sa, local=True) -> bytes       the octets our (peer's) AUTH covered
                                                   (kept across IKE rekeys; None before)
    eng.half_open() -> int
    eng.stats: dict of counters: "rx", "drop_malformed", "drop_icv", "drop_unknown_spi",
        "drop_mid", "drop_unexpected", "drop_bad_ke", "retransmit", "replay",
        "cookie_sent", "invalid_ke_sent", "timeout", "drop_full", "drop_rate",
        "drop_rate_source", "evict_half_open", "evict_per_host", "evict_established", "initial_contact"
        (missing key = 0)

    PeerConfig(auth="null"|"psk"|"pubkey", local_id=None, remote_id=None, psk=None,
               peer_pubkey=None, mode="transport"|"tunnel", local_ts=None,
               remote_ts=None, childless=False, child_lifetime=3600,
               ike_lifetime=14400, retransmit_base=0.5, retransmit_tries=10,
               pfs=False, dpd=0, retransmit_max=4, init_tries=None)
        ids are (id_type, bytes); traffic selectors are lists of
        (start_addr_bytes, end_addr_bytes) with 4- or 16-byte addresses.
        Default IDs: ID_NULL for "null"; otherwise (ID_KEY_ID, our Ed25519 public key)
        when we have one, else (ID_KEY_ID, b"pnpipsec"). remote_id, when set, must
        match the peer's ID (not checked for "null"). pfs: our CHILD rekeys carry KE.
        dpd: seconds without inbound IKE traffic before tick() sends a liveness check.

    Events (pnpipsec.ike.sa; each has .kind):
        IkeUp(sa), ChildUp(child), ChildRekeyed(old, new), ChildDown(child),
        IkeDown(sa, reason), AuthFailed(sa, reason), NotifyReceived(sa, type, data),
        IkeRekeyed(old, new), ChildFailed(sa, reason).
      - Every IkeSA that initiate() returned or that appeared in an event ends with one
        IkeDown, except an SA replaced by IkeRekeyed (its children moved to new).
        Responder half-open SAs that never authenticate vanish silently.
      - AuthFailed is followed by IkeDown(sa, "AUTHENTICATION_FAILED").
      - ChildRekeyed(old, new): send on new at once; keep old inbound until
        ChildDown(old), which comes when the old CHILD SA is deleted.
      - ChildFailed(sa, reason): the IKE SA is up but a requested CHILD SA was refused
        (reason NO_PROPOSAL_CHOSEN, TS_UNACCEPTABLE, ...).
      - NotifyReceived: status notifies (and error notifies in requests) carried by
        INFORMATIONAL exchanges, e.g. a private-use proof notify.

    A ChildSA carries spi_in, spi_out (4-byte ints), enc_in, int_in, enc_out, int_out
    (bytes), mode, local_ts, remote_ts, peer_addr, ike (the IkeSA), state.
    An IkeSA carries spi_i, spi_r (8 bytes), initiator (bool), peer_addr, peer_id,
    auth ("null"/"psk"/"pubkey"), peer_pubkey (for pubkey auth), state, keys for the
    key log (sk_ei, sk_er, sk_ai, sk_ar; sa.keys has all seven and the SKEYSEED),
    children, ni, nr, and octets (see auth_octets). RealMessage1/2 (init_req,
    init_resp) are dropped once IKE_AUTH completed. States: init_sent, auth_sent,
    half_open, established, deleting, rekeyed (replaced, awaiting delete), dead.

PORTS AND NAT-T. Both sides always send NAT_DETECTION_*_IP notifies with random
20-byte values, i.e. we always claim "NAT detected" (as charon's encap=yes does): the
peer then always uses UDP encapsulation on 4500 and ESP-in-UDP is the only ESP we do
(raw ESP needs a raw socket MicroPython lacks). Random values also spare us SHA-1,
which the WebAssembly MicroPython lacks. The peers' NAT-D content is ignored. As
initiator, after IKE_SA_INIT the engine moves a peer_addr whose port is natt_ports[0]
to natt_ports[1]. The runtime sends a datagram whose exchange type (data[18]) is
IKE_SA_INIT (34) to a peer port other than natt_ports[1] from its port-500 socket
without marker, every other one from its 4500 socket with the non-ESP marker. The
responder answers to the address a request came from and follows a peer whose address
changes (only on messages whose ICV checked).

TRAFFIC SELECTORS. Tunnel mode: local_ts/remote_ts (as initiator we propose them; as
responder we answer with ours when the proposal covers them, else TS_UNACCEPTABLE;
when not configured we accept the proposal). Transport mode: the initiator proposes
TSi = local_ts or the whole address family, TSr = remote_ts or the peer's address;
the responder narrows TSi to the initiator's address as it sees it (or to TSi when that
is a single address: NAT) and TSr to local_ts or the proposed single address.
Protocol and ports are always 0 / 0-65535.

REKEY COLLISIONS (RFC 7296 section 2.8.1, simplified): when both ends rekey the same
CHILD SA (or the IKE SA) at once, the original responder of the IKE SA answers the
original initiator's request with TEMPORARY_FAILURE, and the original initiator accepts
the original responder's request; so exactly one rekey wins (a peer that resolves the
collision by nonces, like charon, may leave a redundant CHILD SA that it then deletes;
the runtime may then see two ChildRekeyed for the same old CHILD SA). A CREATE_CHILD_SA
arriving on an IKE SA that was already rekeyed or is being deleted gets
TEMPORARY_FAILURE. A failed rekey is retried 10 s later while the SA still needs it; a
CHILD rekey stranded on a rekeyed IKE SA is retried on the new one. Lifetimes: rekey
at 80-90 % of the lifetime (jitter from rand); a CHILD SA is deleted at 100 % (also an
old one the peer replaced but never deleted); the IKE SA has no hard expiry of its own
(it is rekeyed; a rekey that keeps failing is retried every 10 s).

COOKIES AND BUDGETS (RFC 7296 sections 2.4, 2.6). Half-open responder SAs and the rest
have separate budgets, so half-open ones never block established ones and back:
  - An IKE_SA_INIT without a valid N(COOKIE) gets a stateless N(COOKIE) answer when
    half_open() >= cookie_threshold, or when its address already has
    max_half_open_per_host (2) half-open SAs. Cookie = version byte |
    HMAC-SHA256(secret, str(source host) | SPIi)[:16]: bound to the source address,
    and checkable from the header, so under load a request is answered (or dropped)
    by _init_gate before any parse, state or DH. The secret comes from rand and
    rotates every 300 s (the previous one stays valid). At most max_answer_rate
    cookie answers a second (token bucket; beyond: "drop_rate"), and at most 2 a
    second to one source address, remembered for up to answer_sources addresses a
    second: a flood from many (spoofed) sources then cannot starve a quiet real
    initiator, whose request is answered in the first second it arrives in
    (beyond: "drop_rate_source"). As initiator we retry with the cookie first (at
    most 3 times).
  - A request that returned a valid cookie (return routability proven) takes the
    place of the oldest half-open SA when its address or the table (max_half_open) is
    full, unproven ones first ("evict_half_open"): spoofed requests never lock out an
    address's real owner, and cookie-echoing floods only evict each other.
  - When an IKE_AUTH succeeds (either role: the newcomer is authenticated), at most
    max_per_host (4) SAs stay per address: the oldest gives way ("evict_per_host");
    and at most max_sas in all: the established SA with the lowest rank(sa) gives way
    ("evict_established"), never to a newcomer of lower trust ("drop_full", answered
    NO_ADDITIONAL_SAS). rank(sa) -> (trust, last activity); default (2 for PSK or a
    configured key, else 0; sa.last_rx); the node adds trusted proofs and ESP
    activity (eng.seen). An evicted SA gets one DELETE, not retransmitted.
  - INITIAL_CONTACT: a peer's authenticated IKE_AUTH carrying it replaces the other
    SAs of the same identity (same ID and key; for NULL, the same address) at once
    ("initial_contact"); we send it in our IKE_AUTH request when we hold no other
    established IKE SA with that peer (first contact since boot, or ours died).
Half-open responder SAs expire after half_open_timeout. A failed IKE_AUTH answer is
kept 10 s for retransmissions.

ERRORS IN IKE_SA_INIT ANSWERS are unauthenticated; we act on them at once
(NO_PROPOSAL_CHOSEN -> IkeDown) rather than waiting for a possible genuine answer.
HASH ALGORITHMS: we announce Identity (5, RFC 8420) only.

TEST HOOKS: eng.ike_proposals / eng.esp_proposals (lists of proposals as codec.encode_sa
takes them, ESP SPI filled in) and eng.first_ke_group (a group other than 31 makes our
first KE a dummy of that group, which a responder must refuse with INVALID_KE_PAYLOAD).
"""

from pnpipsec.ike import const as C
from pnpipsec.ike import codec
from pnpipsec.ike import auth as A
from pnpipsec.ike import ts as TS
from pnpipsec.ike.codec import IkeParseError
from pnpipsec.ike.keys import ike_keys, child_keys
from pnpipsec.ike.sa import (LocalIdentity, PeerConfig, IkeSA, ChildSA, Pending,  # noqa
                             IkeUp, IkeDown, IkeRekeyed, AuthFailed, ChildUp,
                             ChildRekeyed, ChildDown, ChildFailed, NotifyReceived)
from pnpipsec.crypto.hmac import hmac_sha256
from pnpipsec.crypto import x25519
from pnpipsec.ticks import add, age, clamp, diff, ms

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_AUTH_HMAC_SHA2_256_128 = const(12)
_CREATE_CHILD_SA = const(36)
_DH_CURVE25519 = const(31)
_ENCR_AES_CBC = const(12)
_ESN_NO = const(0)
_F_INITIATOR = const(8)
_F_RESPONSE = const(32)
_HASH_IDENTITY = const(5)
_ID_KEY_ID = const(11)
_ID_NULL = const(13)
_IKE_AUTH = const(35)
_IKE_SA_INIT = const(34)
_INFORMATIONAL = const(37)
_N_AUTHENTICATION_FAILED = const(24)
_N_CHILDLESS_IKEV2_SUPPORTED = const(16418)
_N_CHILD_SA_NOT_FOUND = const(44)
_N_COOKIE = const(16390)
_N_INITIAL_CONTACT = const(16384)
_N_INVALID_KE_PAYLOAD = const(17)
_N_NAT_DETECTION_DESTINATION_IP = const(16389)
_N_NAT_DETECTION_SOURCE_IP = const(16388)
_N_NO_ADDITIONAL_SAS = const(35)
_N_NO_PROPOSAL_CHOSEN = const(14)
_N_REKEY_SA = const(16393)
_N_SIGNATURE_HASH_ALGORITHMS = const(16431)
_N_TEMPORARY_FAILURE = const(43)
_N_TS_UNACCEPTABLE = const(38)
_N_UNSUPPORTED_CRITICAL_PAYLOAD = const(1)
_N_USE_TRANSPORT_MODE = const(16391)
_PRF_HMAC_SHA2_256 = const(5)
_PROTO_ESP = const(3)
_PROTO_IKE = const(1)
_PT_AUTH = const(39)
_PT_D = const(42)
_PT_IDI = const(35)
_PT_IDR = const(36)
_PT_KE = const(34)
_PT_N = const(41)
_PT_NONCE = const(40)
_PT_SA = const(33)
_PT_TSI = const(44)
_PT_TSR = const(45)
_T_DH = const(4)
_T_ENCR = const(1)
_T_ESN = const(5)
_T_INTEG = const(3)
_T_PRF = const(2)

ZERO8 = b"\x00" * 8


class _InitRefused(IkeParseError):
    """An (unauthenticated) IKE_SA_INIT answer that refuses us: noted, not acted on."""
IKE_SUITE = [(_T_ENCR, _ENCR_AES_CBC, 128), (_T_PRF, _PRF_HMAC_SHA2_256, None),
             (_T_INTEG, _AUTH_HMAC_SHA2_256_128, None), (_T_DH, _DH_CURVE25519, None)]
ESP_SUITE = [(_T_ENCR, _ENCR_AES_CBC, 128), (_T_INTEG, _AUTH_HMAC_SHA2_256_128, None),
             (_T_ESN, _ESN_NO, None)]
T_DH31 = (_T_DH, _DH_CURVE25519, None)
RETRY_LATER = 10000      # ms
DEAD_KEEP = 10000
COOKIE_ROTATE = 300000
REKEYED_KEEP = 30000


def _n(ntype, data=b"", proto=0, spi=b""):
    return (_PT_N, codec.encode_notify(ntype, data, proto, spi))


def select(props, proto, spisz, dh):
    """First acceptable proposal -> (num, spi, [transforms]) or None.
    dh: "require" (must offer group 31), "none" (no DH or NONE), "ignore"."""
    for num, p, spi, trs in props:
        if p != proto or len(spi) != spisz:
            continue
        if spisz == 4 and int.from_bytes(spi, "big") < 256:
            continue            # ESP SPIs 0-255 are reserved (RFC 4303 section 2.1)
        types = {}
        bad = False
        for t in trs:
            if t[0] < 1 or t[0] > 5:
                bad = True
            types.setdefault(t[0], []).append(t)
        if bad:
            continue
        pick = []
        want = [(_T_ENCR, (_T_ENCR, _ENCR_AES_CBC, 128))]
        if proto == _PROTO_IKE:
            want.append((_T_PRF, (_T_PRF, _PRF_HMAC_SHA2_256, None)))
        want.append((_T_INTEG, (_T_INTEG, _AUTH_HMAC_SHA2_256_128, None)))
        ok = True
        for ttype, need in want:
            if need not in types.get(ttype, ()):
                ok = False
            pick.append(need)
        if proto == _PROTO_ESP and _T_ESN in types:
            if (_T_ESN, 0, None) not in types[_T_ESN]:
                ok = False
            pick.append((_T_ESN, 0, None))
        if proto == _PROTO_IKE and _T_ESN in types:
            ok = False
        if proto == _PROTO_ESP and _T_PRF in types:
            ok = False
        dhs = types.get(_T_DH, ())
        if dh == "require":
            if T_DH31 not in dhs:
                ok = False
            pick.append(T_DH31)
        elif dh == "none":
            if dhs and (_T_DH, 0, None) not in dhs:
                ok = False
        if ok:
            return num, spi, pick
    return None


class Engine:
    def __init__(self, rand, aes, local, policy=None, cookie_threshold=8,
                 half_open_timeout=30, natt_ports=(500, 4500), dh=None, sig=None,
                 max_sas=32, max_children=4, max_half_open=16, rank=None,
                 max_answer_rate=5000, answer_sources=64):
        self.max_sas = max_sas
        self.max_children = max_children
        self.max_per_host = 4
        self.max_half_open = max(max_half_open, cookie_threshold)
        self.max_half_open_per_host = 2
        self.rank = rank if rank is not None else self._default_rank
        self.max_answer_rate = max_answer_rate
        self._tokens = max_answer_rate * 1000     # milli-answers
        self._tokens_at = None
        self.answer_sources = answer_sources
        self._answered = {}     # source host -> cookie answers in the current second
        self._answered_at = None
        self._load = False
        self._load_at = None
        self.now = 0            # the latest `now` we were given (ticks, ms)
        self.dh = dh if dh is not None else x25519
        self.sig = sig
        self.rand = rand
        self.aes = aes
        self.local = local if local is not None else LocalIdentity()
        self.policy = policy if policy is not None else _null_policy
        self.cookie_threshold = cookie_threshold
        self.half_open_ms = ms(half_open_timeout)
        self.natt_ports = natt_ports
        self.sas = {}            # our SPI -> IkeSA
        self.init_idx = {}       # (peer SPIi, peer_addr) -> responder IkeSA
        self.out = []
        self.events = []
        self.stats = {}
        self.ike_proposals = [(1, _PROTO_IKE, b"", IKE_SUITE)]
        self.esp_proposals = [(1, _PROTO_ESP, b"", ESP_SUITE)]
        self.first_ke_group = _DH_CURVE25519
        self._secret = None
        self._old_secret = None
        self._secret_ver = 0
        self._secret_at = None

    # ------------------------------------------------------------ public API

    def pop_datagrams(self):
        o = self.out
        self.out = []
        return o

    def pop_events(self):
        e = self.events
        self.events = []
        return e

    def half_open(self):
        n = 0
        for sa in self.sas.values():
            if sa.state == "half_open":
                n += 1
        return n

    def initiate(self, peer_addr, cfg, now, init_tries=None):
        """Start an IKE SA. init_tries bounds the IKE_SA_INIT retransmissions of this
        attempt (default: cfg.init_tries, else cfg.retransmit_tries): a discovery probe
        is short, an attempt with a peer known to speak IKE is not."""
        self.now = now
        sa = IkeSA(True, self._new_ike_spi(), peer_addr, cfg)
        sa.init_tries = init_tries if init_tries is not None else cfg.init_tries
        sa.ni = self.rand(32)
        self._new_ke(sa, self.first_ke_group)
        sa.state = "init_sent"
        sa.last_rx = now
        self.sas[sa.spi_i] = sa
        self._send_init(sa, now)
        return sa

    def rekey_child(self, child, now):
        sa = child.ike
        if child.state != "up" or child.rekeying or sa.state != "established":
            return
        child.rekeying = True
        self._request(sa, _CREATE_CHILD_SA, _ChildRekey(self, sa, child), now)

    def create_child(self, sa, now, cfg=None):
        """A new CHILD SA over an established IKE SA (CREATE_CHILD_SA without REKEY_SA),
        e.g. after the peer deleted the last one; ChildUp or ChildFailed follows."""
        if sa.state != "established" or sa.creating_child:
            return
        sa.creating_child = True
        self._request(sa, _CREATE_CHILD_SA, _ChildNew(self, sa, cfg or sa.cfg), now)

    def abandon(self, sa, now):
        """Delete the IKE SA at once, without waiting for the peer: one DELETE (not
        retransmitted) unless ours already left, then IkeDown. With a request still
        unanswered the DELETE goes out under that message ID and the next, so a peer
        with a window of one takes whichever it expects (the other is a retransmission
        to it, or out of window). For stop and eviction: the peer frees its SA now."""
        if sa.state == "dead":
            return
        if sa.keys is not None and not sa.delete_sent and sa.state not in ("half_open", "init_sent"):
            mids = [sa.send_mid]
            if sa.pending is not None and sa.pending.exch != _IKE_SA_INIT:
                mids.insert(0, sa.pending.mid)
            for mid in mids:
                self.out.append((self._encode(sa, _INFORMATIONAL, False, mid,
                                              [(_PT_D, codec.encode_delete(_PROTO_IKE))]),
                                 sa.peer_addr))
            sa.delete_sent = True
        self._kill(sa, "deleted")

    def rekey_ike(self, sa, now):
        if sa.state != "established" or sa.rekeying:
            return
        sa.rekeying = True
        self._request(sa, _CREATE_CHILD_SA, _IkeRekey(self, sa), now)

    def delete(self, obj, now):
        if isinstance(obj, ChildSA):
            child = obj
            sa = child.ike
            if child.state in ("down", "deleting") or sa.state not in ("established", "rekeyed"):
                return
            child.state = "deleting"
            self._del_child(sa, child, now)
            return
        sa = obj
        if sa.state in ("dead", "deleting"):
            return
        if sa.keys is None or sa.state in ("init_sent", "half_open"):
            self._kill(sa, "deleted")
            return
        if sa.state != "rekeyed":
            sa.state = "deleting"
        sa.queue = []
        self._del_ike(sa, now)

    def seen(self, sa, now):
        """Traffic authenticated on this SA (ESP) proves the peer alive: liveness checks
        wait, and a full table ranks the SA as active."""
        sa.last_rx = now

    def check_liveness(self, sa, now):
        if sa.state == "established" and sa.pending is None and not sa.queue:
            self._request(sa, _INFORMATIONAL, _Simple([]), now)

    def send_notify(self, sa, ntype, data, now):
        if sa.state == "established":
            self._request(sa, _INFORMATIONAL, _Simple([_n(ntype, data)]), now)

    def auth_octets(self, sa, local=True):
        """The octets our (local) or the peer's AUTH payload covered in IKE_AUTH
        (RealMessage | Nonce | prf(SK_p, ID body)); they stay with the SA across IKE
        rekeys. None before IKE_AUTH completed."""
        if sa.octets is None:
            return None
        return sa.octets[0 if local else 1]

    def next_deadline(self, now):
        """Milliseconds from now to the nearest timer (<= 0: due), or None."""
        best = None
        for sa in self.sas.values():
            for t in self._deadlines(sa):
                if t is not None:
                    d = diff(t, now)
                    if best is None or d < best:
                        best = d
        return best

    def _default_rank(self, sa):
        """(trust, recency): who keeps its slot when the table is full."""
        return (2 if sa.auth in ("psk", "pubkey") else 0, self.recency(sa))

    def recency(self, sa):
        """Larger for the more recently active SA (minus its idle ms)."""
        return -age(self.now, sa.last_rx) if sa.last_rx is not None else -(1 << 30)

    def tick(self, now):
        self.now = now
        for sa in list(self.sas.values()):
            sa.last_rx = clamp(now, sa.last_rx)
            p = sa.pending
            if p is not None and diff(now, p.next_at) >= 0:
                if p.tries >= p.max_tries:
                    self._count("timeout")
                    self._kill(sa, getattr(sa, "init_error", None) or "timeout")
                    continue
                p.tries += 1
                p.interval = min(p.interval * 2, p.cap)
                p.next_at = add(now, p.interval)
                self._count("retransmit")
                self.out.append((p.data, sa.peer_addr))
            if sa.expire_at is not None and diff(now, sa.expire_at) >= 0:
                if sa.state in ("half_open", "dead", "rekeyed"):
                    # (a rekeyed SA whose DELETE answer was lost: the peer already forgot
                    # it and will never answer a retransmission)
                    sa.state = "dead"
                    sa.pending = None
                    self._remove(sa)
                else:
                    self.delete(sa, now)
                    sa.expire_at = None
                continue
            if sa.state != "established":
                continue
            if sa.rekey_at is not None and diff(now, sa.rekey_at) >= 0:
                sa.rekey_at = add(now, RETRY_LATER)
                self.rekey_ike(sa, now)
            for ch in list(sa.children):
                if ch.expire_at is not None and diff(now, ch.expire_at) >= 0:
                    if ch.state in ("up", "rekeyed"):
                        self.delete(ch, now)
                elif ch.state == "up" and ch.rekey_at is not None and \
                        diff(now, ch.rekey_at) >= 0:
                    ch.rekey_at = add(now, RETRY_LATER)
                    self.rekey_child(ch, now)
            dpd = sa.cfg.dpd_ms
            if dpd and sa.last_rx is not None and diff(now, sa.last_rx) >= dpd:
                sa.last_rx = now
                self.check_liveness(sa, now)

    def receive(self, data, peer_addr, now):
        self.now = now
        self._count("rx")
        if self._init_gate(data, peer_addr, now):
            return
        try:
            msg = codec.parse(data)
        except IkeParseError:
            self._count("drop_malformed")
            return
        try:
            if msg.exch == _IKE_SA_INIT and not msg.is_response:
                self._init_request(msg, peer_addr, now)
            else:
                self._dispatch(msg, peer_addr, now)
        except IkeParseError as e:
            self._count("drop_icv" if str(e) == "bad ICV" else "drop_malformed")

    # ------------------------------------------------------------ internals: plumbing

    def _half_open_of(self, host):
        """Half-open responder SAs (from `host`, or all for None), oldest first."""
        out = []
        for sa in self.sas.values():
            if sa.state == "half_open" and (host is None or sa.peer_addr[0] == host):
                out.append(sa)
        out.sort(key=self.recency)
        return out

    def _evict_half_open(self, candidates):
        victim = None
        for sa in candidates:
            if victim is None or (victim.proven and not sa.proven):
                victim = sa
        if victim is not None:
            self._count("evict_half_open")
            self._kill(victim, "evicted")

    def _owned(self, host=None, skip=None):
        """SAs that hold a slot of the established budget: every state but half-open
        and dead (ours being set up, established, rekeyed, being deleted)."""
        out = []
        for sa in self.sas.values():
            if sa is not skip and sa.state not in ("half_open", "dead") and \
                    (host is None or sa.peer_addr[0] == host):
                out.append(sa)
        return out

    def _make_room(self, new):
        """Before `new` (just authenticated) is established: at most max_per_host SAs
        per address (the newcomer replaces that address's oldest) and max_sas in all
        (the least trusted, least recently active established SA gives way, but never
        to a less trusted newcomer). False when there is no room."""
        same = self._owned(new.peer_addr[0], new)
        if len(same) >= self.max_per_host:
            self._evict(min(same, key=self.recency), "evict_per_host")
        owned = self._owned(None, new)
        if len(owned) < self.max_sas:
            return True
        victim = None
        vr = None
        for sa in owned:
            if sa.state != "established":
                continue
            r = self.rank(sa)
            if victim is None or r < vr:
                victim, vr = sa, r
        if victim is None or vr[0] > self.rank(new)[0]:
            self._count("drop_full")
            return False
        self._evict(victim, "evict_established")
        return True

    def _established_with(self, sa):
        for o in self.sas.values():
            if o is not sa and o.state in ("established", "rekeyed", "deleting") and \
                    o.peer_addr[0] == sa.peer_addr[0]:
                return True
        return False

    def _initial_contact(self, sa):
        """The peer says `sa` is the only IKE SA it holds with us (RFC 7296 section
        2.4; it restarted): its other SAs of the same authenticated identity go. A
        NULL identity proves nothing, so there the identity is the address too."""
        for o in list(self.sas.values()):
            if o is sa or o.state not in ("established", "rekeyed", "deleting") or \
                    o.auth != sa.auth:
                continue
            if sa.auth == "null" or sa.peer_id is None:
                same = o.peer_addr[0] == sa.peer_addr[0]
            else:
                same = o.peer_id == sa.peer_id and o.peer_pubkey == sa.peer_pubkey
            if same:
                self._count("initial_contact")
                self._kill(o, "replaced (INITIAL_CONTACT)")

    def _evict(self, sa, why):
        """Free a slot now: a DELETE the peer may or may not get, then gone."""
        self._count(why)
        self.abandon(sa, None)

    def _count(self, key):
        self.stats[key] = self.stats.get(key, 0) + 1

    def _deadlines(self, sa):
        p = sa.pending
        yield p.next_at if p is not None else None
        yield sa.expire_at
        if sa.state == "established":
            yield sa.rekey_at
            for ch in sa.children:
                if ch.state == "up":
                    yield ch.rekey_at
                if ch.state in ("up", "rekeyed"):
                    yield ch.expire_at
            if sa.cfg.dpd_ms and sa.last_rx is not None:
                yield add(sa.last_rx, sa.cfg.dpd_ms)

    def _new_ike_spi(self):
        while True:
            s = self.rand(8)
            if s != ZERO8 and s not in self.sas:
                return s

    def _new_esp_spi(self):
        while True:
            s = int.from_bytes(self.rand(4), "big")
            if s < 256:
                continue
            clash = False
            for sa in self.sas.values():
                for ch in sa.children:
                    if ch.spi_in == s:
                        clash = True
            if not clash:
                return s

    def _new_ke(self, sa, group):
        sa.ke_group = group
        if group == _DH_CURVE25519:
            sa.dh_priv, sa.ke_pub = self.dh.keypair(self.rand)
        else:
            sa.dh_priv, sa.ke_pub = None, self.rand(64)

    def _jitter(self, now, life_ms):
        # at 80-90 % of the lifetime (integer ms: life_ms // 100 keeps it a small int)
        if not life_ms:
            return None
        return add(now, life_ms // 100 * (90 - self.rand(1)[0] * 10 // 255))

    def _emit(self, ev):
        self.events.append(ev)

    def _surface(self, sa):
        sa.surfaced = True

    def _remove(self, sa):
        if self.sas.get(sa.local_spi) is sa:
            del self.sas[sa.local_spi]
        for k in list(self.init_idx):
            if self.init_idx[k] is sa:
                del self.init_idx[k]

    def _kill(self, sa, reason):
        """The IKE SA is gone: children down, IkeDown if the SA was ever visible."""
        if sa.state == "dead":
            return
        was = sa.state
        sa.state = "dead"
        sa.pending = None
        sa.queue = []
        for ch in sa.children:
            if ch.state != "down":
                ch.state = "down"
                self._emit(ChildDown(ch))
        sa.children = []
        self._remove(sa)
        if sa.surfaced and was != "rekeyed":
            self._emit(IkeDown(sa, reason))

    def _keys_out(self, sa):
        k = sa.keys
        return (k.sk_ei, k.sk_ai) if sa.initiator else (k.sk_er, k.sk_ar)

    def _keys_in(self, sa):
        k = sa.keys
        return (k.sk_er, k.sk_ar) if sa.initiator else (k.sk_ei, k.sk_ai)

    def _flags(self, sa, response):
        f = _F_INITIATOR if sa.initiator else 0
        return f | _F_RESPONSE if response else f

    def _encode(self, sa, exch, response, mid, payloads):
        e, a = self._keys_out(sa)
        return codec.encode_sk(sa.spi_i, sa.spi_r, exch, self._flags(sa, response), mid,
                               payloads, e, a, self.aes, self.rand)

    def _request(self, sa, exch, job, now):
        sa.queue.append((exch, job))
        self._pump(sa, now)

    def _pump(self, sa, now):
        while sa.pending is None and sa.queue and sa.state not in ("dead",):
            exch, job = sa.queue.pop(0)
            payloads = job.build(now)
            if payloads is None:
                continue
            mid = sa.send_mid
            sa.send_mid += 1
            data = self._encode(sa, exch, False, mid, payloads)
            sa.pending = Pending(mid, exch, data, job.done, now, sa.cfg.rt_base_ms,
                                 sa.cfg.retransmit_tries, sa.cfg.rt_max_ms)
            if getattr(job, "deletes_ike", False):
                sa.delete_sent = True
            self.out.append((data, sa.peer_addr))

    def _respond(self, sa, msg, payloads):
        data = self._encode(sa, msg.exch, True, msg.mid, payloads)
        sa.last_resp = (msg.mid, data)
        sa.recv_mid = msg.mid + 1
        self.out.append((data, sa.peer_addr))

    def _plain_reply(self, msg, addr, ntype, data):
        self.out.append((codec.encode(msg.spi_i, ZERO8, _IKE_SA_INIT, _F_RESPONSE, 0,
                                      [_n(ntype, data)]), addr))

    def _dispatch(self, msg, addr, now):
        local = msg.spi_r if msg.from_initiator else msg.spi_i
        sa = self.sas.get(local)
        if sa is None or sa.initiator == msg.from_initiator:
            self._count("drop_unknown_spi")
            return
        other = msg.spi_i if msg.from_initiator else msg.spi_r
        if other != (sa.spi_i if msg.from_initiator else sa.spi_r) and sa.state != "init_sent":
            self._count("drop_unknown_spi")
            return
        if msg.is_response:
            p = sa.pending
            if p is None or p.mid != msg.mid or p.exch != msg.exch:
                self._count("drop_mid")
                return
            if msg.exch != _IKE_SA_INIT:
                e, a = self._keys_in(sa)
                codec.decrypt(msg, e, a, self.aes)
            elif msg.spi_r == ZERO8 and msg.get(_PT_SA) is not None:
                raise IkeParseError("zero SPIr")
            sa.pending = None
            sa.last_rx = now
            self._follow(sa, addr)
            try:
                p.on_resp(sa, msg, now)
            except IkeParseError as e:
                self._count("init_error_noted" if isinstance(e, _InitRefused) else "drop_malformed")
                if msg.exch == _IKE_SA_INIT:
                    # unauthenticated: maybe forged; keep waiting for the real answer
                    # (the handler parses everything before it changes anything)
                    sa.pending = p
                    return
                # the authenticated peer's response is broken: the exchange failed
                self._kill(sa, "malformed response")
            self._pump(sa, now)
            return
        # a request from the peer
        if msg.exch == _IKE_SA_INIT or sa.keys is None:
            self._count("drop_unexpected")
            return
        if sa.last_resp is not None and msg.mid == sa.last_resp[0]:
            e, a = self._keys_in(sa)
            codec.decrypt(msg, e, a, self.aes)
            self._count("replay")
            self.out.append((sa.last_resp[1], addr))
            return
        if msg.mid != sa.recv_mid:
            self._count("drop_mid")
            return
        if sa.state == "dead":
            self._count("drop_unexpected")
            return
        ok = (sa.state == "half_open") == (msg.exch == _IKE_AUTH)
        busy = msg.exch == _CREATE_CHILD_SA and sa.state != "established"
        if not ok or (busy and sa.state not in ("rekeyed", "deleting")):
            self._count("drop_unexpected")
            return
        e, a = self._keys_in(sa)
        codec.decrypt(msg, e, a, self.aes)
        if busy:
            # an old (rekeyed) or dying IKE SA creates nothing: try again later
            self._respond(sa, msg, [_n(_N_TEMPORARY_FAILURE)])
            return
        if msg.crit is not None:
            self._follow(sa, addr)
            self._respond(sa, msg, [_n(_N_UNSUPPORTED_CRITICAL_PAYLOAD, bytes((msg.crit,)))])
            return
        if msg.exch == _IKE_AUTH:
            self._auth_request(sa, msg, addr, now)
        elif msg.exch == _CREATE_CHILD_SA:
            self._follow(sa, addr)
            sa.last_rx = now
            self._create_child_request(sa, msg, now)
        elif msg.exch == _INFORMATIONAL:
            self._follow(sa, addr)
            sa.last_rx = now
            self._info_request(sa, msg, now)
        else:
            self._count("drop_unexpected")

    def _follow(self, sa, addr):
        """Follow a peer's port change (NAT rebinding, 500 -> 4500), never a host change:
        an ICV only proves the sender holds this SA's keys, and an attacker holds his own
        SA's keys, so a new source address would let him move his SA onto a victim's
        address (address changes need MOBIKE's return-routability check, RFC 4555)."""
        if addr != sa.peer_addr and sa.state != "init_sent" and addr[0] == sa.peer_addr[0]:
            sa.peer_addr = addr
            for ch in sa.children:
                ch.peer_addr = addr

    # ------------------------------------------------------------ IKE_SA_INIT

    def _init_payloads(self, sa):
        p = []
        if sa.cookie is not None:
            p.append(_n(_N_COOKIE, sa.cookie))
        p.append((_PT_SA, codec.encode_sa(self.ike_proposals)))
        p.append((_PT_KE, codec.encode_ke(sa.ke_group, sa.ke_pub)))
        p.append((_PT_NONCE, sa.ni))
        p.append(_n(_N_NAT_DETECTION_SOURCE_IP, self.rand(20)))
        p.append(_n(_N_NAT_DETECTION_DESTINATION_IP, self.rand(20)))
        p.append(_n(_N_CHILDLESS_IKEV2_SUPPORTED))
        if sa.cfg.auth == "pubkey":
            p.append(_n(_N_SIGNATURE_HASH_ALGORITHMS, _HASH_IDENTITY.to_bytes(2, "big")))
        return p

    def _send_init(self, sa, now):
        data = codec.encode(sa.spi_i, ZERO8, _IKE_SA_INIT, _F_INITIATOR, 0,
                            self._init_payloads(sa))
        sa.init_req = data
        sa.send_mid = 1
        tries = sa.init_tries if sa.init_tries is not None else sa.cfg.retransmit_tries
        sa.pending = Pending(0, _IKE_SA_INIT, data, self._init_response, now,
                             sa.cfg.rt_base_ms, tries, sa.cfg.rt_max_ms)
        self.out.append((data, sa.peer_addr))

    def _cookie_for(self, ver, secret, addr, spi_i):
        # Bound to the source address and SPIi (not Ni: so a flood is answered from
        # the header alone, never parsed).
        return bytes((ver,)) + hmac_sha256(secret, str(addr[0]).encode() + spi_i)[:16]

    def _cookie_ok(self, cookie, addr, spi_i):
        if self._secret is None or len(cookie) != 17:
            return False
        if cookie[0] == self._secret_ver:
            s = self._secret
        elif cookie[0] == (self._secret_ver - 1) & 0xFF and self._old_secret is not None:
            s = self._old_secret
        else:
            return False
        return codec.ct_eq(cookie, self._cookie_for(cookie[0], s, addr, spi_i))

    def _cookie_reply(self, spi_i, addr, now):
        """N(COOKIE) for this SPIi and address, within the answer budget."""
        if not self._source_budget(addr[0], now):
            self._count("drop_rate_source")
            return
        if not self._answer_budget(now):
            self._count("drop_rate")
            return
        self._rotate(now)
        self._count("cookie_sent")
        self.out.append((codec.encode(spi_i, ZERO8, _IKE_SA_INIT, _F_RESPONSE, 0, [_n(
            _N_COOKIE, self._cookie_for(self._secret_ver, self._secret, addr, spi_i))]), addr))

    def _source_budget(self, host, now):
        """At most 2 cookie answers a second to one source (for the first
        answer_sources sources of each second; later ones only meet the global bucket)."""
        at = self._answered_at
        if at is None or not 0 <= diff(now, at) < 1000:
            self._answered_at = now
            self._answered = {}
        n = self._answered.get(host, 0)
        if n >= 2:
            return False
        if n or len(self._answered) < self.answer_sources:
            self._answered[host] = n + 1
        return True

    def _answer_budget(self, now):
        """A token bucket: at most max_answer_rate unauthenticated answers a second
        (cookies), so a flood can neither make us a reflector nor eat the CPU."""
        rate = self.max_answer_rate
        el = 1000 if self._tokens_at is None else diff(now, self._tokens_at)
        if not 0 <= el < 1000:
            el = 1000
        t = self._tokens + el * rate
        self._tokens_at = now
        self._tokens = t if t < rate * 1000 else rate * 1000
        if self._tokens < 1000:
            return False
        self._tokens -= 1000
        return True

    def _loaded(self, now):
        """Half-open SAs at the cookie threshold (recounted at most every 10 ms)."""
        if self._load_at is None or not 0 <= diff(now, self._load_at) < 10:
            self._load_at = now
            self._load = self.half_open() >= self.cookie_threshold
        return self._load

    def _init_gate(self, data, addr, now):
        """Under load, an IKE_SA_INIT request without a valid cookie costs a few byte
        checks and one HMAC: answered with N(COOKIE) from its header alone (no parse,
        no state, no DH), or dropped beyond the answer budget. True when handled."""
        if len(data) < 28 or data[18] != _IKE_SA_INIT or (data[19] & 0x28) != _F_INITIATOR \
                or data[8:16] != ZERO8 or not self._loaded(now):
            return False
        if data[16] == _PT_N and len(data) >= 53 and data[30:32] == b"\x00\x19" and \
                data[33] == 0 and data[34:36] == b"\x40\x06" and \
                self._cookie_ok(data[36:53], addr, data[0:8]):
            return False        # proven: the full path takes it (and checks it again)
        self._cookie_reply(data[0:8], addr, now)
        return True

    def _rotate(self, now):
        if self._secret is None or not 0 <= diff(now, self._secret_at) < COOKIE_ROTATE:
            self._old_secret = self._secret
            self._secret = self.rand(16)
            self._secret_ver = (self._secret_ver + 1) & 0xFF
            self._secret_at = now

    def _init_request(self, msg, addr, now):
        if msg.spi_r != ZERO8 or msg.mid != 0 or not msg.from_initiator:
            self._count("drop_unexpected")
            return
        old = self.init_idx.get((msg.spi_i, addr))
        if old is not None:
            if old.init_req == msg.raw and old.last_resp is not None:
                self._count("replay")
                self.out.append((old.init_resp, addr))
            else:
                self._count("drop_unexpected")
            return
        if msg.crit is not None:
            self._plain_reply(msg, addr, _N_UNSUPPORTED_CRITICAL_PAYLOAD, bytes((msg.crit,)))
            return
        props, group, kedata, ni = _init_parts(msg)
        notes = msg.notifies()
        mine = self._half_open_of(addr[0])
        proven = False
        if self.half_open() >= self.cookie_threshold or len(mine) >= self.max_half_open_per_host:
            # Under load, or a second half-open SA from one address: prove the address
            # first (the cookie is bound to it), before any DH or state.
            self._rotate(now)
            first = msg.payloads[0]
            c = codec.parse_notify(first[1]) if first[0] == _PT_N else None
            if c is None or c[0] != _N_COOKIE or not self._cookie_ok(c[3], addr, msg.spi_i):
                self._cookie_reply(msg.spi_i, addr, now)
                return
            proven = True
            # A proven sender takes the place of the oldest half-open SA (unproven ones
            # first): spoofed IKE_SA_INITs can never lock out an address's real owner.
            if len(mine) >= self.max_half_open_per_host:
                self._evict_half_open(mine)
            elif self.half_open() >= self.max_half_open:
                self._evict_half_open(self._half_open_of(None))
        cfg = self.policy(addr, None, None)
        chosen = select(props, _PROTO_IKE, 0, "require") if cfg is not None else None
        if chosen is None:
            self._plain_reply(msg, addr, _N_NO_PROPOSAL_CHOSEN, b"")
            return
        if group != _DH_CURVE25519:
            self._count("invalid_ke_sent")
            self._plain_reply(msg, addr, _N_INVALID_KE_PAYLOAD, b"\x00\x1f")
            return
        priv, pub = self.dh.keypair(self.rand)
        try:
            shared = self.dh.x25519(priv, kedata)
        except ValueError:
            self._count("drop_bad_ke")
            return
        sa = IkeSA(False, msg.spi_i, addr, cfg)
        sa.proven = proven
        sa.spi_r = self._new_ike_spi()
        sa.ni = ni
        sa.nr = self.rand(32)
        sa.keys = ike_keys(ni, sa.nr, shared, sa.spi_i, sa.spi_r)
        for nt in notes:
            if nt[0] == _N_SIGNATURE_HASH_ALGORITHMS:
                sa.peer_hash_algs = True
        p = [(_PT_SA, codec.encode_sa([(chosen[0], _PROTO_IKE, b"", chosen[2])])),
             (_PT_KE, codec.encode_ke(_DH_CURVE25519, pub)),
             (_PT_NONCE, sa.nr),
             _n(_N_NAT_DETECTION_SOURCE_IP, self.rand(20)),
             _n(_N_NAT_DETECTION_DESTINATION_IP, self.rand(20)),
             _n(_N_CHILDLESS_IKEV2_SUPPORTED)]
        if sa.peer_hash_algs:
            p.append(_n(_N_SIGNATURE_HASH_ALGORITHMS, _HASH_IDENTITY.to_bytes(2, "big")))
        resp = codec.encode(sa.spi_i, sa.spi_r, _IKE_SA_INIT, _F_RESPONSE, 0, p)
        sa.init_req = msg.raw
        sa.init_resp = resp
        sa.last_resp = (0, resp)
        sa.recv_mid = 1
        sa.state = "half_open"
        sa.expire_at = add(now, self.half_open_ms)
        sa.last_rx = now
        self.sas[sa.spi_r] = sa
        self.init_idx[(sa.spi_i, addr)] = sa
        self.out.append((resp, addr))

    def _init_refused(self, sa, reason):
        """An IKE_SA_INIT answer refuses us. It is not authenticated, so anyone on the
        path could forge it (RFC 7296 section 2.21): note the reason and keep waiting
        for a valid answer; the give-up reports it."""
        sa.init_error = reason
        raise _InitRefused(reason)

    def _init_response(self, sa, msg, now):
        if msg.crit is not None:
            self._init_refused(sa, "unsupported critical payload")
            return
        c = msg.notify(_N_COOKIE)
        if c is not None and msg.get(_PT_SA) is None:
            sa.cookie_tries += 1
            if sa.cookie_tries > 3 or not 1 <= len(c[3]) <= 64:
                self._kill(sa, "cookie loop")
                return
            sa.cookie = c[3]
            self._send_init(sa, now)
            return
        ike = msg.notify(_N_INVALID_KE_PAYLOAD)
        if ike is not None:
            g = int.from_bytes(ike[3], "big") if len(ike[3]) == 2 else -1
            if g == _DH_CURVE25519 and sa.ke_group != g:
                self._new_ke(sa, g)
                self._send_init(sa, now)
            else:
                self._init_refused(sa, "INVALID_KE_PAYLOAD")
            return
        err = msg.error_notify()
        if err is not None:
            self._init_refused(sa, C.error_name(err[0]))
            return
        props, group, kedata, nr = _init_parts(msg)
        chosen = select(props, _PROTO_IKE, 0, "require") if len(props) == 1 else None
        if chosen is None or group != _DH_CURVE25519 or sa.ke_group != group:
            self._init_refused(sa, "NO_PROPOSAL_CHOSEN")
            return
        try:
            shared = self.dh.x25519(sa.dh_priv, kedata)
        except ValueError:
            self._init_refused(sa, "bad KE")
            return
        sa.spi_r = msg.spi_r
        sa.nr = nr
        sa.init_resp = msg.raw
        sa.keys = ike_keys(sa.ni, nr, shared, sa.spi_i, sa.spi_r)
        sa.dh_priv = None
        sa.ke_pub = None
        np = self.natt_ports
        if np and sa.peer_addr[1] == np[0]:
            sa.peer_addr = (sa.peer_addr[0], np[1]) + tuple(sa.peer_addr[2:])
        sa.state = "auth_sent"
        self._request(sa, _IKE_AUTH, _Auth(self, sa), now)

    # ------------------------------------------------------------ IKE_AUTH

    def _local_id(self, cfg):
        if cfg.auth == "null":
            return _ID_NULL, b""
        if cfg.local_id is not None:
            return cfg.local_id
        pub = self.local.public_key
        return _ID_KEY_ID, pub if pub is not None else b"pnpipsec"

    def _make_auth(self, sa, octets, sk_p):
        cfg = sa.cfg
        return A.make(cfg.auth, octets, sk_p, cfg.psk, self.local.ed25519_seed, self.sig)

    def _ts_offer(self, sa, cfg):
        """(TSi, TSr) we propose as initiator of an exchange creating a CHILD SA."""
        peer = TS.host_of(sa.peer_addr)
        if cfg.mode == "tunnel" or peer is None:
            fam = len(peer) if peer is not None else 16
            return (cfg.local_ts or [TS.full_range(fam)],
                    cfg.remote_ts or [TS.full_range(fam)])
        return (cfg.local_ts or [TS.full_range(len(peer))], cfg.remote_ts or [(peer, peer)])

    def _child_offer(self, sa, spi_in, mode, tsi, tsr, dh):
        p = []
        if mode == "transport":
            p.append(_n(_N_USE_TRANSPORT_MODE))
        props = []
        for num, proto, spi, trs in self.esp_proposals:
            trs = list(trs)
            if dh:
                trs.append(T_DH31)
            props.append((num, proto, spi_in.to_bytes(4, "big"), trs))
        p.append((_PT_SA, codec.encode_sa(props)))
        return p, [(_PT_TSI, codec.encode_ts(tsi)), (_PT_TSR, codec.encode_ts(tsr))]

    def _auth_request(self, sa, msg, addr, now):
        idb, ab = msg.get(_PT_IDI), msg.get(_PT_AUTH)
        if idb is None or ab is None:
            raise IkeParseError("IKE_AUTH lacks IDi or AUTH")
        peer_id = codec.parse_id(idb)
        method, adata = codec.parse_auth(ab)
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
        self._follow(sa, addr)
        sa.last_rx = now
        self._surface(sa)
        aname = A.NAMES.get(method)
        cfg = self.policy(sa.peer_addr, peer_id, aname) if aname else None
        why = None
        if cfg is None:
            why = "refused by policy" if aname else "unsupported AUTH method %d" % method
        elif cfg.auth != aname:
            why = "AUTH method %s, expected %s" % (aname, cfg.auth)
        elif aname != "null" and cfg.remote_id is not None and cfg.remote_id != peer_id:
            why = "peer ID mismatch"
        else:
            peer_octets = A.signed_octets(sa.init_req, sa.nr, sa.keys.sk_pi, idb)
            if not A.check(method, adata, peer_octets, sa.keys.sk_pi, cfg.psk, cfg.peer_pubkey,
                           self.sig):
                why = "bad AUTH (%s)" % aname
        if why is not None:
            self._respond(sa, msg, [_n(_N_AUTHENTICATION_FAILED)])
            self._emit(AuthFailed(sa, why))
            self._kill(sa, "AUTHENTICATION_FAILED")
            # keep the failure answer for retransmissions for a while
            sa.expire_at = add(now, DEAD_KEEP)
            self.sas[sa.spi_r] = sa
            return
        sa.cfg = cfg
        sa.auth = aname
        sa.peer_id = peer_id
        if aname == "pubkey":
            sa.peer_pubkey = cfg.peer_pubkey
        if msg.notify(_N_INITIAL_CONTACT) is not None:
            self._initial_contact(sa)
        if not self._make_room(sa):
            self._respond(sa, msg, [_n(_N_NO_ADDITIONAL_SAS)])
            self._kill(sa, "no room")
            sa.expire_at = add(now, DEAD_KEEP)
            self.sas[sa.spi_r] = sa
            return
        my_id = codec.encode_id(*self._local_id(cfg))
        octets = A.signed_octets(sa.init_resp, sa.ni, sa.keys.sk_pr, my_id)
        sa.octets = (octets, peer_octets)
        sa.init_req = sa.init_resp = None
        m, d = self._make_auth(sa, octets, sa.keys.sk_pr)
        resp = [(_PT_IDR, my_id), (_PT_AUTH, codec.encode_auth(m, d))]
        child = None
        if props is not None:
            child, extra = self._accept_child(sa, props, tsi, tsr, transport, sa.ni, sa.nr,
                                              None, "ignore", None, [], now)
            resp += extra
        sa.state = "established"
        sa.expire_at = None
        sa.rekey_at = self._jitter(now, cfg.ike_life_ms)
        self._respond(sa, msg, resp)
        self._emit(IkeUp(sa))
        if child is not None:
            self._emit(ChildUp(child))

    def _accept_child(self, sa, props, tsi, tsr, transport, ni, nr, shared, dh, old,
                      mid_payloads, now):
        """Responder side of a CHILD SA (peer is "i"). Returns (child or None, payloads).
        mid_payloads go between SA and TSi (Nr, KEr in CREATE_CHILD_SA)."""
        cfg = sa.cfg
        chosen = select(props, _PROTO_ESP, 4, dh)
        if chosen is None:
            self._emit(ChildFailed(sa, "NO_PROPOSAL_CHOSEN"))
            return None, [_n(_N_NO_PROPOSAL_CHOSEN)]
        if cfg.mode == "transport" and not transport and old is None:
            # A transport-mode policy never grants a tunnel: its selectors would let the
            # peer speak for other addresses.
            self._emit(ChildFailed(sa, "NO_PROPOSAL_CHOSEN"))
            return None, [_n(_N_NO_PROPOSAL_CHOSEN)]
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
            self._emit(ChildFailed(sa, "TS_UNACCEPTABLE"))
            return None, [_n(_N_TS_UNACCEPTABLE)]
        spi_in = self._new_esp_spi()
        ei, ai, er, ar = child_keys(sa.keys.sk_d, ni, nr, shared)
        child = ChildSA(sa, spi_in, int.from_bytes(chosen[1], "big"), ei, ai, er, ar, mode,
                        local, remote)
        self._child_timers(sa, child, now)
        sa.children.append(child)
        p = [_n(_N_USE_TRANSPORT_MODE)] if mode == "transport" else []
        p.append((_PT_SA, codec.encode_sa([(chosen[0], _PROTO_ESP,
                                             spi_in.to_bytes(4, "big"), chosen[2])])))
        p += mid_payloads
        p.append((_PT_TSI, codec.encode_ts(remote)))
        p.append((_PT_TSR, codec.encode_ts(local)))
        return child, p

    def _child_timers(self, sa, child, now):
        lt = sa.cfg.child_life_ms
        child.rekey_at = self._jitter(now, lt)
        child.expire_at = add(now, lt) if lt else None

    def _finish_child(self, sa, msg, offer, ni, nr, shared, dh, now):
        """Initiator side: check the responder's SA/TS answer for our offer
        (spi_in, mode, tsi, tsr). Returns the ChildSA or None (ChildFailed emitted)."""
        spi_in, mode, tsi, tsr = offer
        err = msg.error_notify()
        sab = msg.get(_PT_SA)
        if err is not None or sab is None:
            self._emit(ChildFailed(sa, C.error_name(err[0]) if err else "no SA in answer"))
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
            self._emit(ChildFailed(sa, why))
            if chosen is not None:
                # the peer installed its half: delete it (by our inbound SPI)
                self._request(sa, _INFORMATIONAL, _Simple(
                    [(_PT_D, codec.encode_delete(_PROTO_ESP, [spi_in.to_bytes(4, "big")]))]), now)
            return None
        ei, ai, er, ar = child_keys(sa.keys.sk_d, ni, nr, shared)
        child = ChildSA(sa, spi_in, int.from_bytes(chosen[1], "big"), er, ar, ei, ai, mode,
                        ri, rr)
        self._child_timers(sa, child, now)
        sa.children.append(child)
        return child

    # ------------------------------------------------------------ CREATE_CHILD_SA

    def _create_child_request(self, sa, msg, now):
        sab, nb = msg.get(_PT_SA), msg.get(_PT_NONCE)
        if sab is None or nb is None:
            raise IkeParseError("CREATE_CHILD_SA lacks SA or Nonce")
        props = codec.parse_sa(sab)
        ni = codec.parse_nonce(nb)
        keb = msg.get(_PT_KE)
        ke = codec.parse_ke(keb) if keb is not None else None
        is_ike = False
        for pr in props:
            if pr[1] == _PROTO_IKE:
                is_ike = True
        if is_ike:
            self._ike_rekey_request(sa, msg, props, ni, ke, now)
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
                self._respond(sa, msg, [_n(_N_CHILD_SA_NOT_FOUND, b"", _PROTO_ESP, rk[2])])
                return
            if old.state != "up" or (old.rekeying and not sa.initiator) \
                    or len(sa.children) >= 2 * self.max_children:
                # (a peer that rekeys and never deletes the old SAs must not grow our
                # table: one predecessor per CHILD SA may linger, no more)
                self._respond(sa, msg, [_n(_N_TEMPORARY_FAILURE)])
                return
        elif len(sa.children) >= self.max_children:
            self._respond(sa, msg, [_n(_N_NO_ADDITIONAL_SAS)])
            return
        elif self.policy(sa.peer_addr, sa.peer_id, sa.auth) is None:
            # a new CHILD SA is a new proposal: the policy may have changed its mind
            self._respond(sa, msg, [_n(_N_NO_PROPOSAL_CHOSEN)])
            return
        shared = None
        mid = []
        nr = self.rand(32)
        if ke is not None:
            dh = self._answer_ke(sa, msg, ke)
            if dh is None:
                return
            pub, shared = dh
            mid = [(_PT_NONCE, nr), (_PT_KE, codec.encode_ke(_DH_CURVE25519, pub))]
        else:
            mid = [(_PT_NONCE, nr)]
        child, p = self._accept_child(sa, props, tsi, tsr, transport, ni, nr, shared,
                                      "require" if ke is not None else "none", old, mid, now)
        self._respond(sa, msg, p)
        if child is None:
            return
        if old is not None:
            old.state = "rekeyed"
            self._emit(ChildRekeyed(old, child))
        else:
            self._emit(ChildUp(child))

    def _answer_ke(self, sa, msg, ke):
        """Our DH half for the peer's KE in a CREATE_CHILD_SA request: (pub, shared), or
        None after answering INVALID_KE_PAYLOAD (not group 31) / NO_PROPOSAL_CHOSEN
        (an all-zero shared secret)."""
        if ke is None or ke[0] != _DH_CURVE25519:
            self._respond(sa, msg, [_n(_N_INVALID_KE_PAYLOAD, b"\x00\x1f")])
            return None
        priv, pub = self.dh.keypair(self.rand)
        try:
            return pub, self.dh.x25519(priv, ke[1])
        except ValueError:
            self._respond(sa, msg, [_n(_N_NO_PROPOSAL_CHOSEN)])
            return None

    def _ike_rekey_request(self, sa, msg, props, ni, ke, now):
        if (sa.rekeying and not sa.initiator) or len(self._owned()) >= 2 * self.max_sas:
            self._respond(sa, msg, [_n(_N_TEMPORARY_FAILURE)])
            return
        chosen = select(props, _PROTO_IKE, 8, "require")
        if chosen is None:
            self._respond(sa, msg, [_n(_N_NO_PROPOSAL_CHOSEN)])
            return
        dh = self._answer_ke(sa, msg, ke)
        if dh is None:
            return
        pub, shared = dh
        new = IkeSA(False, chosen[1], sa.peer_addr, sa.cfg)
        new.spi_r = self._new_ike_spi()
        new.nr = self.rand(32)
        new.ni = ni
        new.keys = ike_keys(ni, new.nr, shared, new.spi_i, new.spi_r, sa.keys.sk_d)
        self._respond(sa, msg, [
            (_PT_SA, codec.encode_sa([(chosen[0], _PROTO_IKE, new.spi_r, chosen[2])])),
            (_PT_NONCE, new.nr), (_PT_KE, codec.encode_ke(_DH_CURVE25519, pub))])
        self._move(sa, new, now)
        self.sas[new.spi_r] = new

    def _move(self, old, new, now):
        """Finish an IKE rekey: new SA takes over the children and the identity."""
        for k in ("peer_id", "auth", "peer_pubkey", "octets"):
            setattr(new, k, getattr(old, k))
        new.surfaced = True
        new.state = "established"
        new.last_rx = now
        new.rekey_at = self._jitter(now, new.cfg.ike_life_ms)
        new.children = old.children
        for ch in new.children:
            ch.ike = new
            if ch.rekeying:
                # its rekey exchange is stranded on the old IKE SA: retry on the new one
                ch.rekeying = False
                ch.rekey_at = add(now, RETRY_LATER)
        old.children = []
        old.state = "rekeyed"
        old.rekeying = False
        old.expire_at = add(now, REKEYED_KEEP)
        self._emit(IkeRekeyed(old, new))

    # ------------------------------------------------------------ INFORMATIONAL

    def _info_request(self, sa, msg, now):
        dels = [codec.parse_delete(b) for b in msg.all(_PT_D)]
        notes = msg.notifies()
        kill = False
        gone = []
        answer = []
        for proto, spis in dels:
            if proto == _PROTO_IKE:
                kill = True
            elif proto == _PROTO_ESP:
                for s in spis:
                    v = int.from_bytes(s, "big")
                    for ch in sa.children:
                        if ch.spi_out == v and ch not in gone:
                            gone.append(ch)
                            answer.append(ch.spi_in.to_bytes(4, "big"))
        self._respond(sa, msg, [(_PT_D, codec.encode_delete(_PROTO_ESP, answer))]
                      if answer and not kill else [])
        for nt in notes:
            if nt[0] == _N_AUTHENTICATION_FAILED:
                self._emit(AuthFailed(sa, "peer: AUTHENTICATION_FAILED"))
                kill = True
            else:
                self._emit(NotifyReceived(sa, nt[0], nt[3]))
        if kill:
            self._kill(sa, "deleted by peer")
            return
        for ch in gone:
            self._drop_child(sa, ch)

    def _del_child(self, sa, child, now):
        self._request(sa, _INFORMATIONAL, _Simple(
            [(_PT_D, codec.encode_delete(_PROTO_ESP, [child.spi_in.to_bytes(4, "big")]))],
            lambda s: self._drop_child(child.ike, child)), now)

    def _del_ike(self, sa, now):
        job = _Simple([(_PT_D, codec.encode_delete(_PROTO_IKE))], self._ike_deleted)
        job.deletes_ike = True
        self._request(sa, _INFORMATIONAL, job, now)

    def _ike_deleted(self, sa):
        if sa.state == "rekeyed":
            sa.state = "dead"
            self._remove(sa)
        else:
            self._kill(sa, "deleted")

    def _drop_child(self, sa, ch):
        if ch in sa.children:
            sa.children.remove(ch)
        if ch.state != "down":
            ch.state = "down"
            self._emit(ChildDown(ch))


def _init_parts(msg):
    """(proposals, DH group, KE data, nonce) of an IKE_SA_INIT; IkeParseError if absent."""
    sab, keb, nb = msg.get(_PT_SA), msg.get(_PT_KE), msg.get(_PT_NONCE)
    if sab is None or keb is None or nb is None:
        raise IkeParseError("IKE_SA_INIT lacks SA, KE or Nonce")
    group, kedata = codec.parse_ke(keb)
    return codec.parse_sa(sab), group, kedata, codec.parse_nonce(nb)


def _null_policy(peer_addr, peer_id, method):
    if method is None or method == "null":
        return PeerConfig()
    return None


# ---------------------------------------------------------------- request jobs
# A job builds the payloads of one request when its turn comes (build(now) -> list or
# None to skip) and handles the response (done(sa, msg, now)).

class _Simple:
    def __init__(self, payloads, done=None):
        self.payloads = payloads
        self.on_done = done

    def build(self, now):
        return self.payloads

    def done(self, sa, msg, now):
        if self.on_done is not None:
            self.on_done(sa)


class _Auth:
    def __init__(self, eng, sa):
        self.eng = eng
        self.sa = sa

    def build(self, now):
        eng, sa = self.eng, self.sa
        cfg = sa.cfg
        idb = codec.encode_id(*eng._local_id(cfg))
        octets = A.signed_octets(sa.init_req, sa.nr, sa.keys.sk_pi, idb)
        self.octets = octets
        m, d = eng._make_auth(sa, octets, sa.keys.sk_pi)
        p = [(_PT_IDI, idb)]
        if cfg.remote_id is not None and cfg.auth != "null":
            p.append((_PT_IDR, codec.encode_id(*cfg.remote_id)))
        p.append((_PT_AUTH, codec.encode_auth(m, d)))
        if not eng._established_with(sa):
            # RFC 7296 section 2.4: we hold no other IKE SA with this peer (first contact
            # since boot, or ours died): whatever SAs it still holds with us are stale.
            p.append(_n(_N_INITIAL_CONTACT))
        if not cfg.childless:
            spi_in = eng._new_esp_spi()
            tsi, tsr = eng._ts_offer(sa, cfg)
            sa.pending_child = (spi_in, cfg.mode, tsi, tsr)
            a, b = eng._child_offer(sa, spi_in, cfg.mode, tsi, tsr, False)
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
        method, adata = codec.parse_auth(ab)
        why = None
        if A.NAMES.get(method) != cfg.auth:
            why = "AUTH method %d, expected %s" % (method, cfg.auth)
        elif cfg.auth != "null" and cfg.remote_id is not None and cfg.remote_id != peer_id:
            why = "peer ID mismatch"
        else:
            peer_octets = A.signed_octets(sa.init_resp, sa.ni, sa.keys.sk_pr, idb)
            if not A.check(method, adata, peer_octets, sa.keys.sk_pr, cfg.psk, cfg.peer_pubkey,
                           eng.sig):
                why = "bad AUTH (%s)" % cfg.auth
        if why is not None:
            eng._emit(AuthFailed(sa, why))
            # tell the peer (best effort, not retransmitted), then go
            mid = sa.send_mid
            sa.send_mid += 1
            eng.out.append((eng._encode(sa, _INFORMATIONAL, False, mid,
                                        [_n(_N_AUTHENTICATION_FAILED)]), sa.peer_addr))
            eng._kill(sa, "AUTHENTICATION_FAILED")
            return
        sa.peer_id = peer_id
        sa.octets = (self.octets, peer_octets)
        sa.init_req = sa.init_resp = None
        sa.auth = cfg.auth
        if cfg.auth == "pubkey":
            sa.peer_pubkey = cfg.peer_pubkey
        if msg.notify(_N_INITIAL_CONTACT) is not None:
            eng._initial_contact(sa)
        sa.state = "established"
        sa.rekey_at = eng._jitter(now, cfg.ike_life_ms)
        eng._emit(IkeUp(sa))
        offer = sa.pending_child
        sa.pending_child = None
        if offer is not None:
            child = eng._finish_child(sa, msg, offer, sa.ni, sa.nr, None, "ignore", now)
            if child is not None:
                eng._emit(ChildUp(child))


class _ChildNew:
    """A new CHILD SA over an established IKE SA (RFC 7296 section 1.3.1)."""

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
        tsi, tsr = eng._ts_offer(sa, cfg)
        self.offer = (spi_in, cfg.mode, tsi, tsr)
        a, b = eng._child_offer(sa, spi_in, cfg.mode, tsi, tsr, False)
        return a + [(_PT_NONCE, self.ni)] + b

    def done(self, sa, msg, now):
        eng = self.eng
        sa.creating_child = False
        err = msg.error_notify()
        nb = msg.get(_PT_NONCE)
        if err is not None or nb is None or sa.state != "established":
            eng._emit(ChildFailed(sa, C.error_name(err[0]) if err else "no CHILD SA in answer"))
            return
        child = eng._finish_child(sa, msg, self.offer, self.ni, codec.parse_nonce(nb), None,
                                  "none", now)
        if child is not None:
            eng._emit(ChildUp(child))


class _ChildRekey:
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
        a, b = eng._child_offer(sa, self.spi_in, old.mode, old.local_ts, old.remote_ts, pfs)
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
                old.rekey_at = add(now, RETRY_LATER)
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
        offer = (self.spi_in, old.mode, old.local_ts, old.remote_ts)
        new = eng._finish_child(sa, msg, offer, self.ni, nr, shared,
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


class _IkeRekey:
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
                sa.rekey_at = add(now, RETRY_LATER)
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
            sa.rekey_at = add(now, RETRY_LATER)
            return
        new = IkeSA(True, self.spi, sa.peer_addr, sa.cfg)
        new.spi_r = chosen[1]
        new.ni, new.nr = self.ni, nr
        new.keys = ike_keys(self.ni, nr, shared, new.spi_i, new.spi_r, sa.keys.sk_d)
        eng.sas[new.spi_i] = new
        eng._move(sa, new, now)
        eng._del_ike(sa, now)
