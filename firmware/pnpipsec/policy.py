"""Local security policy (SPD) and the decision point for SA proposals (DESIGN s6).

SPD -- an ordered list of entries; FIRST MATCH WINS, the default action comes last.
No "most specific" sorting: the order you write is the order that is asked, which is
predictable and costs one linear scan (the list is short on a device).

    spd = Spd([entry, ...], default=Action(OPPORTUNISTIC))     # Spd() = zero config
    spd = Spd.from_dicts([{"peer": "fd00::/64", "port": 7000,
                           "action": "require", "level": "authenticated"}, ...])
    act = spd.match(peer_addr, fingerprint, local_port, remote_port)   # -> Action
    act = spd.sa_action(peer_addr, fingerprint)                         # -> Action

Entry fields (plain dicts, so TOML/JSON config or a policy server can hand them over):
    peer        "any" | "2001:db8::7" | "fd00::/64" | "10.0.0.0/8" | "fp:ABCD-EFGH-IJKL-MNOP"
                (an identity fingerprint, pnpipsec.identity.fingerprint; dashes optional)
    port        int | "any": matches when the LOCAL or the REMOTE port equals it
                (the service port, whichever side we are on)
    local_port  int | "any"     remote_port  int | "any"   (not together with "port")
    action      "bypass" | "opportunistic" | "require"
    level       "encrypted" | "authenticated" | "authorized" (or 1..3); only with
                "require", which defaults to "encrypted"
    name        optional label (shown in logs)
Errors are ValueError("spd[i].<field>: ...") naming the field.

Matching: addresses are packed bytes (4 or 16); a prefix matches only addresses of its
own family (no IPv4-mapped IPv6 magic). A fingerprint entry matches only when the peer's
key fingerprint is known (IKE_AUTH onward); a port-specific entry matches only when the
ports are known (a datagram), never for a port-less question (an SA proposal).

SA proposals carry no ports. `sa_action` answers "what is the strongest thing this peer
may need?": it scans the entries that match the peer in order; port-specific ones are
collected, and the first port-agnostic one (or the default) ends the scan; the
strongest collected action wins (REQUIRE n > OPPORTUNISTIC > BYPASS). A proposal is
accepted unless that is BYPASS (a peer we only ever speak to in clear gets no SA).

DecisionPoint -- asked for every SA proposal, incoming and outgoing:

    dp = DecisionPoint(spd, ask=None, timeout=2, cache_lifetime=60,
                       fallback_lifetime=10, cache_max=32)
    d = dp.decide_local(request)               # sync, SPD only
    d = dp.decide_now(request, now)            # sync: fresh cached answer, else local
    d = await dp.decide(request, now)          # asks `ask` (if set) with timeout + cache
    dp.tick(now)                               # drops expired answers (the timer calls it)
    d = dp.begin(request, now)                 # the same in two sync halves, for loops
    if d is None:                              # that are not asyncio's: None = ask now,
        d = dp.finish(request, now, answer, error)   # error None | "timeout" | exception
    d.accept, d.level, d.reason, d.source ("local"|"remote"|"cache"|"fallback")

`ask(request)` is a coroutine (the policy server client) returning a Decision, a dict
{"accept": bool, "level": int|name, "lifetime": s, "reason": str} or a bool. Its answer
wins and is cached for its lifetime (capped at cache_lifetime). When it raises or times
out, the local answer applies and is cached for fallback_lifetime, so an unreachable
server costs one timeout per peer per fallback_lifetime, not one per proposal.
"""

from pnpipsec import CLEAR, ENCRYPTED, AUTHORIZED, LEVEL_NAMES
from pnpipsec.ticks import add, diff, ms

BYPASS = "bypass"
OPPORTUNISTIC = "opportunistic"
REQUIRE = "require"
KINDS = (BYPASS, OPPORTUNISTIC, REQUIRE)

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_FIELDS = ("peer", "port", "local_port", "remote_port", "action", "level", "name")


