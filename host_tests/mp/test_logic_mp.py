# Policy (SPD + decision point), pins, discovery and levels under MicroPython and CPython.
# Plain asserts; imports only pnpipsec and modules MicroPython has. The same rules as
# host_tests/test_policy.py, test_pins.py, test_discovery.py, test_levels.py, in small.

import asyncio

from pnpipsec import CLEAR, ENCRYPTED, AUTHENTICATED, AUTHORIZED, inet, ticks
from pnpipsec import discovery as dm
from pnpipsec.discovery import Discovery, SEND_CLEAR, SEND_ESP, HOLD, FAIL
from pnpipsec.levels import LevelTable
from pnpipsec.pins import PinStore, PinError
from pnpipsec.policy import (Action, BYPASS, OPPORTUNISTIC, REQUIRE, Spd, DecisionPoint,
                             Request, parse_entry)

OPP = Action(OPPORTUNISTIC)
BYP = Action(BYPASS)
REQ = Action(REQUIRE, ENCRYPTED)
P = inet.pton("fd00::2")
K1 = bytes(range(32))
K2 = bytes(range(1, 33))


class MemStorage:
    def __init__(self):
        self.d = {}

    def read(self, name):
        return self.d.get(name)

    def write(self, name, data):
        self.d[name] = bytes(data)


def _raises(exc, f, *args):
    try:
        f(*args)
    except exc as e:
        return e
    raise AssertionError("no %s" % exc.__name__)


# ---------------------------------------------------------------- policy

def test_spd_first_match_prefix_ports_fingerprint():
    spd = Spd.from_dicts([
        {"peer": "fd00::/64", "port": 7000, "action": "require", "level": "authenticated"},
        {"peer": "fd00::/16", "action": "bypass"},
        {"peer": "10.0.0.0/15", "action": "require"},
        {"peer": "fp:ABCD-EFGH-IJKL-MNOP", "action": "require", "level": 3},
    ])
    a = spd.match(inet.pton("fd00::5"), None, 40000, 7000)
    assert a.kind == REQUIRE and a.level == AUTHENTICATED
    assert spd.match(inet.pton("fd00::5"), None, 40000, 7001).kind == BYPASS
    assert spd.match(inet.pton("fd00:1::5")).kind == BYPASS
    assert spd.match(inet.pton("10.1.2.3")).kind == REQUIRE
    assert spd.match(inet.pton("10.2.0.0")).kind == OPPORTUNISTIC
    assert spd.match(inet.pton("::1"), "ABCD-EFGH-IJKL-MNOP").level == AUTHORIZED
    assert spd.match(inet.pton("::1"), None).kind == OPPORTUNISTIC
    s = spd.sa_action(inet.pton("fd00::5"))
    assert s.kind == REQUIRE and s.level == AUTHENTICATED
    assert spd.sa_action(inet.pton("fd00:1::5")).kind == BYPASS
    assert Spd().match(inet.pton("::1"), None, 1, 2).kind == OPPORTUNISTIC


def test_spd_parse_errors_name_field():
    cases = (({"action": "bypass"}, "peer"),
             ({"peer": "fd00::1/64", "action": "bypass"}, "peer"),
             ({"peer": "any", "port": 70000, "action": "bypass"}, "port"),
             ({"peer": "any", "action": "nope"}, "action"),
             ({"peer": "any", "action": "require", "level": "clear"}, "level"),
             ({"peer": "any", "action": "bypass", "level": 1}, "level"),
             ({"peer": "any", "colour": 1, "action": "bypass"}, "colour"))
    for d, field in cases:
        e = _raises(ValueError, parse_entry, d)
        assert str(e.args[0]).startswith(field + ":"), e.args[0]
    e = _raises(ValueError, Spd.from_dicts, [cases[0][0]])
    assert e.args[0].startswith("spd[0].peer:")


def test_action_with_min():
    assert OPP.with_min(0) is OPP
    t = BYP.with_min(AUTHENTICATED)
    assert t.kind == REQUIRE and t.level == AUTHENTICATED and not t.allows_clear()


def test_decision_point_sync():
    spd = Spd.from_dicts([{"peer": "10.0.0.0/8", "action": "bypass"}])
    dp = DecisionPoint(spd)
    assert not dp.decide_local(Request(inet.pton("10.1.1.1"))).accept
    d = dp.decide_now(Request(inet.pton("::1")), 0)
    assert d.accept and d.source == "local"
    assert dp.begin(Request(inet.pton("::1")), 0).source == "local"   # no server: local


