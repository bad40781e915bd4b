"""IKEv2 engine, sans-IO: datagrams and time in, datagrams and events out.

CONTRACT (the node runtime in pnpipsec/node.py and the tests code against this):

    eng = Engine(rand, aes, local, policy=None, cookie_threshold=8,
                 half_open_timeout=30, natt_ports=(500, 4500), dh=None, sig=None,
                 max_sas=32, max_children=4, max_half_open=16, rank=None,
                 max_answer_rate=5000, answer_sources=64, decision_timeout=2,
                 fallback=None, max_held=8)
        rand(n) -> bytes; aes: an AES provider (pnpipsec.crypto.aes);
        local: LocalIdentity(ed25519_seed=None, psk_ids=None) -- our long-term identity;
        policy(peer_addr, peer_id, auth_method) -> PeerConfig or None: asked on every
        incoming IKE_SA_INIT (peer_id and auth_method None then) and again in IKE_AUTH
        with the peer's ID (id_type, bytes) and its method ("null"/"psk"/"pubkey");
        None refuses (NO_PROPOSAL_CHOSEN / AUTHENTICATION_FAILED). policy=None accepts
        every peer with NULL authentication (PeerConfig() defaults). In IKE_AUTH and
        for a new CHILD SA it may also answer PENDING: see HELD DECISIONS.
        decision_timeout, fallback, max_held: see HELD DECISIONS.
        dh / sig: optional module-like providers standing in for pnpipsec.crypto.x25519
        (keypair, x25519) and pnpipsec.crypto.ed25519 (sign, verify), e.g. the host
        board's OpenSSL-backed ones; default: the pure-Python modules.
        max_sas, max_half_open, max_answer_rate, answer_sources, rank: see COOKIES AND
        BUDGETS below;
        max_children: CHILD SAs per IKE SA beyond which a peer's CREATE_CHILD_SA for a
        new (not rekeyed) CHILD SA gets NO_ADDITIONAL_SAS.

    sa = eng.initiate(peer_addr, peer_cfg, now)   -> IkeSA  (queues IKE_SA_INIT)
    eng.receive(data, peer_addr, now, via=None)    IKE message without non-ESP marker; via:
                                                   the caller's arrival tag (the node: the
                                                   socket), copied onto every answer to it
    eng.tick(now)                                  retransmit, give up, rekey, liveness
    eng.next_deadline(now) -> ms until the nearest timer (<= 0: due), or None
    `now` is always integer milliseconds that wrap (pnpipsec.ticks); durations in the
    constructor and PeerConfig are seconds, kept as integer ms.
    eng.pop_tagged() -> list of records (data, addr, response, exch, spi, via) to send:
        data    the IKE message (the node adds the non-ESP marker on 4500)
        addr    where it goes, (host, port)
        response  True for an answer to a peer's request (it goes back the way the
                request came: via), False for our requests (and retransmissions)
        exch    exchange type (34 IKE_SA_INIT, 35 IKE_AUTH, 36 CREATE_CHILD_SA,
                37 INFORMATIONAL)
        spi     our IKE SPI of the SA it belongs to (8 bytes), None for the stateless
                IKE_SA_INIT answers (cookie, NO_PROPOSAL_CHOSEN, INVALID_KE_PAYLOAD)
        via     for a response: the `via` receive() got with its request; else None
      A plain tuple: the records live only between receive/tick and the node's send.
    eng.pop_datagrams() -> list of (data, addr)   the same, untagged (tests and tools)
    eng.pop_events() -> list of events (see Event classes below)
    eng.rekey_child(child, now); eng.rekey_ike(sa, now)
    eng.create_child(sa, now)                      a new CHILD SA over an established IKE SA
    eng.abandon(sa, now)                           DELETE once, without waiting; IkeDown
    eng.seen(sa, now)                              ESP proved the peer alive
    eng.delete(sa_or_child, now)                   IKE SA (with its children) or one CHILD SA
    eng.check_liveness(sa, now)                    empty INFORMATIONAL (dead peer detection)
    eng.send_notify(sa, ntype, data, now)          INFORMATIONAL carrying one status notify
    eng.set_local_addresses(addrs, now) -> [IkeSA]   our addresses changed (MOBIKE)
    eng.move(sa, new_local=None, new_peer=None, now=None) -> bool   MOBIKE update
    eng.auth_octets(sa, local=True) -> bytes       the octets our (peer's) AUTH covered
                                                   (kept across IKE rekeys; None before)
    eng.half_open() -> int
    eng.decided(sa, cfg_or_None, now) -> bool      the answer for a held request
    eng.holding(sa) -> bool                        a request of sa waits for a decision
    eng.stats: dict of counters: "rx", "drop_malformed", "drop_icv", "drop_unknown_spi",
        "drop_mid", "drop_unexpected", "drop_bad_ke", "retransmit", "replay",
        "cookie_sent", "invalid_ke_sent", "timeout", "drop_full", "drop_rate",
        "drop_rate_source", "evict_half_open", "evict_per_host", "evict_established",
        "initial_contact", "held", "held_absorbed", "drop_held_full", "decision_timeout",
        "decision_late", and MOBIKE's (see MOBIKE) (missing key = 0)

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
        IkeRekeyed(old, new), ChildFailed(sa, reason), IkeMoved(sa, old, new) (MOBIKE),
        DecisionPending(sa, peer_id, method) (see HELD DECISIONS).
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
    method (the AUTH method object, pnpipsec.ike.auth) and auth (its name:
    "null"/"psk"/"pubkey"), peer_pubkey (for pubkey auth), state, keys for the
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
to natt_ports[1]. The runtime sends a request whose tag says IKE_SA_INIT (34) to a
peer port other than natt_ports[1] from its port-500 socket without marker, every
other request from its 4500 socket with the non-ESP marker, and a response back on
the socket its request came in on (the tag's via). On messages whose ICV checked, an
SA follows a peer's port change (NAT rebinding, 500 -> 4500) but never a change of
its host (_follow): an ICV proves only that the sender holds this SA's keys. Answers
go to sa.peer_addr (a replayed answer, and every answer on a MOBIKE SA, to where the
request came from). A peer's host changes only through MOBIKE, below.

MOBIKE (RFC 4555; ike/x_mobike.py, imported when an SA first needs it). Both sides
send N(MOBIKE_SUPPORTED) in IKE_AUTH (eng.mobike, default True; sa.mobike when both
did), with our addresses (eng.local_addrs, once the node set them) as
ADDITIONAL_IP4/IP6_ADDRESS or NO_ADDITIONAL_ADDRESSES; the peer's list is kept in
sa.peer_addrs (at most 8). eng.set_local_addresses(addrs, now): our addresses
changed; SAs whose address went tell the peer (eng.move). eng.move(sa, new_local,
new_peer, now): as original initiator an INFORMATIONAL with UPDATE_SA_ADDRESSES,
NAT-D made anew (fresh random values: both ends keep seeing a NAT, as after
IKE_SA_INIT, so ESP stays in UDP) and COOKIE2; as original responder our address list. As original responder we answer a
peer's authenticated UPDATE_SA_ADDRESSES where it came from (NAT-D, COOKIE2 echoed;
every COOKIE2 is echoed), and when it came from a new host we first check return
routability: an INFORMATIONAL with a fresh COOKIE2 to the new address; only the
answer that echoes it moves the SA (IkeMoved(sa, old, new): sa.peer_addr, the hosts
index and the CHILD SAs' peer_addr; SPIs unchanged). No answer in 3 sends: the check
goes on to the old address and nothing moves ("rr_failed"). An UPDATE on an SA we
initiated, or on one without MOBIKE, moves nothing ("mobike_refused"); a bad ICV is
dropped before any of this ("drop_icv"), and a packet from a new address without
UPDATE moves nothing. Counters: "mobike_update", "rr_sent", "rr_failed", "moved",
"mobike_refused", "mobike_update_sent", "mobike_cookie2_bad",
"mobike_update_refused".

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
    by x_cookie.gate before any parse, state or DH. The secret comes from rand and
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

HELD DECISIONS (one asynchronous path; a policy server plugs in here). When the policy
answers PENDING (pnpipsec.ike.sa.PENDING) for a peer's IKE_AUTH (the half-open SA) or
for a new CHILD SA in its CREATE_CHILD_SA (not a rekey), the engine keeps the request,
parsed and its ICV checked, in a Held record (eng.held, by our SPI; the SA's own
record grows by nothing), emits DecisionPending(sa, peer_id, method) and answers
nothing yet. Retransmissions of the held request (the same bytes) are absorbed:
counted ("held_absorbed"), neither decrypted nor reprocessed. eng.decided(sa, cfg,
now) then runs the exchange exactly as the synchronous path would have with that
answer (same code, same rand calls: the same response bytes), or refuses (cfg None:
AUTHENTICATION_FAILED in IKE_AUTH, NO_PROPOSAL_CHOSEN for a CHILD SA); the answer is
kept as last_resp for later retransmissions, as usual, and carries the request's
arrival tag (via). A request not decided within decision_timeout seconds (integer ms
inside; default 2 s, inside an initiator's retransmission schedule of 0.5/1/2/4 s) is
answered by fallback(peer_addr, peer_id, method) -> PeerConfig or None, the local
answer (None refuses; default: refuse) ("decision_timeout"). At most max_held
requests wait; beyond, a request is dropped unanswered ("drop_held_full"): its
retransmission asks again. An SA that goes (deleted, evicted) forgets its held
request; a held CHILD SA whose IKE SA is no longer established by then gets
TEMPORARY_FAILURE. The policy must answer IKE_SA_INIT (peer_id and method None) at
once; PENDING there proceeds with PeerConfig() until IKE_AUTH decides.

ERRORS IN IKE_SA_INIT ANSWERS are unauthenticated; we act on them at once
(NO_PROPOSAL_CHOSEN -> IkeDown) rather than waiting for a possible genuine answer.
HASH ALGORITHMS: we announce Identity (5, RFC 8420) only.

TEST HOOKS: eng.ike_proposals / eng.esp_proposals (lists of proposals as codec.encode_sa
takes them, ESP SPI filled in) and eng.first_ke_group (a group other than 31 makes our
first KE a dummy of that group, which a responder must refuse with INVALID_KE_PAYLOAD).
Tests may also replace eng._encode, eng._new_esp_spi, eng._del_child and
eng._established_with, and call eng._send_init.

WHERE THINGS LIVE. This module: the public API, dispatch (SPIs, message IDs,
retransmission of our one outstanding request, replayed answers), timers, the SA
table and its budgets and evictions. Each exchange, both roles, has its own module
(functions taking the engine first; initiator requests are job objects with build(now)
and done(sa, msg, now), queued by _request):
    x_init    IKE_SA_INIT: our request and its answer (cookie / INVALID_KE retries),
              a peer's request -> half-open SA
    x_cookie  IKE_SA_INIT under load: stateless cookie answers, answer budgets,
              admission of proven requests (imported only under load)
    x_auth    IKE_AUTH: our AUTH, the check of the peer's, INITIAL_CONTACT,
              establishing the IKE SA
    x_child   CHILD SAs: offer, choice (responder), check (initiator), used by IKE_AUTH
              too; CREATE_CHILD_SA for new CHILD SAs and CHILD rekeys
    x_rekey   IKE SA rekey (imported at the first rekey)
    x_info    INFORMATIONAL: deletes, liveness checks, notifies
    props     our proposals and select(); auth: the AUTH methods as objects (NULL,
              PSK, ED25519: sa.method; sa.auth is its name).
Exchange modules register an SA with eng._add(sa) (never eng.sas[...] = sa: the
indexes and the timer heap follow _add/_remove) and any code that gives an SA an
earlier deadline outside _dispatch/_request/tick marks it with eng._mark(sa) (see
INDEXES AND TIMERS); eng.hosts, eng.ids, eng.spis are the indexes (read-only).
"""