def level_value(v, field="level"):
    """A level from an int (0..3) or a name ("encrypted", "AUTHENTICATED", ...)."""
    if isinstance(v, bool):
        raise ValueError("%s: not a level: %r" % (field, v))
    if isinstance(v, int):
        if CLEAR <= v <= AUTHORIZED:
            return v
        raise ValueError("%s: level %d out of range 0..3" % (field, v))
    if isinstance(v, str):
        u = v.strip().upper()
        for i in range(len(LEVEL_NAMES)):
            if LEVEL_NAMES[i] == u:
                return i
    raise ValueError("%s: unknown level %r (clear|encrypted|authenticated|authorized)"
                     % (field, v))


class Action:
    """What the SPD says: kind BYPASS / OPPORTUNISTIC / REQUIRE, and the minimum level.

    level is CLEAR for BYPASS and OPPORTUNISTIC, ENCRYPTED..AUTHORIZED for REQUIRE.
    """

    def __init__(self, kind, level=None, name=None):
        if kind not in KINDS:
            raise ValueError("action: unknown action %r (bypass|opportunistic|require)" % (kind,))
        if kind == REQUIRE:
            level = ENCRYPTED if level is None else level
            if level < ENCRYPTED or level > AUTHORIZED:
                raise ValueError("level: require needs encrypted, authenticated or authorized")
        elif level not in (None, CLEAR):
            raise ValueError("level: only 'require' takes a level")
        else:
            level = CLEAR
        self.kind = kind
        self.level = level
        self.name = name

    def allows_clear(self):
        """May a datagram under this action travel in the clear (while there is no SA)?"""
        return self.kind != REQUIRE

    def rank(self):
        # BYPASS 0 < OPPORTUNISTIC 1 < REQUIRE encrypted 2 < ... < REQUIRE authorized 4
        if self.kind == BYPASS:
            return 0
        if self.kind == OPPORTUNISTIC:
            return 1
        return 1 + self.level

    def with_min(self, min_level):
        """This action tightened by an app's per-send / per-endpoint minimum level.

        The app's demand wins over BYPASS too: asking for a level means never clear.
        """
        if not min_level or min_level <= CLEAR:
            return self
        if self.kind == REQUIRE and self.level >= min_level:
            return self
        return Action(REQUIRE, min_level, self.name)

    def __repr__(self):
        if self.kind == REQUIRE:
            return "Action(require %s)" % LEVEL_NAMES[self.level].lower()
        return "Action(%s)" % self.kind


DEFAULT_ACTION = Action(OPPORTUNISTIC, name="default")


def norm_fingerprint(text):
    """"abcd-efgh-..." -> "ABCDEFGH..." (16 base32 characters), ValueError otherwise."""
    s = text.replace("-", "").replace(" ", "").upper()
    if len(s) != 16:
        raise ValueError("peer: fingerprint must have 16 base32 characters, got %d" % len(s))
    for ch in s:
        if _B32.find(ch) < 0:
            raise ValueError("peer: fingerprint has a non-base32 character %r" % ch)
    return s


def _port(v, field):
    if v is None or v == "any":
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > 65535:
        raise ValueError("%s: port must be 0..65535 or \"any\", got %r" % (field, v))
    return v


