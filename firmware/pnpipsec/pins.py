"""Peer key pins: trust on first use, changed keys reported, approval from the API.

    pins = PinStore(storage, name="pins", limit=64)    # raises PinError on a corrupt file
    pins.observe(peer_id, pubkey, now) -> "new-pinned" | "match" | "changed" | "full"
    pins.is_trusted(peer_id, pubkey) -> bool      # may this key reach AUTHENTICATED?
    pins.approve(peer_id, pubkey)                  # user/API: this is the right key
    pins.forget(peer_id) -> bool
    pins.get(peer_id) -> (pubkey, state, pending_key_or_None) or None
    pins.state(peer_id) -> "tofu" | "approved" | "changed" | None
    pins.key_state(pubkey) -> "approved" | "tofu" | None   # the key's standing at any peer_id
    pins.changes() -> list of (peer_id, pinned_key, seen_key)   # what to report
    pins.counters

`now` is accepted for the runtime's convenience and not stored (monotonic time means
nothing after a reboot). peer_id: bytes (1..64), e.g. the IKE ID data or a key fingerprint; a str is encoded as
UTF-8. pubkey: 32 bytes (Ed25519).

States: "tofu" -- pinned automatically the first time this peer_id was seen;
"approved" -- set by approve(); "changed" -- the pin (tofu or approved) stays, but a
different key was seen for this peer_id: that key is kept as `pending`, reported, and
is NOT trusted (the peer stays below AUTHENTICATED) until approve(peer_id, new_key).
Seeing the pinned key again is still a "match" (the report stays until approve/forget).

Limit: at most `limit` pins. A new peer_id seen when the store is full gets "full": it
is not pinned and not trusted (so it stays at ENCRYPTED), and NOTHING is evicted --
evicting would let anyone who can present many identities push a real pin out and
then impersonate that peer. approve() of a new peer_id when full raises PinError;
forget() makes room.

File (text, written atomically by the board's storage on every change, never on a
plain "match"):
    pnpipsec pins v1
    <peer_id hex> <key hex> <t|a> [<pending key hex>]      one line per pin
    check <first 8 bytes of SHA-256 over all lines above, hex>
A file that does not parse or whose check fails raises PinError (with .path, the file,
and .problem: "truncated", "checksum ...", ...) and is left as it is: the store refuses
to start rather than forget who it trusted.

Several writers (the host: a running node and `pnp pins` on the same file). When the
storage offers stamp(name) (something that changes whenever the file is replaced) the
store re-reads the file before every decision that a change there would alter, and
every change is a merge: under the storage's lock(name)/unlock(token) when it has them,
re-read, apply this one change, write. So neither writer ever writes back a stale copy
over the other's change. A storage without stamp() (a board: one writer) is read once.
"""

import binascii
import hashlib

FILE = "pins"
_MAGIC = b"pnpipsec pins v1"
KEY_LEN = 32
ID_MAX = 64

NEW = "new-pinned"
MATCH = "match"
CHANGED = "changed"
FULL = "full"

TOFU = "tofu"
APPROVED = "approved"
STATE_CHANGED = "changed"


class PinError(Exception):
    """The pin store cannot be used (or an operation on it is refused).

    .problem: what is wrong (one line); .path: the stored file it is about (the
    storage's path(name) when it has one, else the name), or None when the error is not
    about the file (e.g. the store is full). str(e) is "<path>: <problem>" or the problem."""

    def __init__(self, problem, path=None):
        super().__init__(problem if path is None else "%s: %s" % (path, problem))
        self.problem = problem
        self.path = path


# The longest pin line: id hex, key hex, state, pending key hex, separators, newline.
_LINE_MAX = 2 * ID_MAX + 1 + 2 * KEY_LEN + 2 + 1 + 2 * KEY_LEN + 1
_CHECK_LEN = 16


def _check(body):
    return binascii.hexlify(hashlib.sha256(body).digest()[:8])


def _id(peer_id):
    if isinstance(peer_id, str):
        peer_id = peer_id.encode()
    if not isinstance(peer_id, (bytes, bytearray)) or not 0 < len(peer_id) <= ID_MAX:
        raise ValueError("peer_id: 1..%d bytes" % ID_MAX)
    return bytes(peer_id)


def _key(pubkey):
    if not isinstance(pubkey, (bytes, bytearray)) or len(pubkey) != KEY_LEN:
        raise ValueError("pubkey: %d bytes" % KEY_LEN)
    return bytes(pubkey)


