"""The host board's address events from rtnetlink (issue 12, item 2).

Parser: messages captured from Linux (RTM_NEWADDR on `ip -6 addr add ... nodad
preferred_lft 300 valid_lft 600`, RTM_NEWADDR with IFA_F_DEPRECATED on `ip addr change
... preferred_lft 0`, RTM_DELADDR on `ip addr del`) and hand-built ones (IPv4 with
IFA_LOCAL, old kernels without IFA_FLAGS, temporary, tentative, DAD failed, truncated).
Live: HostBoard.watch() inside a network namespace while the test adds, deprecates and
removes addresses there; and the same board's address_list() ordering.
"""

import json
import os
import select
import socket
import subprocess
import sys
import time

import pytest

from pnp_hostboard import netlink as nl
from pnp_hostboard.board import HostBoard

from .conftest import REPO, missing

# captured from Linux 6.x (see the module docstring): ifindex 3, 2001:db8:1::5/64
CAP_ADD = bytes.fromhex("480000001400000000000000000000000a400200030000001400010020010db8000100000000000000000005"
                        "140006002c0100005802000071fb1e0071fb1e000800080002000000")
CAP_DEPRECATE = bytes.fromhex("480000001400000000000000000000000a402000030000001400010020010db80001000000000000000000"
                              "0514000600000000005802000071fb1e0071fb1e000800080020000000")
CAP_DEL = bytes.fromhex("480000001500000000000000000000000a402000030000001400010020010db8000100000000000000000005"
                        "14000600000000005802000071fb1e0071fb1e000800080020000000")


def test_parse_captured_messages():
    [(t, _f, _s, m)] = nl.parse_messages(CAP_ADD)
    assert t == nl.RTM_NEWADDR and m.address == "2001:db8:1::5" and m.prefixlen == 64 and m.index == 3
    assert (m.preferred, m.valid) == (300, 600) and m.flags == nl.IFA_F_NODAD and m.state() == "preferred"
    [(_t, _f, _s, m2)] = nl.parse_messages(CAP_DEPRECATE)
    assert m2.flags & nl.IFA_F_DEPRECATED and m2.preferred == 0 and m2.state() == "deprecated"
    [(t3, _f, _s, m3)] = nl.parse_messages(CAP_DEL)
    assert t3 == nl.RTM_DELADDR and m3.state() == "removed"
    # several messages in one datagram (a dump), and a truncated tail ignored
    many = nl.parse_messages(CAP_ADD + CAP_DEPRECATE + CAP_DEL[:30])
    assert [x[3].state() for x in many] == ["preferred", "deprecated"]


def test_table_events_from_captured_sequence():
    t = nl.AddressTable()
    evs = [t.apply(x[3]) for d in (CAP_ADD, CAP_ADD, CAP_DEPRECATE, CAP_DEL) for x in nl.parse_messages(d)]
    assert evs == [[("added", "2001:db8:1::5", 3, 300, 600, ("stable",))],
                   [],                    # the same message again (a lifetime refresh): nothing
                   [("deprecated", "2001:db8:1::5", 3, 0, 600, ("stable",))],
                   [("removed", "2001:db8:1::5", 3, 0, 0, ("stable",))]]
    assert t.listing() == []