def test_decision_point_halves_cache_and_fallback():
    # begin()/finish() are what decide() awaits between: runs where asyncio.run does not
    # exist (the WebAssembly port's asyncio is driven by the JS event loop)
    async def never(req):
        return True
    spd = Spd.from_dicts([{"peer": "10.0.0.0/8", "action": "bypass"}])
    dp = DecisionPoint(spd, ask=never, cache_lifetime=60.0, fallback_lifetime=10.0)
    r = Request(inet.pton("::1"))
    # now: ms ticks; lifetimes (constructor, the answer's "lifetime") in seconds
    assert dp.begin(r, 0) is None                          # ask the server
    d = dp.finish(r, 0, {"accept": False, "level": "authorized", "lifetime": 5})
    assert not d.accept and d.source == "remote" and d.level == AUTHORIZED
    assert dp.begin(r, 4000).source == "cache" and dp.begin(r, 5000) is None
    d = dp.finish(r, 5000, None, "timeout")
    assert d.accept and d.source == "fallback"
    assert dp.begin(r, 14000).source == "cache" and dp.begin(r, 15000) is None
    r2 = Request(inet.pton("10.0.0.1"))
    d = dp.finish(r2, 0, None, OSError("down"))
    assert not d.accept and d.source == "fallback"
    d = dp.finish(Request(inet.pton("::2")), 0, {"level": 1})   # garbage answer
    assert d.accept and d.source == "fallback"
    c = dp.counters
    assert c["remote"] == 1 and c["remote_timeout"] == 1 and c["remote_error"] == 2
    assert c["cache_hit"] == 2


def test_decision_point_asyncio():
    if not hasattr(asyncio, "run"):
        # WebAssembly port: no blocking loop here; the halves above cover the logic
        return
    calls = []

    async def ask(req):
        calls.append(req)
        return {"accept": False, "lifetime": 5}

    async def slow(req):
        await asyncio.sleep(0.5)
        return True

    async def main():
        dp = DecisionPoint(Spd(), ask=ask, timeout=1.0)
        r = Request(inet.pton("::1"))
        d1 = await dp.decide(r, 0)
        d2 = await dp.decide(r, 4000)
        dp2 = DecisionPoint(Spd(), ask=slow, timeout=0.01)
        d3 = await dp2.decide(r, 0)
        return d1, d2, d3, dp2
    d1, d2, d3, dp2 = asyncio.run(main())
    assert not d1.accept and d1.source == "remote"
    assert d2.source == "cache" and len(calls) == 1
    assert d3.accept and d3.source == "fallback" and dp2.counters["remote_timeout"] == 1


# ---------------------------------------------------------------- pins

def test_pins_tofu_change_approve_persist():
    st = MemStorage()
    ps = PinStore(st, limit=2)
    assert ps.observe(b"cam", K1, 0) == "new-pinned"
    assert ps.observe(b"cam", K1, 1000) == "match"
    assert ps.observe(b"cam", K2, 2000) == "changed"
    assert ps.is_trusted(b"cam", K1) and not ps.is_trusted(b"cam", K2)
    assert ps.state(b"cam") == "changed"
    ps2 = PinStore(st, limit=2)
    assert ps2.get(b"cam") == (K1, "changed", K2)
    ps2.approve(b"cam", K2)
    assert PinStore(st).is_trusted(b"cam", K2)
    assert ps2.observe(b"b", K1, 0) == "new-pinned"
    # full: the unapproved pin gives way, the approved one never does
    assert ps2.observe(b"c", K1, 0) == "new-pinned" and ps2.get(b"b") is None
    ps2.approve(b"c", K1)
    assert ps2.observe(b"d", K1, 0) == "full" and not ps2.is_trusted(b"d", K1)
    _raises(PinError, ps2.approve, b"d", K1)
    assert ps2.forget(b"c") and ps2.observe(b"d", K1, 0) == "new-pinned"


def test_pins_corrupt_left_intact():
    st = MemStorage()
    PinStore(st).observe(b"cam", K1, 0)
    blob = st.d["pins"]
    i = len(blob) // 2
    bad = blob[:i] + (b"0" if blob[i:i + 1] != b"0" else b"1") + blob[i + 1:]
    st.d["pins"] = bad
    _raises(PinError, PinStore, st)
    assert st.d["pins"] == bad
    st.d["pins"] = blob[:10]
    _raises(PinError, PinStore, st)


# ---------------------------------------------------------------- discovery