def encode(pins):
    """pins: dict peer_id -> [key, approved(bool), pending or None] -> file bytes."""
    lines = [_MAGIC]
    for pid in sorted(pins.keys()):
        key, approved, pending = pins[pid]
        line = binascii.hexlify(pid) + b" " + binascii.hexlify(key) + (b" a" if approved else b" t")
        if pending is not None:
            line += b" " + binascii.hexlify(pending)
        lines.append(line)
    body = b"\n".join(lines) + b"\n"
    return body + b"check " + _check(body) + b"\n"


def max_size(limit):
    """The largest file a store of `limit` pins can be."""
    return len(_MAGIC) + 1 + limit * _LINE_MAX + 6 + _CHECK_LEN + 1


def decode(blob, limit=None):
    """File bytes -> dict (see encode); PinError naming the problem: empty, truncated,
    unknown format, unsupported version, too large, checksum, a bad line, over the limit."""
    n = len(blob)
    if n == 0:
        raise PinError("empty (0 bytes)")
    head = _MAGIC + b"\n"
    if not blob.startswith(head):
        if n < len(head) and head.startswith(blob):
            raise PinError("truncated (%d bytes, inside the first line)" % n)
        if blob.startswith(b"pnpipsec pins v"):
            raise PinError("unsupported version (first line %r; this build reads %r)"
                           % (blob.split(b"\n")[0][:40], _MAGIC))
        raise PinError("unknown format: not a pnpipsec pin store (starts with %r)" % blob[:20])
    if limit is not None and n > max_size(limit):
        raise PinError("too large (%d bytes; %d pins take at most %d)" % (n, limit, max_size(limit)))
    at = blob.rfind(b"\ncheck ") + 1
    if at <= 0:
        if blob.endswith(b"\n"):
            raise PinError("corrupt: no check line at the end")
        raise PinError("truncated (%d bytes; the check line is missing)" % n)
    body = blob[:at]
    value = blob[at + 6:]
    want = _check(body)
    if value != want + b"\n" and value != want:
        if not value.endswith(b"\n") and len(value) < len(want) and want.startswith(value):
            raise PinError("truncated (%d bytes; the check line is cut short)" % n)
        raise PinError("corrupt: checksum does not match the contents")
    pins = {}
    lines = body.split(b"\n")
    for n in range(1, len(lines)):
        line = lines[n]
        if not line:
            continue
        f = line.split(b" ")
        try:
            if len(f) not in (3, 4) or f[2] not in (b"t", b"a"):
                raise ValueError
            pid = binascii.unhexlify(f[0])
            key = binascii.unhexlify(f[1])
            pending = binascii.unhexlify(f[3]) if len(f) == 4 else None
        except ValueError:
            raise PinError("corrupt: line %d does not parse" % (n + 1))
        if not 0 < len(pid) <= ID_MAX or len(key) != KEY_LEN or \
                (pending is not None and len(pending) != KEY_LEN):
            raise PinError("corrupt: line %d has bad lengths" % (n + 1))
        if pid in pins:
            raise PinError("corrupt: line %d repeats a peer id" % (n + 1))
        pins[pid] = [key, f[2] == b"a", pending]
    if limit is not None and len(pins) > limit:
        raise PinError("%d pins, more than the limit %d" % (len(pins), limit))
    return pins


def _where(storage, name):
    """The storage's own name for a stored file (a path on boards with files)."""
    try:
        return storage.path(name)
    except Exception:   # a storage without path(): RAM, tests
        return name