def test_hand_built_messages_flags_lifetimes_ipv4():
    # IPv4: IFA_LOCAL is the address (IFA_ADDRESS is the peer's on point-to-point links)
    v4 = nl.build_ifaddr(nl.RTM_NEWADDR, "10.0.0.9", 32, index=4, local="10.0.0.1")
    [(_t, _f, _s, m)] = nl.parse_messages(v4)
    assert m.address == "10.0.0.1" and m.family == socket.AF_INET and m.word_flags() == ("ipv4",)
    assert m.preferred == nl.INFINITE
    # an old kernel: no IFA_FLAGS (the 8-bit ifa_flags counts), no cacheinfo (forever)
    old = nl.build_ifaddr(nl.RTM_NEWADDR, "2001:db8::7", flags=nl.IFA_F_TEMPORARY, cacheinfo=False,
                          flags_attr=False)
    [(_t, _f, _s, m)] = nl.parse_messages(old)
    assert m.word_flags() == ("temporary",) and m.state() == "preferred"
    t = nl.AddressTable()
    assert t.apply(m) == [("added", "2001:db8::7", 1, None, None, ("temporary",))]
    # tentative (DAD running): nothing until DAD ends; DAD failed: never usable
    tent = nl.parse_messages(nl.build_ifaddr(nl.RTM_NEWADDR, "2001:db8::8", flags=nl.IFA_F_TENTATIVE,
                                             preferred=100, valid=200))[0][3]
    assert tent.state() == "tentative" and t.apply(tent) == []
    done = nl.parse_messages(nl.build_ifaddr(nl.RTM_NEWADDR, "2001:db8::8", preferred=100, valid=200))[0][3]
    assert t.apply(done) == [("added", "2001:db8::8", 1, 100, 200, ("stable",))]
    dup = nl.parse_messages(nl.build_ifaddr(nl.RTM_NEWADDR, "2001:db8::8",
                                            flags=nl.IFA_F_TENTATIVE | nl.IFA_F_DADFAILED))[0][3]
    assert dup.state() == "duplicated" and [e[0] for e in t.apply(dup)] == ["removed"]
    # optimistic DAD: usable at once
    opt = nl.parse_messages(nl.build_ifaddr(nl.RTM_NEWADDR, "2001:db8::9",
                                            flags=nl.IFA_F_TENTATIVE | nl.IFA_F_OPTIMISTIC))[0][3]
    assert opt.state() == "preferred"
    # host scope (::1, 127.0.0.1) is never ours to offer
    lo = nl.parse_messages(nl.build_ifaddr(nl.RTM_NEWADDR, "::1", 128, scope=nl.RT_SCOPE_HOST))[0][3]
    assert t.apply(lo) == []
    # link-local and the order for IKE: stable, temporary, link-local, IPv4
    ll = nl.parse_messages(nl.build_ifaddr(nl.RTM_NEWADDR, "fe80::1", scope=nl.RT_SCOPE_LINK))[0][3]
    t.apply(ll)
    t.apply(nl.parse_messages(nl.build_ifaddr(nl.RTM_NEWADDR, "2001:db8::1"))[0][3])
    t.apply(nl.parse_messages(v4)[0][3])
    assert t.address_list() == ["2001:db8::1", "2001:db8::7", "fe80::1", "10.0.0.1"]


def test_garbage_is_refused_not_raised():
    for junk in (b"", b"\x00" * 15, b"\xff" * 16, CAP_ADD[:20],
                 nl.build_message(nl.RTM_NEWADDR, b"\x0a\x40\x00\x00"),        # short ifaddrmsg
                 nl.build_message(nl.RTM_NEWADDR, bytes([99, 0, 0, 0, 1, 0, 0, 0])),   # unknown family
                 nl.build_message(nl.RTM_NEWADDR, bytes([10, 64, 0, 0, 1, 0, 0, 0]) + b"\x08\x00\x01\x00abcd")):
        for _t, _f, _s, item in nl.parse_messages(junk):
            assert item is None
    err = nl.build_message(nl.NLMSG_ERROR, (-105).to_bytes(4, "little", signed=True) + bytes(16))
    assert nl.parse_messages(err)[0][3] == 105


def test_monitor_feed_callbacks_and_resync(monkeypatch):
    mon = nl.AddressMonitor()
    got, logs = [], []
    mon.log = logs.append
    mon.on_change(got.extend)
    mon.on_change(lambda evs: 1 / 0)          # a broken consumer does not stop the others
    assert [e[0] for e in mon.feed(CAP_ADD)] == ["added"]
    assert got and logs and "address callback failed" in logs[0]
    # ENOBUFS: the kernel dropped messages; the monitor reads the table again and reports
    # the difference (2001:db8:1::5 gone, 2001:db8:2::5 new)
    new = nl.parse_messages(nl.build_ifaddr(nl.RTM_NEWADDR, "2001:db8:2::5", index=3))[0][3]
    monkeypatch.setattr(nl, "dump", lambda timeout=5.0: [new])
    evs = mon.resync()
    assert sorted(e[:2] for e in evs) == [("added", "2001:db8:2::5"), ("removed", "2001:db8:1::5")]
    assert mon.address_list() == ["2001:db8:2::5"]


def test_dump_request_shape():
    req = nl.dump_request(7)
    ln, typ, flags, seq, _pid = nl._NLMSGHDR.unpack_from(req)
    assert (ln, typ, flags, seq) == (len(req), nl.RTM_GETADDR, nl.NLM_F_REQUEST | nl.NLM_F_DUMP, 7)


# ------------------------------------------------------------------ live, in a namespace
WATCH = r'''
import asyncio, json, sys
from pnp_hostboard.board import HostBoard

async def main():
    b = HostBoard()
    b.on_address_change(lambda evs: [print(json.dumps(["event"] + list(e)), flush=True) for e in evs])
    assert b.watch() is not None
    print(json.dumps(["list", b.address_list()]), flush=True)
    loop = asyncio.get_running_loop()
    r = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(r), sys.stdin)
    while True:
        line = await r.readline()
        if not line:
            break
        print(json.dumps(["list", b.address_list(), b.addresses()]), flush=True)
    b.stop_watch()

asyncio.run(main())
'''


