"""Per-peer discovery, negative cache and sticky security, sans-IO (DESIGN s4-s5).

    disc = Discovery(probe_timeout=3, backoff_min=30, backoff_max=3600,
                     probe_burst=3, probe_window=600, sticky_time=86400,
                     max_peers=32, max_probing=8)
    what, probe, why = disc.on_send(peer, action, level, now)
    deliver, probe = disc.on_clear_inbound(peer, action, now)
    disc.probe_result(peer, OK | TIMEOUT | UNREACHABLE, now)
    disc.seen_level(peer, level, now, sticky_time=None)
    timed_out = disc.tick(now)          # peers whose probe ran out: now LEGACY
    disc.next_deadline(now) -> ms until the nearest probe deadline (<= 0: due), or None
    disc.state(peer), disc.counters

Durations are given in seconds and kept as integer ms; `now` is an integer ms tick
(pnpipsec.ticks). A deadline that has passed is set to None by tick(), and old stamps
are clamped there, so no tick is ever compared across more than half the wrap.

peer: any hashable (the runtime uses packed address bytes). action: a policy.Action for
this datagram (already tightened by the app's min_level, Action.with_min). level: the
level of the SA we hold with the peer now (CLEAR when none).

`what` is SEND_ESP ("esp"), SEND_CLEAR ("clear"), HOLD ("hold": wait for the SA up to
the caller's timeout, then fail) or FAIL ("fail": refuse now, `why` says why).
On HOLD the runtime waits (LevelTable.wait) for level >= max(action.level, ENCRYPTED)
or the caller's timeout, and then asks on_send again (a probe that failed meanwhile
turns the answer into FAIL). `probe` True means discovery has just counted a probe and marked the peer PROBING:
the runtime starts IKE_SA_INIT now and later reports probe_result(), or tick() times
it out. `why` is "" or a short reason ("legacy", "sticky", "level", "probing",
"rate", "full").

States: UNKNOWN -> PROBING -> IPSEC | LEGACY; LEGACY holds until legacy_until (the
negative cache), then behaves like UNKNOWN. seen_level(>= ENCRYPTED) makes a peer IPSEC
from any state (an SA we did not probe for, e.g. the peer initiated).

on_send rules, first row that applies (S = sticky: seen at >= ENCRYPTED within the
sticky time; "can probe" = not PROBING, not LEGACY-cached, rate bound allows):

    action        SA level         peer                     -> what    probe
    BYPASS        any              any                         clear   no
    REQUIRE n     >= n             any                         esp     no
    REQUIRE n     ENCRYPTED.. <n   any                         hold    no   (auth may follow)
    REQUIRE n     CLEAR            PROBING                     hold    no
    REQUIRE n     CLEAR            LEGACY-cached               fail    no   "legacy"
    REQUIRE n     CLEAR            can probe                   hold    yes
    REQUIRE n     CLEAR            cannot probe (rate/full)    fail    no   "rate"/"full"
    OPPORTUNISTIC >= ENCRYPTED     any                         esp     no
    OPPORTUNISTIC CLEAR            S and PROBING               hold    no   "sticky"
    OPPORTUNISTIC CLEAR            S and LEGACY-cached         fail    no   "sticky"
    OPPORTUNISTIC CLEAR            S and can probe             hold    yes  "sticky"
    OPPORTUNISTIC CLEAR            S and cannot probe          fail    no   "sticky"
    OPPORTUNISTIC CLEAR            not S, can probe            clear   yes
    OPPORTUNISTIC CLEAR            not S, otherwise            clear   no

So REQUIRE never answers clear, and a sticky peer never gets clear under OPPORTUNISTIC:
an attacker who blocks IKE (or forges ICMP unreachable) cannot turn a once-encrypted
peer back to clear. Only an explicit BYPASS (the user's own policy) sends clear to it.

on_clear_inbound rules (a clear datagram from a peer with no SA):

    BYPASS          deliver   no probe
    OPPORTUNISTIC   deliver   probe if can probe      (delivered with level CLEAR:
                                                        the app sees it; a sticky peer's
                                                        clear datagram is not trusted more
                                                        than any spoofable clear datagram)
    REQUIRE n       refuse    probe if can probe      (counted in "refused_in")

Bounds: a failed probe puts the peer in the negative cache for
backoff_min * 2**(failures-1), capped at backoff_max; a success resets failures. On top
of that at most probe_burst probes start per peer in any probe_window, at most
max_probing probes run at once, and at most max_peers peers are tracked (when full, the
stalest entry that is neither probing nor sticky nor backing off is dropped; if none is,
the new peer is not probed: "full"). Sticky memory is in RAM: it ends at reboot.
"""