class Entry:
    """One SPD line. peer: None (any), (prefix_bytes, plen) or a fingerprint string."""

    def __init__(self, action, prefix=None, plen=None, fingerprint=None,
                 port=None, local_port=None, remote_port=None, name=None):
        self.action = action
        self.prefix = prefix
        self.plen = plen
        self.fingerprint = norm_fingerprint(fingerprint) if fingerprint else None
        self.port = port
        self.local_port = local_port
        self.remote_port = remote_port
        self.name = name
        if prefix is not None:
            if len(prefix) not in (4, 16):
                raise ValueError("peer: address must be 4 or 16 bytes")
            if plen is None:
                plen = len(prefix) * 8
            if plen < 0 or plen > len(prefix) * 8:
                raise ValueError("peer: prefix length %d out of range" % plen)
            self.plen = plen
            self._nb = plen >> 3
            rem = plen & 7
            self._mask = (0xFF << (8 - rem)) & 0xFF if rem else 0
            self._head = prefix[:self._nb]
            if self._mask and prefix[self._nb] & (~self._mask & 0xFF):
                raise ValueError("peer: host bits set after /%d" % plen)
            for i in range(self._nb + (1 if self._mask else 0), len(prefix)):
                if prefix[i]:
                    raise ValueError("peer: host bits set after /%d" % plen)
        self.port_specific = port is not None or local_port is not None or remote_port is not None

    def matches_peer(self, addr, fp):
        if self.fingerprint is not None:
            return fp is not None and norm_fp_fast(fp) == self.fingerprint
        p = self.prefix
        if p is None:
            return True
        if addr is None or len(addr) != len(p):
            return False
        nb = self._nb
        if addr[:nb] != self._head:
            return False
        return not self._mask or (addr[nb] & self._mask) == p[nb]

    def matches_ports(self, lport, rport):
        if self.port is not None and lport != self.port and rport != self.port:
            return False
        if self.local_port is not None and lport != self.local_port:
            return False
        if self.remote_port is not None and rport != self.remote_port:
            return False
        return True


def norm_fp_fast(fp):
    # fingerprints handed in by the runtime come from identity.fingerprint (grouped)
    if len(fp) == 16:
        return fp.upper()
    return fp.replace("-", "").upper()


def _parse_peer(v):
    """-> (prefix, plen, fingerprint)"""
    if not isinstance(v, str):
        raise ValueError("peer: expected a string, got %r" % (v,))
    v = v.strip()
    if v == "any":
        return None, None, None
    if v[:3].lower() == "fp:":
        return None, None, norm_fingerprint(v[3:])
    from pnpipsec import inet
    plen = None
    text = v
    slash = v.find("/")
    if slash >= 0:
        text = v[:slash]
        try:
            plen = int(v[slash + 1:])
        except ValueError:
            raise ValueError("peer: bad prefix length in %r" % v)
    try:
        addr = inet.pton(text)
    except ValueError:
        raise ValueError("peer: not an address, prefix, fingerprint or \"any\": %r" % v)
    if plen is not None and (plen < 0 or plen > len(addr) * 8):
        raise ValueError("peer: prefix length /%d out of range in %r" % (plen, v))
    return addr, plen, None


def parse_action(d):
    """Action from a dict's "action" and "level" fields."""
    kind = d.get("action")
    if kind is None:
        raise ValueError("action: missing (bypass|opportunistic|require)")
    if not isinstance(kind, str) or kind.lower() not in KINDS:
        raise ValueError("action: unknown action %r (bypass|opportunistic|require)" % (kind,))
    kind = kind.lower()
    lv = d.get("level")
    if lv is not None:
        lv = level_value(lv)
        if kind != REQUIRE:
            raise ValueError("level: only 'require' takes a level")
        if lv == CLEAR:
            raise ValueError("level: require needs encrypted, authenticated or authorized")
    return Action(kind, lv, d.get("name"))


def parse_entry(d):
    """Entry from a plain dict (see module doc); ValueError names the bad field."""
    if not isinstance(d, dict):
        raise ValueError("entry: expected a table/dict, got %r" % (d,))
    for k in d:
        if k not in _FIELDS:
            raise ValueError("%s: unknown field (known: %s)" % (k, ", ".join(_FIELDS)))
    if "peer" not in d:
        raise ValueError("peer: missing (an address, a prefix, fp:FINGERPRINT or \"any\")")
    prefix, plen, fp = _parse_peer(d["peer"])
    if "port" in d and ("local_port" in d or "remote_port" in d):
        raise ValueError("port: use either port or local_port/remote_port")
    port = _port(d.get("port"), "port")
    lport = _port(d.get("local_port"), "local_port")
    rport = _port(d.get("remote_port"), "remote_port")
    name = d.get("name")
    if name is not None and not isinstance(name, str):
        raise ValueError("name: expected a string")
    return Entry(parse_action(d), prefix, plen, fp, port, lport, rport, name)


