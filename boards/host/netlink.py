"""The host board's address watcher: Linux rtnetlink with stdlib sockets (no library).

    mon = AddressMonitor(log=print)
    mon.open()                 # subscribes RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_IFADDR, then dumps
    mon.on_change(cb)          # cb(events), events as pnpboard.net describes them:
                               #   (kind, address, ifindex, preferred_s, valid_s, flags)
    mon.start()                # reads the socket from the running asyncio loop (add_reader)
    mon.address_list()         # preferred addresses, stable global IPv6 first
    mon.close()

The kernel sends RTM_NEWADDR when an address appears, when DAD finishes, when its
lifetimes are refreshed by a router advertisement and when it becomes deprecated
(IFA_F_DEPRECATED, preferred lifetime 0); RTM_DELADDR when it goes. Each message is a
struct ifaddrmsg with attributes IFA_ADDRESS / IFA_LOCAL (the address: IFA_LOCAL when
both are there, the peer address being IFA_ADDRESS on point-to-point links),
IFA_CACHEINFO (preferred and valid lifetimes in seconds, 0xFFFFFFFF = forever) and
IFA_FLAGS (32-bit flags; older kernels only have ifaddrmsg.ifa_flags, 8 bits).
Lifetime refreshes alone are not events; "added" means usable now (new, DAD done, or
back from deprecated), "deprecated" still valid but not to be used for new things,
"removed" gone or duplicated. Host-scope addresses (::1, 127.0.0.0/8) are left out.
If the kernel drops messages for us (ENOBUFS: the socket's buffer overflowed) the
monitor dumps the table again and reports the difference.
"""

import errno
import os
import socket
import struct

NETLINK_ROUTE = 0
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_DUMP = 0x300

IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_LABEL = 3
IFA_CACHEINFO = 6
IFA_FLAGS = 8

IFA_F_TEMPORARY = 0x01
IFA_F_NODAD = 0x02
IFA_F_OPTIMISTIC = 0x04
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
IFA_F_PERMANENT = 0x80
IFA_F_MANAGETEMPADDR = 0x100
IFA_F_STABLE_PRIVACY = 0x800

RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254

INFINITE = 0xFFFFFFFF

_NLMSGHDR = struct.Struct("=IHHII")     # len, type, flags, seq, pid
_IFADDRMSG = struct.Struct("=BBBBI")    # family, prefixlen, flags, scope, index
_RTATTR = struct.Struct("=HH")          # len, type
_CACHEINFO = struct.Struct("=IIII")     # preferred, valid, cstamp, tstamp


def _align(n):
    return (n + 3) & ~3


class AddrMsg:
    """One parsed RTM_NEWADDR / RTM_DELADDR."""

    __slots__ = ("type", "family", "prefixlen", "flags", "scope", "index", "address",
                 "preferred", "valid", "label")

    def __init__(self, type_, family, prefixlen, flags, scope, index, address,
                 preferred=INFINITE, valid=INFINITE, label=None):
        self.type = type_
        self.family = family
        self.prefixlen = prefixlen
        self.flags = flags
        self.scope = scope
        self.index = index
        self.address = address
        self.preferred = preferred
        self.valid = valid
        self.label = label

    def __repr__(self):
        return "<AddrMsg %s %s/%d if%d flags %#x pref %s valid %s>" % (
            "new" if self.type == RTM_NEWADDR else "del", self.address, self.prefixlen,
            self.index, self.flags, self.preferred, self.valid)

    def state(self):
        """preferred / deprecated / tentative / duplicated (removed for RTM_DELADDR)."""
        if self.type == RTM_DELADDR:
            return "removed"
        if self.flags & IFA_F_DADFAILED:
            return "duplicated"
        if self.flags & IFA_F_TENTATIVE and not self.flags & IFA_F_OPTIMISTIC:
            return "tentative"
        if self.flags & IFA_F_DEPRECATED or self.preferred == 0:
            return "deprecated"
        return "preferred"

    def word_flags(self):
        if self.family == socket.AF_INET:
            return ("ipv4",)
        if self.scope == RT_SCOPE_LINK or self.address.lower().startswith("fe80:"):
            return ("link-local",)
        return ("temporary",) if self.flags & IFA_F_TEMPORARY else ("stable",)


def parse_attrs(data, off):
    """{type: bytes} of the rtattrs in data[off:] (the last of a type wins)."""
    out = {}
    n = len(data)
    while off + _RTATTR.size <= n:
        alen, atype = _RTATTR.unpack_from(data, off)
        if alen < _RTATTR.size or off + alen > n:
            break
        out[atype & 0x3FFF] = bytes(data[off + _RTATTR.size:off + alen])
        off += _align(alen)
    return out