class _Lines:
    """JSON lines from the watcher, with a timeout (its own buffer: select on the pipe)."""

    def __init__(self, p):
        self.p = p
        self.buf = b""

    def next(self, timeout=5.0):
        end = time.monotonic() + timeout
        fd = self.p.stdout.fileno()
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            r, _, _ = select.select([fd], [], [], max(0.0, left))
            chunk = os.read(fd, 65536) if r else b""
            if not chunk:
                raise AssertionError("no line from the watcher (exit %r): %s" % (
                    self.p.poll(), self.p.stderr.read() if self.p.poll() is not None else ""))
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def event(self, addr=None, timeout=5.0):
        """The next event (about `addr` when given: link-local DAD ends in between)."""
        while True:
            x = self.next(timeout)
            if x[0] == "event" and (addr is None or x[2] == addr):
                return x[1:]

    def listing(self):
        self.p.stdin.write(b"?\n")
        self.p.stdin.flush()
        while True:
            x = self.next()
            if x[0] == "list":
                return x


@pytest.mark.needs_root
def test_live_host_board_events_in_a_namespace():
    from pnp.peers import netns as nn
    ok, why = nn.can_use_netns()
    if not ok:
        missing(why)
    name = "pnpnl%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", name], check=True)
    p = None
    try:
        def ip(*args):
            subprocess.run(["ip", "-n", name] + list(args), check=True, capture_output=True)
        ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        ip("link", "set", "v0", "up")
        ip("link", "set", "v1", "up")
        ip("-6", "addr", "add", "2001:db8:a::1/64", "dev", "v0", "nodad", "preferred_lft", "300", "valid_lft", "600")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(REPO, ".pp"), REPO]))
        p = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", WATCH], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        w = _Lines(p)
        first = w.next(10)
        assert first[0] == "list" and first[1][0] == "2001:db8:a::1", first     # the initial dump
        ifindex = int(subprocess.run(["ip", "netns", "exec", name, "cat", "/sys/class/net/v0/ifindex"],
                                     capture_output=True, text=True).stdout)
        ip("-6", "addr", "add", "2001:db8:a::77/64", "dev", "v0", "nodad", "preferred_lft", "100", "valid_lft", "200")
        assert w.event("2001:db8:a::77") == ["added", "2001:db8:a::77", ifindex, 100, 200, ["stable"]]
        # deprecate the first
        ip("-6", "addr", "change", "2001:db8:a::1/64", "dev", "v0", "preferred_lft", "0", "valid_lft", "600")
        ev = w.event("2001:db8:a::1")
        assert ev[:3] == ["deprecated", "2001:db8:a::1", ifindex] and ev[3] == 0
        lst = w.listing()
        assert "2001:db8:a::1" not in lst[1] and lst[1][0] == "2001:db8:a::77"
        assert ["2001:db8:a::1", "deprecated"] in [x[:2] for x in lst[2]]
        # with DAD (on v1): tentative first (no event), "added" once DAD is done (~1 s)
        ip("-6", "addr", "add", "2001:db8:b::5/64", "dev", "v1")
        ev = w.event("2001:db8:b::5", 6)
        assert ev[0] == "added"
        # a kernel-made RFC 8981 temporary address (use_tempaddr=2, a mngtmpaddr prefix)
        subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.v0.use_tempaddr=2"], check=True)
        subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.v0.dad_transmits=0"], check=True)
        ip("-6", "addr", "add", "2001:db8:c::1/64", "dev", "v0", "nodad", "mngtmpaddr",
           "valid_lft", "3600", "preferred_lft", "1800")     # (finite: the kernel wants them)
        temp = None
        end = time.monotonic() + 6
        while temp is None and time.monotonic() < end:
            ev = w.event(timeout=6)
            if ev[0] == "added" and ev[1].startswith("2001:db8:c:") and ev[-1] == ["temporary"]:
                temp = ev[1]
        assert temp and temp != "2001:db8:c::1"
        lst = w.listing()
        order = lst[1]
        assert order.index("2001:db8:c::1") < order.index(temp)       # stable before temporary
        # IPv4 too
        ip("addr", "add", "10.77.0.1/24", "dev", "v0")
        assert w.event("10.77.0.1")[0] == "added"
        # removal
        ip("-6", "addr", "del", "2001:db8:a::1/64", "dev", "v0")
        assert w.event("2001:db8:a::1")[0] == "removed"
        lst = w.listing()
        assert "2001:db8:a::1" not in lst[1] and "2001:db8:b::5" in lst[1]
        assert lst[1][-1] == "10.77.0.1" and any(a.startswith("fe80:") for a in lst[1])
    finally:
        if p is not None:
            p.stdin.close()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