class Spd:
    def __init__(self, entries=(), default=None):
        self.entries = list(entries)
        self.default = default if default is not None else DEFAULT_ACTION

    @classmethod
    def from_dicts(cls, items, default=None):
        """items: list of entry dicts; default: None (OPPORTUNISTIC), an Action, a kind
        string or a dict {"action": ..., "level": ...}."""
        entries = []
        for i in range(len(items)):
            try:
                entries.append(parse_entry(items[i]))
            except ValueError as e:
                raise ValueError("spd[%d].%s" % (i, e.args[0] if e.args else e))
        if isinstance(default, str):
            default = {"action": default}
        if isinstance(default, dict):
            try:
                default = parse_action(default)
            except ValueError as e:
                raise ValueError("default.%s" % (e.args[0] if e.args else e))
        return cls(entries, default)

    def add(self, entry, index=None):
        """Insert an entry (a dict or an Entry); index None appends before the default."""
        if isinstance(entry, dict):
            entry = parse_entry(entry)
        if index is None:
            self.entries.append(entry)
        else:
            self.entries.insert(index, entry)
        return entry

    def match(self, peer_addr, fingerprint=None, local_port=None, remote_port=None):
        """The Action of the first entry matching this datagram, else the default."""
        for e in self.entries:
            if e.port_specific:
                if (local_port is None and remote_port is None) or \
                        not e.matches_ports(local_port, remote_port):
                    continue
            if e.matches_peer(peer_addr, fingerprint):
                return e.action
        return self.default

    def sa_action(self, peer_addr, fingerprint=None):
        """The strongest action any datagram with this peer could get (see module doc)."""
        best = None
        for e in self.entries:
            if not e.matches_peer(peer_addr, fingerprint):
                continue
            if best is None or e.action.rank() > best.rank():
                best = e.action
            if not e.port_specific:
                return best
        d = self.default
        if best is None or d.rank() > best.rank():
            best = d
        return best


# ---------------------------------------------------------------- decision point

IN = "in"
OUT = "out"


class Request:
    """An SA proposal to decide on. peer_addr packed bytes; peer_id as the engine has it
    (None before IKE_AUTH); auth_method "null"|"psk"|"pubkey"|None; fingerprint of the
    peer's key or None; direction IN (peer proposes) or OUT (we are about to initiate)."""

    def __init__(self, peer_addr, peer_id=None, auth_method=None, fingerprint=None,
                 direction=IN):
        self.peer_addr = peer_addr
        self.peer_id = peer_id
        self.auth_method = auth_method
        self.fingerprint = fingerprint
        self.direction = direction

    def key(self):
        return (self.peer_addr, self.peer_id, self.auth_method, self.fingerprint, self.direction)


class Decision:
    """accept: bool; level: the highest level this decision vouches for (the local SPD
    vouches for nothing beyond what the SA proves: None; a policy server may say
    AUTHORIZED); min_level: what the policy requires of this peer (CLEAR if nothing);
    reason: text; source: "local" | "remote" | "cache" | "fallback"; lifetime: seconds."""

    def __init__(self, accept, level=None, reason="", source="local", lifetime=None,
                 min_level=CLEAR):
        self.accept = accept
        self.level = level
        self.reason = reason
        self.source = source
        self.lifetime = lifetime
        self.min_level = min_level

    def _as(self, source):
        return Decision(self.accept, self.level, self.reason, source, self.lifetime, self.min_level)

    def __repr__(self):
        return "Decision(%s %s %s)" % ("accept" if self.accept else "reject", self.source, self.reason)