def test_discovery_first_datagram_and_legacy_backoff():
    d = Discovery(probe_timeout=3.0, backoff_min=30.0, backoff_max=3600.0, probe_burst=100)
    assert d.on_send(P, OPP, CLEAR, 0) == (SEND_CLEAR, True, "")
    assert d.on_send(P, OPP, CLEAR, 1000) == (SEND_CLEAR, False, "")
    assert d.tick(3000) == [P] and d.state(P, 3000) == dm.LEGACY
    assert d.on_send(P, REQ, CLEAR, 4000) == (FAIL, False, "legacy")
    # an hour of sends every 2 s: at most 7 probes (3 + 30, 3 + 60, ... doubling)
    t = 4000
    while t <= 3600000:
        d.tick(t)
        assert d.on_send(P, OPP, CLEAR, t)[0] == SEND_CLEAR
        t += 2000
    assert d.counters["probes"] <= 7, d.counters
    assert [d.backoff(n) for n in (1, 2, 3, 8, 9)] == [30000, 60000, 120000, 3600000, 3600000]


def test_discovery_sticky_and_require():
    d = Discovery(probe_timeout=2.0, sticky_time=100.0)
    assert d.on_send(P, REQ, CLEAR, 0) == (HOLD, True, "")
    d.probe_result(P, dm.OK, 500)
    d.seen_level(P, ENCRYPTED, 500)
    assert d.on_send(P, REQ, ENCRYPTED, 1000) == (SEND_ESP, False, "")
    assert d.on_send(P, OPP, CLEAR, 10000) == (HOLD, True, "sticky")   # SA lost
    d.tick(12000)
    assert d.on_send(P, OPP, CLEAR, 13000) == (FAIL, False, "sticky")
    assert d.on_send(P, BYP, CLEAR, 13000) == (SEND_CLEAR, False, "")
    assert d.on_clear_inbound(P, REQ, 13000) == (False, False)
    assert d.on_clear_inbound(P, OPP, 13000) == (True, False)


def test_discovery_require_never_clear_pseudorandom():
    # a small deterministic event storm (no hypothesis here): LCG-driven
    d = Discovery(probe_timeout=3.0, backoff_min=5.0, sticky_time=50.0, max_peers=3,
                  max_probing=2)
    peers = [bytes([10, 0, 0, i]) for i in range(4)]
    actions = [OPP, BYP, REQ, Action(REQUIRE, AUTHENTICATED)]
    x = 12345
    t = ticks.MASK - 3000       # ms ticks from 3 s before the wrap: deadlines straddle it
    for _ in range(3000):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        peer = peers[x % 4]
        op = (x >> 4) % 5
        t = ticks.add(t, ((x >> 8) % 100) * 100)
        d.tick(t)
        if op == 0 or op == 1:
            act = actions[(x >> 12) % 4]
            lv = (x >> 14) % 4
            sticky = d.is_sticky(peer, t)
            what, probe, why = d.on_send(peer, act, lv, t)
            if act.kind == REQUIRE:
                assert what != SEND_CLEAR
            if sticky and act.kind != BYPASS:
                assert what != SEND_CLEAR
            if what == SEND_ESP:
                assert lv >= max(act.level, ENCRYPTED)
        elif op == 2:
            d.probe_result(peer, (dm.OK, dm.TIMEOUT, dm.UNREACHABLE)[(x >> 12) % 3], t)
        elif op == 3:
            d.seen_level(peer, (x >> 12) % 4, t)
        else:
            act = actions[(x >> 12) % 4]
            deliver, probe = d.on_clear_inbound(peer, act, t)
            assert not (act.kind == REQUIRE and deliver)
        assert 0 <= d._probing <= 2 and len(d.peers()) <= 3
        nd = d.next_deadline(t)     # a running probe ends within probe_timeout
        assert nd is None or 0 < nd <= 3000, nd
    t = ticks.add(t, 3000)
    d.tick(t)
    assert d.next_deadline(t) is None and d._probing == 0


# ---------------------------------------------------------------- levels

def test_levels_events_waiters():
    t = LevelTable()
    seen = []
    got = []
    t.on_change(lambda peer, old, new, now: seen.append((old, new)))
    w = t.wait(P, AUTHENTICATED, 10000, lambda ok, lv: got.append((ok, lv)))
    w2 = t.wait(P, AUTHORIZED, 5000, lambda ok, lv: got.append((ok, lv)))
    assert t.next_deadline(0) == 5000
    assert t.set(P, ENCRYPTED, 1000) == [(P, CLEAR, ENCRYPTED)]
    assert t.set(P, ENCRYPTED, 1500) == []
    assert got == []
    t.set(P, AUTHENTICATED, 2000)
    assert got == [(True, AUTHENTICATED)] and w.ok
    assert t.tick(5000) == 1 and got[-1] == (False, AUTHENTICATED) and w2.ok is False
    assert t.drop(P, 6000) == [(P, AUTHENTICATED, CLEAR)] and t.level(P) == CLEAR
    assert seen == [(0, 1), (1, 2), (2, 0)]
    assert t.wait(P, CLEAR, None, lambda ok, lv: got.append((ok, lv))) is None
    assert got[-1] == (True, CLEAR) and t.waiting() == 0
