"""Stable and temporary IPv6 interface identifiers, for boards that let the app choose
its address (README "Privacy and stable addresses" says which do).

RFC 7217 stable, semantically opaque IIDs:
    RID = F(Prefix, Net_Iface, Network_ID, DAD_Counter, secret_key), F = SHA-256,
    IID = the first 64 bits of RID.
  stable_iid(prefix8, net_iface, secret) gives the same IID for the same prefix and
  interface every time (so a server's address, and every pin a peer keeps for it, stays),
  a different, unlinkable one on another prefix; DAD_Counter goes up after a DAD failure
  (RFC 7217 section 6) and past any reserved IID (RFC 5453, RFC 7217 section 5).
  load_secret(storage, rand) keeps the 128-bit secret_key in the board's storage.

RFC 8981 temporary addresses: random IIDs with short lifetimes, rotated.
  TemporaryAddresses(prefix8, rand) makes one, regenerates REGEN_ADVANCE seconds before
  it is deprecated, deprecates after its preferred lifetime (TEMP_PREFERRED_LIFETIME
  minus a random DESYNC_FACTOR, never beyond the prefix's) and drops it after its valid
  lifetime; tick(now_s) returns the address events of pnpboard.net ("added",
  "deprecated", "removed", flags ("temporary",)). Old ones stay valid while the node's
  SAs still use them; the node is given the new one first for new exchanges.

Plain MicroPython: hashlib.sha256 (or uhashlib), no time or randomness of its own
(`now` in seconds and `rand(n) -> bytes` come from the board).
"""

try:
    import hashlib
except ImportError:  # pragma: no cover
    import uhashlib as hashlib

from pnpipsec import inet

SECRET_FILE = "addrkey"
SECRET_LEN = 16            # RFC 7217 section 5: at least 128 bits

# RFC 8981 section 3.8 defaults (seconds)
TEMP_VALID_LIFETIME = 2 * 86400
TEMP_PREFERRED_LIFETIME = 86400
REGEN_ADVANCE = 5          # 2 + TEMP_IDGEN_RETRIES (3) * DupAddrDetectTransmits (1) * RetransTimer (1 s)
MAX_DESYNC_FRACTION = 0.4  # MAX_DESYNC_FACTOR = 0.4 * TEMP_PREFERRED_LIFETIME
TEMP_IDGEN_RETRIES = 3


def is_reserved_iid(iid):
    """True for the reserved IIDs of RFC 5453 (8 bytes): the Subnet-Router anycast IID
    (all zeros), the reserved subnet anycast IIDs FDFF:FFFF:FFFF:FF80-FFFF (RFC 2526)
    and 0200:5EFF:FE00:0000-0200:5EFF:FEFF:FFFF (the IANA Ethernet block: proxy MIPv6's
    0200:5EFF:FE00:5213 and the rest of the range)."""
    if len(iid) != 8:
        raise ValueError("an IID is 8 bytes")
    if iid == bytes(8):
        return True
    if iid[:7] == b"\xfd\xff\xff\xff\xff\xff\xff" and iid[7] >= 0x80:
        return True
    if iid[:5] == b"\x02\x00\x5e\xff\xfe":
        return True
    return False


def _bytes(x):
    if isinstance(x, str):
        return x.encode()
    if isinstance(x, int):
        return x.to_bytes(4, "big")
    return bytes(x)


def _prefix8(prefix):
    """The 8 bytes of a /64 prefix given as bytes or text ("2001:db8:1:2::" or
    "2001:db8:1:2::/64")."""
    if isinstance(prefix, str):
        text = prefix.split("/")[0]
        if "/" in prefix and prefix.split("/")[1] != "64":
            raise ValueError("SLAAC needs a /64 prefix, not /%s" % prefix.split("/")[1])
        prefix = inet.pton(text)
    prefix = bytes(prefix)
    if len(prefix) == 16:
        prefix = prefix[:8]
    if len(prefix) != 8:
        raise ValueError("a /64 prefix is 8 bytes")
    return prefix


def _rid(prefix8, net_iface, network_id, dad_counter, secret):
    h = hashlib.sha256()
    # each field with its length, so that no two different inputs run together
    for part in (prefix8, _bytes(net_iface), _bytes(network_id or b""), dad_counter.to_bytes(4, "big"),
                 _bytes(secret)):
        h.update(len(part).to_bytes(2, "big"))
        h.update(part)
    return h.digest()


def stable_iid(prefix, net_iface, secret, network_id=b"", dad_counter=0):
    """(iid8, dad_counter): the RFC 7217 IID for this prefix and interface; the counter
    actually used (raised past reserved IIDs)."""
    if len(_bytes(secret)) < SECRET_LEN:
        raise ValueError("the secret key needs at least 128 bits")
    p = _prefix8(prefix)
    while True:
        iid = _rid(p, net_iface, network_id, dad_counter, secret)[:8]
        if not is_reserved_iid(iid):
            return iid, dad_counter
        dad_counter += 1


def address(prefix, iid):
    """Text of prefix (/64) + iid."""
    return inet.ntop(_prefix8(prefix) + bytes(iid))


def stable_address(prefix, net_iface, secret, network_id=b"", dad_counter=0):
    """(address_text, dad_counter) of the RFC 7217 stable address on `prefix`. After a
    DAD failure call again with dad_counter + 1 (RFC 7217 section 6: at most
    IDGEN_RETRIES = 3 times, then give up and say so)."""
    iid, n = stable_iid(prefix, net_iface, secret, network_id, dad_counter)
    return address(prefix, iid), n