from pnpipsec.ike import codec
from pnpipsec.ike import x_auth, x_child, x_info, x_init
from pnpipsec.ike.codec import IkeParseError
from pnpipsec.ike.props import select, IKE_SUITE, ESP_SUITE  # noqa: F401 (select: API)
from pnpipsec.ike.sa import (LocalIdentity, PeerConfig, IkeSA, ChildSA, Pending,  # noqa: F401
                             IkeDown, ChildDown, PENDING, Held, DecisionPending, IkeMoved)
from pnpipsec.crypto import x25519
from pnpipsec.ticks import AGE_CAP, add, age, clamp, diff, ms
from pnpipsec.timers import Timers

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_CREATE_CHILD_SA = const(36)
_DH_CURVE25519 = const(31)
_F_INITIATOR = const(8)
_F_RESPONSE = const(32)
_IKE_AUTH = const(35)
_IKE_SA_INIT = const(34)
_INFORMATIONAL = const(37)
_N_TEMPORARY_FAILURE = const(43)
_N_UNSUPPORTED_CRITICAL_PAYLOAD = const(1)
_PROTO_ESP = const(3)
_PROTO_IKE = const(1)
_PT_D = const(42)
_PT_SA = const(33)

ZERO8 = b"\x00" * 8
RETRY_LATER = 10000      # ms
SWEEP = const(16)        # SAs whose old stamps tick() clamps per pass (see _sweep)
SWEEP_MS = 3600000       # a new round of clamping at most this often