class PinStore:
    def __init__(self, storage, name=FILE, limit=64):
        self.storage = storage
        self.name = name
        self.limit = limit
        self._stamp = None
        self._pins = self._load()
        self.counters = {"new": 0, "match": 0, "changed": 0, "full": 0, "approved": 0,
                         "forgotten": 0, "writes": 0, "evicted": 0}
        self._used = {}     # peer id -> when last seen (RAM only: a counter, no clock)
        self._tick = 0

    def __len__(self):
        self._sync()
        return len(self._pins)

    def _load(self):
        """The pins in the file (its stamp first: a write after it is seen next time)."""
        st = getattr(self.storage, "stamp", None)
        self._stamp = st(self.name) if st is not None else None
        blob = self.storage.read(self.name)
        try:
            return {} if blob is None else decode(blob, self.limit)
        except PinError as e:
            raise PinError(e.problem, _where(self.storage, self.name))

    def _sync(self, strict=False):
        """Re-read the file when another writer replaced it. A file that became unusable
        raises PinError when strict (before a write: never write over it), else the
        pins known so far stay in force."""
        st = getattr(self.storage, "stamp", None)
        if st is None or st(self.name) == self._stamp:
            return
        try:
            self._pins = self._load()
        except PinError:
            if strict:
                raise

    def _begin(self):
        """Start a change: take the storage's lock (if any), then the latest pins."""
        lock = getattr(self.storage, "lock", None)
        token = lock(self.name) if lock is not None else None
        try:
            self._sync(True)
        except Exception:
            self._end(token)
            raise
        return token

    def _end(self, token):
        if token is not None:
            self.storage.unlock(token)

    def _save(self):
        self.storage.write(self.name, encode(self._pins))
        st = getattr(self.storage, "stamp", None)
        if st is not None:
            self._stamp = st(self.name)
        self.counters["writes"] += 1

    def observe(self, peer_id, pubkey, now=None):
        """Record that peer_id presented pubkey (a verified key); returns the verdict."""
        pid = _id(peer_id)
        key = _key(pubkey)
        self._sync()
        if pid not in self._pins or self._pins[pid][0] != key and self._pins[pid][2] != key:
            token = self._begin()       # a write may follow: merge under the lock
            try:
                return self._observe(pid, key)
            finally:
                self._end(token)
        return self._observe(pid, key)

    def _observe(self, pid, key):
        p = self._pins.get(pid)
        self._tick += 1
        if p is None:
            if len(self._pins) >= self.limit and not self._evict():
                self.counters["full"] += 1
                return FULL
            self._pins[pid] = [key, False, None]
            self._used[pid] = self._tick
            self._save()
            self.counters["new"] += 1
            return NEW
        self._used[pid] = self._tick
        if p[0] == key:
            self.counters["match"] += 1
            return MATCH
        self.counters["changed"] += 1
        if p[2] != key:
            p[2] = key
            self._save()
        return CHANGED

    def _evict(self):
        """Make room by dropping the least recently seen pin that the user never
        approved: a flood of new identities (each address can be a new one) then only
        churns trust-on-first-use pins, and can never lock new peers out for good.
        Approved pins are never evicted. Returns False when every pin is approved."""
        victim = None
        for pid in self._pins:
            if not self._pins[pid][1]:
                if victim is None or self._used.get(pid, 0) < self._used.get(victim, 0):
                    victim = pid
        if victim is None:
            return False
        del self._pins[victim]
        self._used.pop(victim, None)
        self.counters["evicted"] += 1
        return True

    def is_trusted(self, peer_id, pubkey):
        self._sync()
        p = self._pins.get(_id(peer_id))
        return p is not None and p[0] == bytes(pubkey)

    def approve(self, peer_id, pubkey):
        """Pin pubkey for peer_id as approved (replacing any other key); clears a report."""
        pid = _id(peer_id)
        key = _key(pubkey)
        token = self._begin()
        try:
            p = self._pins.get(pid)
            if p is None and len(self._pins) >= self.limit:
                raise PinError("pin store full (%d pins): forget one first" % self.limit)
            self._pins[pid] = [key, True, None]
            self._save()
        finally:
            self._end(token)
        self.counters["approved"] += 1

    def forget(self, peer_id):
        pid = _id(peer_id)
        token = self._begin()
        try:
            if pid not in self._pins:
                return False
            del self._pins[pid]
            self._save()
        finally:
            self._end(token)
        self.counters["forgotten"] += 1
        return True

    def get(self, peer_id):
        self._sync()
        p = self._pins.get(_id(peer_id))
        if p is None:
            return None
        return (p[0], self._state(p), p[2])

    def _state(self, p):
        if p[2] is not None:
            return STATE_CHANGED
        return APPROVED if p[1] else TOFU

    def state(self, peer_id):
        self._sync()
        p = self._pins.get(_id(peer_id))
        return None if p is None else self._state(p)

    def changes(self):
        """Peers whose key changed: list of (peer_id, pinned_key, seen_key)."""
        self._sync()
        out = []
        for pid in self._pins:
            p = self._pins[pid]
            if p[2] is not None:
                out.append((pid, p[0], p[2]))
        return out

    def items(self):
        """(peer_id, key, state) for every pin."""
        self._sync()
        return [(pid, self._pins[pid][0], self._state(self._pins[pid])) for pid in self._pins]

    def key_state(self, pubkey):
        """The standing of a key, whatever address it was pinned at (trust belongs to
        the identity): "approved" when any pin approved it, "tofu" when any pin holds
        it (trusted on first use), else None. A pending (changed) key counts for
        nothing until approved."""
        self._sync()
        key = bytes(pubkey)
        best = None
        for pid in self._pins:
            p = self._pins[pid]
            if p[0] == key:
                if p[1]:
                    return APPROVED
                best = TOFU
        return best