from pnpipsec import ENCRYPTED
from pnpipsec.ticks import add, clamp, diff, ms

UNKNOWN = "unknown"
PROBING = "probing"
IPSEC = "ipsec"
LEGACY = "legacy"

OK = "ok"
TIMEOUT = "timeout"
UNREACHABLE = "unreachable"

SEND_ESP = "esp"
SEND_CLEAR = "clear"
HOLD = "hold"
FAIL = "fail"

_BYPASS = "bypass"
_REQUIRE = "require"


class _Peer:
    def __init__(self, now):
        self.state = UNKNOWN
        self.failures = 0
        self.legacy_until = None
        self.sticky_until = None
        self.deadline = None        # probe deadline while PROBING
        self.probes = []            # start times of recent probes (<= probe_burst)
        self.touched = now


class Discovery:
    def __init__(self, probe_timeout=3, backoff_min=30, backoff_max=3600,
                 probe_burst=3, probe_window=600, sticky_time=86400,
                 max_peers=32, max_probing=8):
        self.probe_timeout = ms(probe_timeout)
        self.backoff_min = ms(backoff_min)
        self.backoff_max = ms(backoff_max)
        self.probe_burst = probe_burst
        self.probe_window = ms(probe_window)
        self.sticky_time = ms(sticky_time)
        self.max_peers = max_peers
        self.max_probing = max_probing
        self._peers = {}
        self._probing = 0
        self.counters = {"probes": 0, "probe_ok": 0, "probe_timeout": 0,
                         "probe_unreachable": 0, "legacy_marks": 0, "send_clear": 0,
                         "send_esp": 0, "held": 0, "refused": 0, "delivered_clear": 0,
                         "refused_in": 0, "rate_limited": 0, "table_full": 0}

    # -- queries -----------------------------------------------------------------
    def state(self, peer, now=None):
        p = self._peers.get(peer)
        if p is None:
            return UNKNOWN
        if p.state == LEGACY and now is not None and _passed(now, p.legacy_until):
            return UNKNOWN
        return p.state

    def is_sticky(self, peer, now):
        p = self._peers.get(peer)
        return p is not None and not _passed(now, p.sticky_until)

    def legacy_until(self, peer):
        p = self._peers.get(peer)
        return p.legacy_until if p is not None and p.state == LEGACY else None

    def backoff(self, failures):
        """Negative-cache ms after `failures` consecutive failed probes (>= 1)."""
        t = self.backoff_min
        n = 1
        while n < failures and t < self.backoff_max:
            t *= 2
            n += 1
        return t if t < self.backoff_max else self.backoff_max

    def peers(self):
        return list(self._peers.keys())

    def entry(self, peer):
        """The per-peer record (state, failures, legacy_until, sticky_until, deadline,
        probes), or None: the node's Peer holds it; read it, change it only here."""
        return self._peers.get(peer)

    # -- internals ---------------------------------------------------------------
    def _get(self, peer, now, create):
        p = self._peers.get(peer)
        if p is not None:
            p.touched = now
            return p
        if not create:
            return None
        if len(self._peers) >= self.max_peers and not self._evict(now):
            return None
        p = self._peers[peer] = _Peer(now)
        return p

    def _evict(self, now):
        """Drop the stalest entry that is neither probing nor sticky. A legacy entry may
        go too (forgetting it costs one more bounded probe later); otherwise spoofed
        clear datagrams could fill the table and stop discovery for everyone new."""
        victim = None
        for k in self._peers:
            q = self._peers[k]
            if q.state == PROBING or not _passed(now, q.sticky_until):
                continue
            if victim is None or diff(q.touched, self._peers[victim].touched) < 0:
                victim = k
        if victim is None:
            return False
        del self._peers[victim]
        return True

    def _why_not(self, p, now):
        """"" when a probe may start now, else the reason it may not."""
        if p is None:
            return "full"
        if p.state == PROBING:
            return "probing"
        if p.state == LEGACY and not _passed(now, p.legacy_until):
            return "legacy"
        if self._probing >= self.max_probing:
            return "rate"
        w = self.probe_window
        pr = p.probes
        while pr and diff(now, pr[0]) >= w:
            pr.pop(0)
        if len(pr) >= self.probe_burst:
            return "rate"
        return ""

    def _start(self, p, now):
        p.state = PROBING
        p.deadline = add(now, self.probe_timeout)
        p.probes.append(now)
        self._probing += 1
        self.counters["probes"] += 1

    def _try_probe(self, peer, now):
        """-> (started, reason)"""
        p = self._get(peer, now, True)
        why = self._why_not(p, now)
        if why == "":
            self._start(p, now)
            return True, ""
        if why == "rate":
            self.counters["rate_limited"] += 1
        elif why == "full":
            self.counters["table_full"] += 1
        return False, why

    def _result(self, what, probe, why):
        c = self.counters
        if what == SEND_CLEAR:
            c["send_clear"] += 1
        elif what == SEND_ESP:
            c["send_esp"] += 1
        elif what == HOLD:
            c["held"] += 1
        else:
            c["refused"] += 1
        return what, probe, why

    # -- events ------------------------------------------------------------------
    def on_send(self, peer, action, level, now):
        """Decide one outgoing datagram: (what, start_probe, why); see the table."""
        kind = action.kind
        if kind == _BYPASS:
            return self._result(SEND_CLEAR, False, "")
        if kind == _REQUIRE:
            need = action.level
            if level >= need:
                return self._result(SEND_ESP, False, "")
            if level >= ENCRYPTED:
                return self._result(HOLD, False, "level")
            started, why = self._try_probe(peer, now)
            if started:
                return self._result(HOLD, True, "")
            if why == "probing":
                return self._result(HOLD, False, why)
            return self._result(FAIL, False, why)
        # OPPORTUNISTIC
        if level >= ENCRYPTED:
            return self._result(SEND_ESP, False, "")
        sticky = self.is_sticky(peer, now)
        started, why = self._try_probe(peer, now)
        if sticky:
            if started or why == "probing":
                return self._result(HOLD, started, "sticky")
            return self._result(FAIL, False, "sticky")
        return self._result(SEND_CLEAR, started, "")

    def on_clear_inbound(self, peer, action, now):
        """A clear datagram arrived from a peer with no SA: (deliver, start_probe)."""
        if action.kind == _BYPASS:
            self.counters["delivered_clear"] += 1
            return True, False
        started, why = self._try_probe(peer, now)
        if action.kind == _REQUIRE:
            self.counters["refused_in"] += 1
            return False, started
        self.counters["delivered_clear"] += 1
        return True, started

    def probe_result(self, peer, result, now):
        """The outcome of the probe (IKE_SA_INIT): OK, TIMEOUT or UNREACHABLE (ICMP)."""
        p = self._peers.get(peer)
        if p is None:
            if result != OK:
                return
            p = self._get(peer, now, True)
            if p is None:
                return
        if p.state == PROBING:
            self._probing -= 1
            p.deadline = None
        elif result != OK:
            return  # a stale failure for a peer not being probed: ignore
        if result == OK:
            self.counters["probe_ok"] += 1
            p.state = IPSEC
            p.failures = 0
            p.legacy_until = None
            return
        self.counters["probe_unreachable" if result == UNREACHABLE else "probe_timeout"] += 1
        self._legacy(p, now)

    def _legacy(self, p, now):
        p.state = LEGACY
        p.failures += 1
        p.legacy_until = add(now, self.backoff(p.failures))
        self.counters["legacy_marks"] += 1

    def seen_level(self, peer, level, now, sticky_time=None):
        """An SA with the peer is at `level` (>= ENCRYPTED): sticky memory starts/renews."""
        if level < ENCRYPTED:
            return
        p = self._get(peer, now, True)
        if p is None:
            return
        if p.state == PROBING:
            self._probing -= 1
            p.deadline = None
        p.state = IPSEC
        p.failures = 0
        p.legacy_until = None
        t = self.sticky_time if sticky_time is None else ms(sticky_time)
        until = add(now, t)
        if p.sticky_until is None or diff(until, p.sticky_until) > 0:
            p.sticky_until = until

    def forget(self, peer):
        """Drop everything known about peer (e.g. the user says it is legacy now)."""
        p = self._peers.pop(peer, None)
        if p is not None and p.state == PROBING:
            self._probing -= 1

    def tick(self, now):
        """Time out probes (-> LEGACY); returns the peers that timed out now."""
        out = []
        for k in self._peers:
            p = self._peers[k]
            if p.state == PROBING and diff(now, p.deadline) >= 0:
                out.append(k)
            # passed deadlines end, old stamps stay comparable (ticks wrap)
            if _passed(now, p.sticky_until):
                p.sticky_until = None
            if _passed(now, p.legacy_until):
                p.legacy_until = None      # a LEGACY entry without it: cache expired
            p.touched = clamp(now, p.touched)
            pr = p.probes
            while pr and diff(now, pr[0]) >= self.probe_window:
                pr.pop(0)
        for k in out:
            self.probe_result(k, TIMEOUT, now)
        return out

    def next_deadline(self, now):
        d = None
        for k in self._peers:
            p = self._peers[k]
            if p.state == PROBING:
                x = diff(p.deadline, now)
                if d is None or x < d:
                    d = x
        return d


def _passed(now, t):
    """True when deadline t is None or has come."""
    return t is None or diff(now, t) >= 0