def _from_remote(ans):
    if isinstance(ans, Decision):
        return ans._as("remote")
    if isinstance(ans, bool):
        return Decision(ans, None, "server", "remote")
    if isinstance(ans, dict):
        if "accept" not in ans:
            raise ValueError("accept: missing in policy server answer")
        lv = ans.get("level")
        if lv is not None:
            lv = level_value(lv)
        life = ans.get("lifetime")
        return Decision(bool(ans["accept"]), lv, ans.get("reason", "server"), "remote", life)
    raise ValueError("policy server answer: expected a dict, bool or Decision")


class DecisionPoint:
    def __init__(self, spd=None, ask=None, timeout=2, cache_lifetime=60,
                 fallback_lifetime=10, cache_max=32):
        self.spd = spd if spd is not None else Spd()
        self.ask = ask
        self.timeout = timeout          # s, for asyncio.wait_for
        # kept as integer ms; `now` is an integer ms tick (pnpipsec.ticks)
        self.cache_lifetime = ms(cache_lifetime)
        self.fallback_lifetime = ms(fallback_lifetime)
        self.cache_max = cache_max
        self._cache = {}    # request key -> (expires, Decision)
        self.counters = {"local": 0, "remote": 0, "remote_timeout": 0, "remote_error": 0,
                         "cache_hit": 0, "accept": 0, "reject": 0}

    def decide_local(self, request):
        """The SPD's answer (sync). Counts the decision."""
        d = self._local(request)
        self.counters["local"] += 1
        return self._count(d)

    def _local(self, request):
        act = self.spd.sa_action(request.peer_addr, request.fingerprint)
        mn = act.level if act.kind == REQUIRE else CLEAR
        if act.kind == BYPASS:
            return Decision(False, None, "policy bypass: clear only", "local", None, mn)
        return Decision(True, None, "policy %s" % act.kind, "local", None, mn)

    def _count(self, d):
        self.counters["accept" if d.accept else "reject"] += 1
        return d

    def cached(self, request, now):
        """A fresh cached answer (source "cache") or None."""
        k = request.key()
        hit = self._cache.get(k)
        if hit is None:
            return None
        if diff(now, hit[0]) >= 0:
            del self._cache[k]
            return None
        return hit[1]

    def tick(self, now):
        """Drop expired answers: an entry left for days would look fresh again once the
        ticks wrap (answers live at most cache_lifetime, far below half the wrap)."""
        c = self._cache
        for k in list(c.keys()):
            if diff(now, c[k][0]) >= 0:
                del c[k]

    def decide_now(self, request, now):
        """Sync path for code that cannot wait: a fresh cached answer, else the local one."""
        hit = self.cached(request, now)
        if hit is not None:
            self.counters["cache_hit"] += 1
            return self._count(hit._as("cache"))
        return self.decide_local(request)

    def begin(self, request, now):
        """Sync first half of decide(): a Decision when no server needs asking (no `ask`
        set: local; a fresh cache entry: "cache"), else None -- then ask the server and
        hand its answer (or failure) to finish()."""
        if self.ask is None:
            return self.decide_local(request)
        hit = self.cached(request, now)
        if hit is not None:
            self.counters["cache_hit"] += 1
            return self._count(hit._as("cache"))
        return None

    def finish(self, request, now, answer=None, error=None):
        """Sync second half: error None with the server's answer, or error "timeout" /
        an exception -> the local answer ("fallback"). Caches and counts."""
        d = None
        if error is None:
            try:
                d = _from_remote(answer)
            except ValueError:
                error = "garbage"
        if d is None:
            self.counters["remote_timeout" if error == "timeout" else "remote_error"] += 1
            d = self._local(request)._as("fallback")
            self._store(request, now, self.fallback_lifetime, d)
            return self._count(d)
        self.counters["remote"] += 1
        life = self.cache_lifetime
        if d.lifetime is not None and d.lifetime * 1000 < life:
            life = int(d.lifetime * 1000)
        if d.min_level == CLEAR:
            # the server decides acceptance; the local SPD still sets the floor
            d.min_level = self._local(request).min_level
        self._store(request, now, life, d)
        return self._count(d)

    async def decide(self, request, now):
        """Ask the policy server (if any) with timeout and cache; fall back to local."""
        d = self.begin(request, now)
        if d is not None:
            return d
        import asyncio
        try:
            ans = await asyncio.wait_for(self.ask(request), self.timeout)
        except asyncio.TimeoutError:
            return self.finish(request, now, None, "timeout")
        except Exception as e:
            return self.finish(request, now, None, e)
        return self.finish(request, now, ans)

    def _store(self, request, now, life, d):
        if life is None or life <= 0 or self.cache_max <= 0:
            return
        c = self._cache
        if len(c) >= self.cache_max:
            # drop expired entries, then the one closest to expiry
            self.tick(now)
            if len(c) >= self.cache_max:
                victim = None
                for k in c:
                    if victim is None or diff(c[k][0], c[victim][0]) < 0:
                        victim = k
                del c[victim]
        c[request.key()] = (add(now, life), d)

    def flush(self):
        """Forget every cached answer (e.g. when the policy server pushes a change)."""
        self._cache = {}

    def engine_policy(self, config_for, now_fn):
        """Adapter for ike.Engine(policy=...): policy(peer_addr, peer_id, auth_method)
        -> PeerConfig, None or PENDING. config_for(request, decision) -> PeerConfig or
        None picks the config when accepted. Without `ask` (and for IKE_SA_INIT, which
        has no identity yet) the sync path answers (cache, else local). With `ask`,
        IKE_AUTH and new CHILD SAs get begin(): a fresh cached answer, else PENDING --
        the engine holds the SA and emits DecisionPending; the runtime then asks
        (decide_held) and hands the answer to engine.decided()."""
        from pnpipsec.ike.sa import PENDING

        def policy(peer_addr, peer_id, auth_method):
            req = engine_request(peer_addr, peer_id, auth_method)
            if self.ask is None or auth_method is None:
                d = self.decide_now(req, now_fn())
            else:
                d = self.begin(req, now_fn())
                if d is None:
                    return PENDING
            return config_for(req, d) if d.accept else None
        return policy

    def engine_fallback(self, config_for, now_fn):
        """Adapter for ike.Engine(fallback=...): the answer for a held SA whose decision
        did not come within the engine's decision_timeout -- the local SPD's, counted
        and cached as a timed-out remote decision ("fallback")."""
        def fallback(peer_addr, peer_id, auth_method):
            req = engine_request(peer_addr, peer_id, auth_method)
            d = self.finish(req, now_fn(), None, "timeout")
            return config_for(req, d) if d.accept else None
        return fallback

    async def decide_held(self, request, now_fn, within_ms, still_held):
        """Ask the server for a request the engine holds (after PENDING), for at most
        within_ms ms: the Decision, or None when the engine stopped waiting meanwhile
        (its deadline fell back; a late real answer is still cached for next time)."""
        import asyncio
        ans, err = None, None
        try:
            f = getattr(asyncio, "wait_for_ms", None)    # MicroPython: no float
            aw = self.ask(request)
            ans = await (f(aw, within_ms) if f is not None
                         else asyncio.wait_for(aw, within_ms / 1000))
        except asyncio.TimeoutError:
            err = "timeout"
        except Exception as e:
            err = e
        if not still_held():
            if err is None:
                self.finish(request, now_fn(), ans)     # too late for this SA: cache it
            return None
        return self.finish(request, now_fn(), ans, err)


def engine_request(peer_addr, peer_id, auth_method):
    """The Request for the engine's policy question about peer_addr (host text or
    packed bytes, port)."""
    from pnpipsec import inet
    host = peer_addr[0]
    addr = host if isinstance(host, bytes) else inet.pton(host)
    return Request(addr, peer_id, auth_method, None, IN)