def parse_ifaddr(mtype, body):
    """An AddrMsg from the payload of an RTM_NEWADDR / RTM_DELADDR, or None when it is
    not one we understand (short, no address, unknown family)."""
    if len(body) < _IFADDRMSG.size:
        return None
    fam, plen, flags8, scope, index = _IFADDRMSG.unpack_from(body, 0)
    if fam not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs = parse_attrs(body, _IFADDRMSG.size)
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    want = 16 if fam == socket.AF_INET6 else 4
    if raw is None or len(raw) != want:
        return None
    flags = flags8
    if IFA_FLAGS in attrs and len(attrs[IFA_FLAGS]) >= 4:
        flags = struct.unpack_from("=I", attrs[IFA_FLAGS])[0]
    pref = valid = INFINITE
    ci = attrs.get(IFA_CACHEINFO)
    if ci is not None and len(ci) >= _CACHEINFO.size:
        pref, valid = _CACHEINFO.unpack_from(ci)[:2]
    label = attrs.get(IFA_LABEL)
    if label is not None:
        label = label.split(b"\0")[0].decode("ascii", "replace")
    return AddrMsg(mtype, fam, plen, flags, scope, index, socket.inet_ntop(fam, raw),
                   pref, valid, label)


def parse_messages(data):
    """[(type, flags, seq, AddrMsg or None or errno)] for every netlink message in data:
    AddrMsg for RTM_NEWADDR / RTM_DELADDR, the (positive) errno for NLMSG_ERROR, None
    for the rest (NLMSG_DONE included). Truncated tails are ignored."""
    out = []
    off = 0
    n = len(data)
    while off + _NLMSGHDR.size <= n:
        mlen, mtype, mflags, seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if mlen < _NLMSGHDR.size or off + mlen > n:
            break
        body = data[off + _NLMSGHDR.size:off + mlen]
        item = None
        if mtype in (RTM_NEWADDR, RTM_DELADDR):
            item = parse_ifaddr(mtype, body)
        elif mtype == NLMSG_ERROR and len(body) >= 4:
            item = -struct.unpack_from("=i", body)[0]
        out.append((mtype, mflags, seq, item))
        off += _align(mlen)
    return out


def build_message(mtype, body, flags=0, seq=0, pid=0):
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), mtype, flags, seq, pid) + body


def build_ifaddr(mtype, address, prefixlen=64, index=1, flags=0, scope=0, preferred=INFINITE,
                 valid=INFINITE, seq=0, local=None, cacheinfo=True, flags_attr=True):
    """The bytes of one RTM_NEWADDR / RTM_DELADDR as the kernel sends it (for tests and
    for the dump request's shape)."""
    fam = socket.AF_INET6 if ":" in address else socket.AF_INET

    def attr(t, v):
        a = _RTATTR.pack(_RTATTR.size + len(v), t) + v
        return a + bytes(_align(len(a)) - len(a))
    body = _IFADDRMSG.pack(fam, prefixlen, flags & 0xFF, scope, index)
    body += attr(IFA_ADDRESS, socket.inet_pton(fam, address))
    if local is not None:
        body += attr(IFA_LOCAL, socket.inet_pton(fam, local))
    if cacheinfo:
        body += attr(IFA_CACHEINFO, _CACHEINFO.pack(preferred, valid, 0, 0))
    if flags_attr:
        body += attr(IFA_FLAGS, struct.pack("=I", flags))
    return build_message(mtype, body, seq=seq)


def dump_request(seq):
    return build_message(RTM_GETADDR, _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0),
                         NLM_F_REQUEST | NLM_F_DUMP, seq)


def _lifetime(v):
    return None if v == INFINITE else v