class Engine:
    def __init__(self, rand, aes, local, policy=None, cookie_threshold=8,
                 half_open_timeout=30, natt_ports=(500, 4500), dh=None, sig=None,
                 max_sas=32, max_children=4, max_half_open=16, rank=None,
                 max_answer_rate=5000, answer_sources=64, decision_timeout=2,
                 fallback=None, max_held=8):
        self.max_sas = max_sas
        self.max_children = max_children
        self.max_per_host = 4
        self.max_half_open = max(max_half_open, cookie_threshold)
        self.max_half_open_per_host = 2
        self.rank = rank if rank is not None else self._default_rank
        # cookie state and answer budgets (x_cookie uses them, under load only)
        self.max_answer_rate = max_answer_rate
        self._tokens = max_answer_rate * 1000     # milli-answers
        self._tokens_at = None
        self.answer_sources = answer_sources
        self._answered = {}     # source host -> cookie answers in the current second
        self._answered_at = None
        self._secret = None
        self._old_secret = None
        self._secret_ver = 0
        self._secret_at = None
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
        # Indexes, so that a datagram or a handshake costs the same with 1 SA as with
        # 1,000 (one dict entry or list slot per SA; see INDEXES AND TIMERS):
        self.sas = {}            # our SPI -> IkeSA (every live SA, also dead ones kept
                                 # for retransmitted answers)
        self.init_idx = {}       # (peer SPIi, peer_addr) -> responder IkeSA
        self.hosts = {}          # peer host -> [IkeSA in self.sas]
        self.spis = {}           # our inbound ESP SPI -> ChildSA (until it is down)
        self.ids = {}            # (peer ID, key) of a trusted AUTH -> [IkeSA]
        self._half = []          # half-open SAs (left ones pruned by half_open())
        self._dead = []          # dead SAs still in self.sas (pruned likewise)
        self._timers = Timers()  # IkeSA -> its earliest deadline
        self._dirty = {}         # IkeSAs whose deadlines may have moved earlier
        self._n = 0              # registration counter (IkeSA.n: tick order)
        self._sweep_spis = []    # SPIs left to clamp in this round (_sweep)
        self._sweep_at = None
        self.visits = 0          # SAs tick() looked at (tests: a pass costs what is due)
        self.out = []
        self.events = []
        self.stats = {}
        self.ike_proposals = [(1, _PROTO_IKE, b"", IKE_SUITE)]
        self.esp_proposals = [(1, _PROTO_ESP, b"", ESP_SUITE)]
        self.first_ke_group = _DH_CURVE25519
        # held decisions (HELD DECISIONS above)
        self.decision_ms = ms(decision_timeout)
        self.fallback = fallback
        self.max_held = max_held
        self.held = {}           # our SPI -> Held (a request waiting for a decision)
        self.mobike = True       # offer MOBIKE (RFC 4555) in IKE_AUTH; see MOBIKE
        self.local_addrs = None  # our addresses (host texts) once the node said them

    # ------------------------------------------------------------ public API

    def pop_tagged(self):
        o = self.out
        self.out = []
        return o

    def pop_datagrams(self):
        return [(r[0], r[1]) for r in self.pop_tagged()]

    def pop_events(self):
        e = self.events
        self.events = []
        return e

    def half_open(self):
        return len(self._prune(self._half, "half_open"))

    def decided(self, sa, cfg, now):
        """The answer for sa's held request: a PeerConfig completes the exchange as the
        synchronous path would, None refuses. False (and nothing done) when nothing is
        held for sa: decided already, fallen back at the deadline, or the SA is gone."""
        h = self.held.get(sa.local_spi)
        if h is None or h.sa is not sa or cfg == PENDING:
            self._count("decision_late")
            return False
        del self.held[sa.local_spi]
        self.now = now
        self._resume(h, cfg, now)
        return True

    def holding(self, sa):
        h = self.held.get(sa.local_spi)
        return h is not None and h.sa is sa

    def initiate(self, peer_addr, cfg, now, init_tries=None):
        """Start an IKE SA. init_tries bounds the IKE_SA_INIT retransmissions of this
        attempt (default: cfg.init_tries, else cfg.retransmit_tries): a discovery probe
        is short, an attempt with a peer known to speak IKE is not."""
        self.now = now
        sa = IkeSA(True, self._new_ike_spi(), peer_addr, cfg)
        sa.init_tries = init_tries if init_tries is not None else cfg.init_tries
        sa.ni = self.rand(32)
        x_init.new_ke(self, sa, self.first_ke_group)
        sa.state = "init_sent"
        sa.last_rx = now
        self._add(sa)
        x_init.send(self, sa, now)
        return sa

    def rekey_child(self, child, now):
        sa = child.ike
        if child.state != "up" or child.rekeying or sa.state != "established":
            return
        child.rekeying = True
        self._request(sa, _CREATE_CHILD_SA, x_child.Rekey(self, sa, child), now)

    def create_child(self, sa, now, cfg=None):
        """A new CHILD SA over an established IKE SA (CREATE_CHILD_SA without REKEY_SA),
        e.g. after the peer deleted the last one; ChildUp or ChildFailed follows."""
        if sa.state != "established" or sa.creating_child:
            return
        sa.creating_child = True
        self._request(sa, _CREATE_CHILD_SA, x_child.New(self, sa, cfg or sa.cfg), now)

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
                self._send(self._encode(sa, _INFORMATIONAL, False, mid,
                                        [(_PT_D, codec.encode_delete(_PROTO_IKE))]),
                           sa, _INFORMATIONAL)
            sa.delete_sent = True
        self._kill(sa, "deleted")

    def set_local_addresses(self, addrs, now):
        """Our addresses changed (the node passes the board's list): every established
        MOBIKE SA whose address in use went away (or is unknown, when the list changed
        at all) tells the peer -- as original initiator an UPDATE_SA_ADDRESSES, as
        original responder our new address list. Returns the SAs told. (Scans the
        table: address changes are rare.)"""
        self.now = now
        old = self.local_addrs
        self.local_addrs = list(addrs)
        # Any change counts, an address that appeared too: after a renumbering the new
        # prefix arrives (once past DAD) after the old one was deprecated, and only
        # then does the kernel send from it. Our sockets are bound to every address,
        # so the address an SA uses is rarely known (sa.local_addr None).
        changed = old is not None and sorted(old) != sorted(self.local_addrs)
        told = []
        for sa in list(self.sas.values()):
            if sa.state != "established" or not sa.mobike:
                continue
            la = sa.local_addr
            if (la is not None and la not in self.local_addrs) or (la is None and changed):
                if la is not None:
                    sa.local_addr = None
                if self.move(sa, now=now):
                    told.append(sa)
        return told

    def move(self, sa, new_local=None, new_peer=None, now=None):
        """MOBIKE: our address in use is now new_local (host text; None: unknown or
        unchanged) and/or, as original initiator, the peer is to be reached at
        new_peer (host, port: one of sa.peer_addrs, say): sa.peer_addr changes at once
        (IkeMoved) and an UPDATE_SA_ADDRESSES goes out. As original responder only our
        address list goes out (RFC 4555: the initiator decides). False when the SA is
        not established or did not negotiate MOBIKE."""
        if sa.state != "established" or not sa.mobike:
            return False
        if now is None:
            now = self.now
        self.now = now
        from pnpipsec.ike import x_mobike
        return x_mobike.move(self, sa, new_local, new_peer, now)

    def rekey_ike(self, sa, now):
        if sa.state != "established" or sa.rekeying:
            return
        sa.rekeying = True
        from pnpipsec.ike import x_rekey
        self._request(sa, _CREATE_CHILD_SA, x_rekey.Rekey(self, sa), now)

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
        x_info.del_ike(self, sa, now)

    def seen(self, sa, now):
        """Traffic authenticated on this SA (ESP) proves the peer alive: liveness checks
        wait, and a full table ranks the SA as active. (Per packet: the DPD deadline
        only moves later, so the timer heap is not touched.)"""
        if sa.last_rx is None:
            self._mark(sa)
        sa.last_rx = now

    def check_liveness(self, sa, now):
        if sa.state == "established" and sa.pending is None and not sa.queue:
            x_info.send(self, sa, [], now)

    def send_notify(self, sa, ntype, data, now):
        if sa.state == "established":
            x_info.send(self, sa, [codec.notify(ntype, data)], now)

    def auth_octets(self, sa, local=True):
        """The octets our (local) or the peer's AUTH payload covered in IKE_AUTH
        (RealMessage | Nonce | prf(SK_p, ID body)); an IKE rekey carries them over.
        None before IKE_AUTH completed and after forget_octets."""
        if sa.octets is None:
            return None
        return sa.octets[0 if local else 1]

    def forget_octets(self, sa, local=True):
        """Drop one side's AUTH octets once its proof is made or checked (a few hundred
        bytes per SA that a board would otherwise keep for the SA's life)."""
        o = sa.octets
        if o is not None:
            o = (None, o[1]) if local else (o[0], None)
            sa.octets = None if o == (None, None) else o

    def next_deadline(self, now):
        """Milliseconds from now to the nearest timer (<= 0: due), or None. Exact: the
        heap's top is checked against its SA's real deadlines (an entry left early by a
        deadline that moved later is set right first); held decisions (at most
        max_held) have their own deadlines."""
        best = self._heap_next(now)
        for h in self.held.values():
            d = diff(h.until, now)
            if best is None or d < best:
                best = d
        return best

    def _heap_next(self, now):
        self._flush(now)
        tq = self._timers
        while True:
            top = tq.peek(now)
            if top is None:
                return None
            t, sa = top
            real = self._due_of(sa, now) if self._live(sa) else None
            if real is None:
                tq.forget(sa)
            elif real != t:
                tq.set(sa, real, now)
            else:
                return diff(t, now)

    def _default_rank(self, sa):
        """(trust, recency): who keeps its slot when the table is full."""
        return (2 if sa.method.trusted else 0, self.recency(sa))

    def recency(self, sa):
        """Larger for the more recently active SA (minus its idle ms; stamps older than
        AGE_CAP all count as AGE_CAP, as clamping makes them)."""
        if sa.last_rx is None:
            return -(1 << 30)
        a = age(self.now, sa.last_rx)
        return -(a if a < AGE_CAP else AGE_CAP)

    def tick(self, now):
        """Retransmit, give up, expire, rekey, liveness: only the SAs whose earliest
        deadline has come (the timer heap), in registration order as a scan of the
        table would; then a few SAs get their old stamps clamped (_sweep)."""
        self.now = now
        if self.held:
            self._held_deadlines(now)
        self._flush(now)
        due = self._timers.pop_due(now)
        if len(due) > 1:
            due.sort(key=_order)
        for sa in due:
            if self._live(sa):
                self.visits += 1
                self._tick_sa(sa, now)
                self._mark(sa)
        self._sweep(now)
        self._flush(now)

    def _tick_sa(self, sa, now):
        sa.last_rx = clamp(now, sa.last_rx)
        p = sa.pending
        if p is not None and diff(now, p.next_at) >= 0:
            if p.tries >= p.max_tries:
                self._count("timeout")
                self._kill(sa, getattr(sa, "init_error", None) or "timeout")
                return
            p.tries += 1
            p.interval = min(p.interval * 2, p.cap)
            p.next_at = add(now, p.interval)
            self._count("retransmit")
            if p.addr is not None and p.tries >= p.job.tries:
                p.addr = None       # a new address never answered: on to the old one
                p.job.addr_failed(sa, now)
            self._send(p.data, sa, p.exch, p.addr)
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
            return
        if sa.state != "established":
            return
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

    def _sweep(self, now):
        """Keep old stamps comparable (ticks wrap): clamp SWEEP SAs per pass, a new
        round at most every SWEEP_MS. A stamp must be clamped before it is HALF (6.2
        days) old, and AGE_CAP is 5.8: a round of n SAs takes n / SWEEP passes (the
        node passes at least once a second), far less than the 10 h of margin."""
        left = self._sweep_spis
        if not left:
            if self._sweep_at is not None and 0 <= diff(now, self._sweep_at) < SWEEP_MS:
                return
            self._sweep_at = now
            left = self._sweep_spis = list(self.sas)
        for _ in range(SWEEP if SWEEP < len(left) else len(left)):
            sa = self.sas.get(left.pop())
            if sa is not None:
                sa.last_rx = clamp(now, sa.last_rx)

    def receive(self, data, peer_addr, now, via=None):
        self.now = now
        self._count("rx")
        if self._init_gate(data, peer_addr, now, via):
            return
        try:
            msg = codec.parse(data)
        except IkeParseError:
            self._count("drop_malformed")
            return
        msg.via = via       # every answer to this request carries it (the node: socket)
        msg.src = peer_addr
        try:
            if msg.exch == _IKE_SA_INIT and not msg.is_response:
                x_init.request(self, msg, peer_addr, now)
            else:
                self._dispatch(msg, peer_addr, now)
        except IkeParseError as e:
            self._count("drop_icv" if str(e) == "bad ICV" else "drop_malformed")

    # ------------------------------------------------------------ internals: budgets

    def _loaded(self, now):
        """Half-open SAs at the cookie threshold (recounted at most every 10 ms)."""
        if self._load_at is None or not 0 <= diff(now, self._load_at) < 10:
            self._load_at = now
            self._load = self.half_open() >= self.cookie_threshold
        return self._load

    def _init_gate(self, data, addr, now, via):
        """An IKE_SA_INIT request (from its header) while under load goes to the
        stateless cookie gate (x_cookie, imported only then). True when handled."""
        if len(data) < 28 or data[18] != _IKE_SA_INIT or (data[19] & 0x28) != _F_INITIATOR \
                or data[8:16] != ZERO8 or not self._loaded(now):
            return False
        from pnpipsec.ike import x_cookie
        return x_cookie.gate(self, data, addr, now, via)

    def _half_open_of(self, host):
        """Half-open responder SAs (from `host`, or all for None), oldest first."""
        if host is None:
            out = list(self.half_open_sas())
        else:
            out = [sa for sa in self.hosts.get(host, ()) if sa.state == "half_open"]
        out.sort(key=self.recency)
        return out

    def half_open_sas(self):
        return self._prune(self._half, "half_open")

    def _owned(self, host, skip=None):
        """SAs with `host` that hold a slot of the established budget: every state but
        half-open and dead (ours being set up, established, rekeyed, being deleted)."""
        return [sa for sa in self.hosts.get(host, ())
                if sa is not skip and sa.state not in ("half_open", "dead")]

    def owned_count(self):
        """How many SAs hold a slot of the established budget (counted, not scanned)."""
        return len(self.sas) - self.half_open() - len(self._prune(self._dead, "dead"))

    def _make_room(self, new):
        """Before `new` (just authenticated) is established: at most max_per_host SAs
        per address (the newcomer replaces that address's oldest) and max_sas in all
        (the least trusted, least recently active established SA gives way, but never
        to a less trusted newcomer). False when there is no room. Only a full table
        scans for its victim (ranks move with every packet: no index keeps them)."""
        same = self._owned(new.peer_addr[0], new)
        if len(same) >= self.max_per_host:
            self._evict(min(same, key=self.recency), "evict_per_host")
        n = self.owned_count()
        if self._live(new) and new.state not in ("half_open", "dead"):
            n -= 1
        if n < self.max_sas:
            return True
        victim = None
        vr = None
        for sa in self.sas.values():
            if sa is new or sa.state != "established":
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
        """Another IKE SA with sa's peer address is (or was) established."""
        for o in self.hosts.get(sa.peer_addr[0], ()):
            if o is not sa and o.state in ("established", "rekeyed", "deleting"):
                return True
        return False

    def _evict(self, sa, why):
        """Free a slot now: a DELETE the peer may or may not get, then gone."""
        self._count(why)
        self.abandon(sa, None)

    # ------------------------------------------------------------ internals: held decisions

    def _hold(self, sa, msg, addr, peer_id, method, now):
        """The policy said PENDING for sa's request msg: keep it until decided() or the
        deadline (nothing is answered meanwhile). Beyond max_held the request is dropped
        unanswered; the peer's retransmission asks again."""
        if len(self.held) >= self.max_held:
            self._count("drop_held_full")
            return
        self._count("held")
        self.held[sa.local_spi] = Held(sa, msg, addr, add(now, self.decision_ms), peer_id,
                                       method)
        self._emit(DecisionPending(sa, peer_id, method))

    def _absorb(self, sa, msg):
        """True when msg is a retransmission of sa's held request: swallowed (it gets
        the answer once decided; identical bytes, so no decryption needed)."""
        h = self.held.get(sa.local_spi)
        if h is None or h.sa is not sa or msg.mid != h.msg.mid:
            return False
        if msg.raw != h.msg.raw:
            self._count("drop_unexpected")      # same message ID, other content
            return True
        h.absorbed += 1
        self._count("held_absorbed")
        return True

    def _held_deadlines(self, now):
        """Requests undecided past decision_timeout get the local answer (fallback)."""
        for spi in list(self.held):
            h = self.held.get(spi)
            if h is None or diff(now, h.until) < 0:
                continue
            del self.held[spi]
            self._count("decision_timeout")
            cfg = None
            if self.fallback is not None:
                cfg = self.fallback(h.sa.peer_addr, h.peer_id, h.method)
                if cfg == PENDING:
                    cfg = None
            self._resume(h, cfg, now)

    def _resume(self, h, cfg, now):
        """Run the held request again with the policy's answer cfg, through the same
        code as the synchronous path (which then asks nobody)."""
        sa, msg = h.sa, h.msg
        try:
            if msg.exch == _IKE_AUTH:
                if sa.state == "half_open":
                    x_auth.request(self, sa, msg, h.addr, now, cfg)
            elif sa.state == "established":
                x_child.request(self, sa, msg, now, cfg)
            elif sa.state in ("rekeyed", "deleting"):
                self._respond(sa, msg, [codec.notify(_N_TEMPORARY_FAILURE)])
        except IkeParseError:
            self._count("drop_malformed")

    # ------------------------------------------------------------ internals: SA table

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
        """A random inbound SPI no CHILD SA of ours uses (one dict lookup per draw)."""
        while True:
            s = int.from_bytes(self.rand(4), "big")
            if s >= 256 and s not in self.spis:
                return s

    def _child_up(self, child):
        """A CHILD SA joined an IKE SA: its inbound SPI is taken."""
        self.spis[child.spi_in] = child

    def _child_gone(self, child):
        if self.spis.get(child.spi_in) is child:
            del self.spis[child.spi_in]

    def _jitter(self, now, life_ms):
        # at 80-90 % of the lifetime (integer ms: life_ms // 100 keeps it a small int)
        if not life_ms:
            return None
        return add(now, life_ms // 100 * (90 - self.rand(1)[0] * 10 // 255))

    def _send(self, data, sa, exch, addr=None):
        """Queue our request (or its retransmission) on `sa` to the peer (or to addr:
        a MOBIKE return-routability check)."""
        self.out.append((data, addr or sa.peer_addr, False, exch, sa.local_spi, None))

    def _answer(self, data, addr, msg, spi):
        """Queue an answer to the request `msg`, tagged with the way it came."""
        self.out.append((data, addr, True, msg.exch, spi, msg.via))

    def _emit(self, ev):
        self.events.append(ev)

    def _surface(self, sa):
        sa.surfaced = True

    # INDEXES AND TIMERS. Every SA enters the table through _add and leaves through
    # _remove, which keep self.sas, self.hosts, init_idx and the half-open and dead
    # lists in step. Deadlines: an SA is marked (_mark) by whatever may move one of
    # its deadlines earlier -- a message for it (_dispatch), a request it sends
    # (_request, _pump), its registration, a pass that handled it -- and _flush puts
    # marked SAs in the heap before tick() or next_deadline() read it. A deadline that
    # moves later needs no mark: its old entry comes up early and is set right.

    def _add(self, sa):
        """Register sa under its local SPI (again, after _remove, keeps it dead)."""
        spi = sa.local_spi
        if self.sas.get(spi) is not sa:
            self._n += 1
            sa.n = self._n
            self.sas[spi] = sa
            lst = self.hosts.get(sa.peer_addr[0])
            if lst is None:
                self.hosts[sa.peer_addr[0]] = [sa]
            elif sa not in lst:
                lst.append(sa)
            if sa.state == "half_open":
                self._half.append(sa)
            elif sa.state == "dead":
                self._dead.append(sa)
        self._mark(sa)

    def _index_init(self, sa, addr):
        """A responder SA found again by its IKE_SA_INIT (retransmissions)."""
        sa.init_key = (sa.spi_i, addr)
        self.init_idx[sa.init_key] = sa

    def _identified(self, sa):
        """sa's peer proved an identity (IKE_AUTH, or inherited in an IKE rekey):
        index it when the method makes it more than an address (PSK, a key)."""
        if sa.method is None or not sa.method.trusted or sa.peer_id is None:
            return
        k = sa.id_key = (sa.peer_id, sa.peer_pubkey)
        lst = self.ids.get(k)
        if lst is None:
            self.ids[k] = [sa]
        elif sa not in lst:
            lst.append(sa)

    def same_peer(self, sa):
        """The SAs that may belong to sa's peer: same trusted identity, else (NULL
        proves nothing) same address. Callers still check each one."""
        if sa.id_key is not None:
            return list(self.ids.get(sa.id_key, ()))
        return list(self.hosts.get(sa.peer_addr[0], ()))

    def _live(self, sa):
        return self.sas.get(sa.local_spi) is sa

    def _prune(self, lst, state):
        """lst without the SAs that left `state` or the table (in place)."""
        i = 0
        while i < len(lst):
            sa = lst[i]
            if sa.state != state or not self._live(sa):
                lst.pop(i)
            else:
                i += 1
        return lst

    def _mark(self, sa):
        self._dirty[sa] = None

    def _flush(self, now):
        """Marked SAs into the heap (an entry no later than their earliest deadline)."""
        if not self._dirty:
            return
        d = self._dirty
        self._dirty = {}
        for sa in d:
            if self._live(sa):
                t = self._due_of(sa, now)
                if t is not None:
                    self._timers.at(sa, t, now)

    def _due_of(self, sa, now):
        """sa's earliest deadline (a tick), or None."""
        best = None
        bd = 0
        for t in self._deadlines(sa):
            if t is not None:
                d = diff(t, now)
                if best is None or d < bd:
                    best, bd = t, d
        return best

    def _remove(self, sa):
        if self.sas.get(sa.local_spi) is sa:
            del self.sas[sa.local_spi]
            lst = self.hosts.get(sa.peer_addr[0])
            if lst is not None:
                if sa in lst:
                    lst.remove(sa)
                if not lst:
                    del self.hosts[sa.peer_addr[0]]
        if sa.init_key is not None and self.init_idx.get(sa.init_key) is sa:
            del self.init_idx[sa.init_key]
        lst = self.ids.get(sa.id_key) if sa.id_key is not None else None
        if lst is not None and sa in lst:
            lst.remove(sa)
            if not lst:
                del self.ids[sa.id_key]
        self._timers.forget(sa)
        if self.held and self.holding(sa):
            del self.held[sa.local_spi]     # the SA went: its request waits for nothing

    def _kill(self, sa, reason):
        """The IKE SA is gone: children down, IkeDown if the SA was ever visible."""
        if sa.state == "dead":
            return
        was = sa.state
        sa.state = "dead"
        sa.pending = None
        sa.queue = []
        for ch in sa.children:
            self._child_gone(ch)
            if ch.state != "down":
                ch.state = "down"
                self._emit(ChildDown(ch))
        sa.children = []
        self._remove(sa)
        if sa.surfaced and was != "rekeyed":
            self._emit(IkeDown(sa, reason))

    # ------------------------------------------------------------ internals: messages

    def _keys_in(self, sa):
        k = sa.keys
        return (k.sk_er, k.sk_ar) if sa.initiator else (k.sk_ei, k.sk_ai)

    def _encode(self, sa, exch, response, mid, payloads):
        k = sa.keys
        e, a = (k.sk_ei, k.sk_ai) if sa.initiator else (k.sk_er, k.sk_ar)
        f = _F_INITIATOR if sa.initiator else 0
        return codec.encode_sk(sa.spi_i, sa.spi_r, exch, f | _F_RESPONSE if response else f,
                               mid, payloads, e, a, self.aes, self.rand)

    def _send_init(self, sa, now):
        # (a test hook: resend our IKE_SA_INIT)
        self._mark(sa)
        x_init.send(self, sa, now)

    def _del_child(self, sa, child, now):
        # (tests replace it: a peer that never deletes old CHILD SAs)
        x_info.del_child(self, sa, child, now)

    def _request(self, sa, exch, job, now):
        """Queue a request job: job.build(now) -> payloads (None: skip) when its turn
        comes, job.done(sa, msg, now) with the answer; job.deletes_ike marks a DELETE."""
        sa.queue.append((exch, job))
        self._mark(sa)
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
            to = getattr(job, "addr", None)
            if to is not None:
                sa.pending.addr = to
                sa.pending.job = job
            self._mark(sa)
            self._send(data, sa, exch, to)

    def _respond(self, sa, msg, payloads, to=None):
        """Answer the peer's request msg: to sa.peer_addr, or to `to`; on a MOBIKE SA
        to where the request came from (RFC 7296 section 2.11; a peer that moved
        sends before our return-routability check let the SA follow it)."""
        data = self._encode(sa, msg.exch, True, msg.mid, payloads)
        sa.last_resp = (msg.mid, data)
        sa.recv_mid = msg.mid + 1
        if to is None:
            to = msg.src if sa.mobike and msg.src is not None else sa.peer_addr
        self._answer(data, to, msg, sa.local_spi)

    def _dispatch(self, msg, addr, now):
        local = msg.spi_r if msg.from_initiator else msg.spi_i
        sa = self.sas.get(local)
        if sa is None or sa.initiator == msg.from_initiator:
            self._count("drop_unknown_spi")
            return
        self._mark(sa)      # whatever it does may set an earlier deadline
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
                self._count("init_error_noted" if isinstance(e, x_init.Refused) else "drop_malformed")
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
            self._answer(sa.last_resp[1], addr, msg, sa.local_spi)
            return
        if self.held and self._absorb(sa, msg):
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
            self._respond(sa, msg, [codec.notify(_N_TEMPORARY_FAILURE)])
            return
        if msg.crit is not None:
            self._follow(sa, addr)
            self._respond(sa, msg, [codec.notify(_N_UNSUPPORTED_CRITICAL_PAYLOAD,
                                                 bytes((msg.crit,)))])
            return
        if msg.exch == _IKE_AUTH:
            x_auth.request(self, sa, msg, addr, now)
            return
        if msg.exch != _CREATE_CHILD_SA and msg.exch != _INFORMATIONAL:
            self._count("drop_unexpected")
            return
        self._follow(sa, addr)
        sa.last_rx = now
        if msg.exch == _CREATE_CHILD_SA:
            x_child.request(self, sa, msg, now)
        elif not (sa.mobike and self._mobike_request(sa, msg, addr, now)):
            x_info.request(self, sa, msg, now)

    def _mobike_request(self, sa, msg, addr, now):
        """An authenticated INFORMATIONAL on a MOBIKE SA, answered where it came from:
        a path check (charon's is an empty INFORMATIONAL from its new address) must
        come back there. x_mobike handles UPDATE_SA_ADDRESSES, COOKIE2, address lists."""
        for nt in msg.notifies():
            if 16396 <= nt[0] <= 16402:     # MOBIKE's notifies: x_mobike (imported now)
                from pnpipsec.ike import x_mobike
                if x_mobike.request(self, sa, msg, addr, now):
                    return True
                break
        x_info.request(self, sa, msg, now, None, addr)
        return True

    def _readdress(self, sa, addr):
        """sa's peer is at addr now (MOBIKE: after the return-routability check, or our
        own move as original initiator): the hosts index, its CHILD SAs and IkeMoved
        follow. Nothing else ever changes a peer's host (see _follow)."""
        old = sa.peer_addr
        if addr == old:
            return
        lst = self.hosts.get(old[0])
        if lst is not None and sa in lst:
            lst.remove(sa)
            if not lst:
                del self.hosts[old[0]]
        sa.peer_addr = addr
        for ch in sa.children:
            ch.peer_addr = addr
        lst = self.hosts.get(addr[0])
        if lst is None:
            self.hosts[addr[0]] = [sa]
        elif sa not in lst:
            lst.append(sa)
        self._count("moved")
        self._emit(IkeMoved(sa, old, addr))

    def _follow(self, sa, addr):
        """Follow a peer's port change (NAT rebinding, 500 -> 4500), never a host change:
        an ICV only proves the sender holds this SA's keys, and an attacker holds his own
        SA's keys, so a new source address would let him move his SA onto a victim's
        address. Host changes happen only in _readdress: MOBIKE, after the peer's
        authenticated UPDATE_SA_ADDRESSES and our return-routability check (RFC 4555)."""
        if addr != sa.peer_addr and sa.state != "init_sent" and addr[0] == sa.peer_addr[0]:
            sa.peer_addr = addr
            for ch in sa.children:
                ch.peer_addr = addr


def _order(sa):
    return sa.n


def _null_policy(peer_addr, peer_id, method):
    if method is None or method == "null":
        return PeerConfig()
    return None