def load_secret(storage, rand):
    """The board's RFC 7217 secret_key: read from storage, made (rand(16)) and kept on
    first use. Keep it as private as the identity: it links the stable addresses."""
    k = storage.read(SECRET_FILE)
    if k is not None and len(k) >= SECRET_LEN:
        return bytes(k)
    k = rand(SECRET_LEN)
    storage.write(SECRET_FILE, k)
    return k


def temporary_iid(rand, avoid=()):
    """A random IID (RFC 8981 section 3.3.1): 64 random bits, never a reserved IID nor
    one in `avoid` (the interface's other IIDs)."""
    while True:
        iid = bytes(rand(8))
        if not is_reserved_iid(iid) and iid not in avoid:
            return iid


class _Temp:
    def __init__(self, addr, iid, created, preferred_until, valid_until):
        self.addr = addr
        self.iid = iid
        self.created = created
        self.preferred_until = preferred_until
        self.valid_until = valid_until
        self.state = "preferred"
        self.successor = False


class TemporaryAddresses:
    """RFC 8981 temporary addresses on one /64 prefix; times in integer seconds from the
    board's monotonic clock (the board's clock.now(), never wall-clock time).

        t = TemporaryAddresses("2001:db8:1:2::/64", board.rand, now)
        events = t.tick(now)     # call every few seconds: address events to report
        t.current()              # the temporary address to offer for new exchanges
        t.prefix(now, preferred, valid)   # each router advertisement of the prefix
    """

    def __init__(self, prefix, rand, now, preferred=TEMP_PREFERRED_LIFETIME,
                 valid=TEMP_VALID_LIFETIME, regen_advance=REGEN_ADVANCE, avoid=(),
                 prefix_preferred=None, prefix_valid=None, zone=None):
        if preferred <= regen_advance:
            raise ValueError("TEMP_PREFERRED_LIFETIME must exceed REGEN_ADVANCE (RFC 8981 3.8)")
        self.p = _prefix8(prefix)
        self.rand = rand
        self.temp_preferred = preferred
        self.temp_valid = valid
        self.regen_advance = regen_advance
        self.avoid = list(avoid)
        self.zone = zone
        self.prefix_preferred_until = None if prefix_preferred is None else now + prefix_preferred
        self.prefix_valid_until = None if prefix_valid is None else now + prefix_valid
        self.addrs = []
        self.pending = []
        self._make(now)

    def _desync(self):
        top = int(self.temp_preferred * MAX_DESYNC_FRACTION)
        # never so large that the address is deprecated before its successor is made
        top = min(top, self.temp_preferred - self.regen_advance - 1)
        if top <= 0:
            return 0
        return int.from_bytes(self.rand(4), "big") % (top + 1)

    def _make(self, now):
        if self.prefix_preferred_until is not None and self.prefix_preferred_until - now <= self.regen_advance:
            return None        # RFC 8981 3.4: no new temporary address on a dying prefix
        iid = temporary_iid(self.rand, self.avoid + [a.iid for a in self.addrs])
        pref_until = now + self.temp_preferred - self._desync()
        valid_until = now + self.temp_valid
        if self.prefix_preferred_until is not None:
            pref_until = min(pref_until, self.prefix_preferred_until)
        if self.prefix_valid_until is not None:
            valid_until = min(valid_until, self.prefix_valid_until)
        t = _Temp(address(self.p, iid), iid, now, pref_until, valid_until)
        self.addrs.append(t)
        self.pending.append(self._ev("added", t, now))
        return t

    def _ev(self, kind, t, now):
        if kind == "removed":
            return (kind, t.addr, self.zone, 0, 0, ("temporary",))
        return (kind, t.addr, self.zone, max(0, t.preferred_until - now), max(0, t.valid_until - now),
                ("temporary",))

    def prefix(self, now, preferred, valid):
        """A router advertisement for this prefix: the temporaries never outlive it
        (RFC 8981 3.4); preferred 0 deprecates them all at the next tick."""
        self.prefix_preferred_until = now + preferred
        self.prefix_valid_until = now + valid
        for t in self.addrs:
            t.preferred_until = min(t.preferred_until, self.prefix_preferred_until)
            t.valid_until = min(t.valid_until, self.prefix_valid_until)

    def tick(self, now):
        """Advance to `now`: make the successor REGEN_ADVANCE before the newest
        temporary is deprecated, deprecate and remove by lifetime. Returns events."""
        newest = self.current_entry()
        if newest is not None and not newest.successor and newest.preferred_until - now <= self.regen_advance:
            newest.successor = True
            self._make(now)
        for t in list(self.addrs):
            if now >= t.valid_until:
                self.addrs.remove(t)
                self.pending.append(self._ev("removed", t, now))
            elif now >= t.preferred_until and t.state == "preferred":
                t.state = "deprecated"
                self.pending.append(self._ev("deprecated", t, now))
        if self.current_entry() is None and (self.prefix_preferred_until is None
                                             or self.prefix_preferred_until - now > self.regen_advance):
            self._make(now)
        out, self.pending = self.pending, []
        return out

    def current_entry(self):
        best = None
        for t in self.addrs:
            if t.state == "preferred" and (best is None or t.created >= best.created):
                best = t
        return best

    def current(self):
        t = self.current_entry()
        return t.addr if t is not None else None

    def entries(self, now):
        """[(address, state, preferred_s, valid_s, zone, ("temporary",))] as the boards'
        addresses() list them (newest first)."""
        out = []
        for t in sorted(self.addrs, key=lambda x: -x.created):
            out.append((t.addr, t.state, max(0, t.preferred_until - now), max(0, t.valid_until - now),
                        self.zone, ("temporary",)))
        return out