class AddressTable:
    """The addresses of this host, updated message by message; apply() returns events."""

    def __init__(self):
        self.entries = {}          # (address, ifindex) -> AddrMsg (the newest)

    def _event(self, kind, m, pref=None, valid=None):
        return (kind, m.address, m.index, _lifetime(m.preferred) if pref is None else pref,
                _lifetime(m.valid) if valid is None else valid, m.word_flags())

    def apply(self, m):
        if m is None or m.scope == RT_SCOPE_HOST:
            return []
        key = (m.address, m.index)
        old = self.entries.get(key)
        was = old.state() if old is not None else None
        if m.type == RTM_DELADDR:
            self.entries.pop(key, None)
            if was in ("preferred", "deprecated"):
                return [self._event("removed", m, 0, 0)]
            return []
        self.entries[key] = m
        st = m.state()
        if st == "preferred" and was != "preferred":
            return [self._event("added", m)]
        if st == "deprecated" and was != "deprecated":
            return [self._event("deprecated", m)]
        if st in ("duplicated", "tentative") and was in ("preferred", "deprecated"):
            return [self._event("removed", m)]
        return []

    def replace(self, msgs):
        """Take a full dump: the events between the table and the dump."""
        fresh = AddressTable()
        for m in msgs:
            fresh.apply(m)
        events = []
        for key, m in sorted(self.entries.items()):
            if key not in fresh.entries:
                gone = AddrMsg(RTM_DELADDR, m.family, m.prefixlen, m.flags, m.scope, m.index, m.address)
                events += self.apply(gone)
        for key, m in sorted(fresh.entries.items()):
            events += self.apply(m)
        return events

    def listing(self):
        """[(address, state, preferred_s, valid_s, ifindex, flags)], sorted."""
        return [(m.address, m.state(), _lifetime(m.preferred), _lifetime(m.valid), m.index,
                 m.word_flags()) for _k, m in sorted(self.entries.items())]

    def address_list(self):
        """Preferred addresses for IKE: stable global IPv6, temporary global IPv6,
        link-local IPv6, IPv4 (the order of pnpboard.net.order_addresses)."""
        out = [[], [], [], []]
        for a, st, _p, _v, _i, fl in self.listing():
            if st != "preferred":
                continue
            slot = 3 if "ipv4" in fl else 2 if "link-local" in fl else 1 if "temporary" in fl else 0
            if a not in out[slot]:
                out[slot].append(a)
        return out[0] + out[1] + out[2] + out[3]


def open_socket(groups=RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_IFADDR):
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind((0, groups))
    except OSError:
        s.close()
        raise
    return s


def dump(timeout=5.0):
    """[AddrMsg] of every address now (a one-shot RTM_GETADDR dump on its own socket)."""
    s = open_socket(0)
    try:
        s.settimeout(timeout)
        seq = int.from_bytes(os.urandom(3), "big") + 1
        s.send(dump_request(seq))
        msgs = []
        while True:
            data = s.recv(1 << 16)
            for mtype, _fl, mseq, item in parse_messages(data):
                if mseq != seq:
                    continue
                if mtype == NLMSG_DONE:
                    return msgs
                if mtype == NLMSG_ERROR and item:
                    raise OSError(item, "RTM_GETADDR: %s" % os.strerror(item))
                if isinstance(item, AddrMsg):
                    msgs.append(item)
    finally:
        s.close()


class AddressMonitor:
    """Subscribed rtnetlink socket + AddressTable, read from the asyncio loop."""

    def __init__(self, log=None):
        self.log = log or (lambda m: None)
        self.table = AddressTable()
        self.sock = None
        self._cbs = []
        self._loop = None
        self.resyncs = 0

    def on_change(self, cb):
        self._cbs.append(cb)

    def open(self):
        """Subscribe, then take the table (subscribing first: nothing falls between)."""
        if self.sock is None:
            self.sock = open_socket()
            self.sock.setblocking(False)
            self.table.replace(dump())
        return self

    def start(self, loop=None):
        import asyncio
        self.open()
        if self._loop is None:
            self._loop = loop or asyncio.get_running_loop()
            self._loop.add_reader(self.sock.fileno(), self._ready)
        return self

    def _emit(self, events):
        if not events:
            return
        for cb in list(self._cbs):
            try:
                cb(events)
            except Exception as e:  # noqa: BLE001 - a broken consumer must not stop the reports
                self.log("address callback failed: %r" % (e,))

    def feed(self, data):
        """Apply the messages in one datagram from the kernel; returns the events."""
        events = []
        for mtype, _fl, _seq, item in parse_messages(data):
            if isinstance(item, AddrMsg):
                events += self.table.apply(item)
        self._emit(events)
        return events

    def resync(self):
        self.resyncs += 1
        events = self.table.replace(dump())
        self._emit(events)
        return events

    def _ready(self):
        for _ in range(64):
            try:
                data = self.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno == errno.ENOBUFS:   # the kernel dropped messages: read it all again
                    try:
                        self.resync()
                    except Exception as e2:  # noqa: BLE001
                        self.log("address table re-read failed: %r" % (e2,))
                    continue
                self.log("netlink read failed: %r" % (e,))
                return
            try:
                self.feed(data)
            except Exception as e:  # noqa: BLE001 - the watcher never dies
                self.log("netlink message dropped: %r" % (e,))

    def listing(self):
        return self.table.listing()

    def address_list(self):
        return self.table.address_list()

    def close(self):
        if self.sock is not None:
            if self._loop is not None:
                try:
                    self._loop.remove_reader(self.sock.fileno())
                except (ValueError, RuntimeError):
                    pass
                self._loop = None
            self.sock.close()
            self.sock = None
