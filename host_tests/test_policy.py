"""SPD (first match, prefixes, fingerprints, ports, parse errors) and the decision point."""

import asyncio
import ipaddress

import pytest
from hypothesis import given, strategies as st

from pnpipsec import CLEAR, ENCRYPTED, AUTHENTICATED, AUTHORIZED, inet
from pnpipsec.policy import (Action, BYPASS, OPPORTUNISTIC, REQUIRE, Spd, DecisionPoint,
                             Decision, Request, parse_entry, IN, OUT)

FP_A = "ABCD-EFGH-IJKL-MNOP"
FP_B = "QRST-UVWX-YZ23-4567"


def a(text):
    return inet.pton(text)


def test_zero_config_is_opportunistic():
    spd = Spd()
    act = spd.match(a("2001:db8::1"), None, 7000, 7000)
    assert act.kind == OPPORTUNISTIC and act.level == CLEAR
    assert spd.match(a("10.0.0.1")).kind == OPPORTUNISTIC
    assert spd.sa_action(a("10.0.0.1")).kind == OPPORTUNISTIC


def test_first_match_wins_not_most_specific():
    spd = Spd.from_dicts([
        {"peer": "fd00::/16", "action": "bypass"},
        {"peer": "fd00::/64", "action": "require", "level": "authenticated"},
    ])
    # the /64 is more specific but comes second: first match wins
    assert spd.match(a("fd00::5")).kind == BYPASS
    spd2 = Spd.from_dicts([
        {"peer": "fd00::/64", "action": "require", "level": "authenticated"},
        {"peer": "fd00::/16", "action": "bypass"},
    ])
    act = spd2.match(a("fd00::5"))
    assert act.kind == REQUIRE and act.level == AUTHENTICATED
    assert spd2.match(a("fd00:0:0:1::5")).kind == BYPASS
    assert spd2.match(a("fe80::1")).kind == OPPORTUNISTIC   # default last


def test_prefixes_v4_v6_and_odd_lengths():
    spd = Spd.from_dicts([
        {"peer": "10.0.0.0/15", "action": "bypass"},
        {"peer": "2001:db8:ab80::/41", "action": "require"},
        {"peer": "192.0.2.7", "action": "require", "level": 3},
    ])
    assert spd.match(a("10.0.255.255")).kind == BYPASS
    assert spd.match(a("10.1.255.255")).kind == BYPASS
    assert spd.match(a("10.2.0.0")).kind == OPPORTUNISTIC
    assert spd.match(a("2001:db8:ab80::1")).level == ENCRYPTED
    assert spd.match(a("2001:db8:abff:ffff::1")).kind == REQUIRE
    assert spd.match(a("2001:db8:ab00::1")).kind == OPPORTUNISTIC
    assert spd.match(a("192.0.2.7")).level == AUTHORIZED
    assert spd.match(a("192.0.2.8")).kind == OPPORTUNISTIC
    # families never cross: a v4 prefix does not match a v6 address
    assert Spd.from_dicts([{"peer": "0.0.0.0/0", "action": "bypass"}]).match(a("::1")).kind \
        == OPPORTUNISTIC


@given(st.integers(0, 2 ** 128 - 1), st.integers(0, 2 ** 128 - 1), st.integers(0, 128))
def test_prefix_match_agrees_with_ipaddress_v6(net, addr, plen):
    netw = ipaddress.IPv6Network((net, plen), strict=False)
    spd = Spd.from_dicts([{"peer": str(netw), "action": "bypass"}])
    ad = ipaddress.IPv6Address(addr)
    assert (spd.match(ad.packed).kind == BYPASS) == (ad in netw)


@given(st.integers(0, 2 ** 32 - 1), st.integers(0, 2 ** 32 - 1), st.integers(0, 32))
def test_prefix_match_agrees_with_ipaddress_v4(net, addr, plen):
    netw = ipaddress.IPv4Network((net, plen), strict=False)
    spd = Spd.from_dicts([{"peer": str(netw), "action": "bypass"}])
    ad = ipaddress.IPv4Address(addr)
    assert (spd.match(ad.packed).kind == BYPASS) == (ad in netw)


def test_fingerprint_entries():
    spd = Spd.from_dicts([{"peer": "fp:" + FP_A.lower(), "action": "require",
                           "level": "authenticated"}])
    assert spd.match(a("::1"), FP_A).kind == REQUIRE
    assert spd.match(a("::1"), FP_A.replace("-", "")).kind == REQUIRE
    assert spd.match(a("::1"), FP_B).kind == OPPORTUNISTIC
    assert spd.match(a("::1"), None).kind == OPPORTUNISTIC   # key unknown yet


def test_ports_local_remote_either():
    spd = Spd.from_dicts([
        {"peer": "any", "port": 7000, "action": "require", "level": "authenticated"},
        {"peer": "any", "local_port": 53, "action": "bypass"},
        {"peer": "any", "remote_port": 123, "action": "bypass"},
    ])
    p = a("2001:db8::9")
    assert spd.match(p, None, 7000, 40000).kind == REQUIRE      # we serve 7000
    assert spd.match(p, None, 40000, 7000).kind == REQUIRE      # we talk to 7000
    assert spd.match(p, None, 53, 999).kind == BYPASS
    assert spd.match(p, None, 999, 53).kind == OPPORTUNISTIC     # local only
    assert spd.match(p, None, 999, 123).kind == BYPASS
    assert spd.match(p, None, 123, 999).kind == OPPORTUNISTIC
    # port-less question: port entries do not match
    assert spd.match(p).kind == OPPORTUNISTIC


def test_sa_action_strongest_reachable():
    spd = Spd.from_dicts([
        {"peer": "fd00::/64", "port": 7000, "action": "require", "level": "authenticated"},
        {"peer": "fd00::/64", "action": "bypass"},
        {"peer": "fd01::/64", "action": "bypass"},
        {"peer": "fd01::/64", "port": 7000, "action": "require"},   # unreachable: after catch-all
    ])
    act = spd.sa_action(a("fd00::1"))
    assert act.kind == REQUIRE and act.level == AUTHENTICATED
    assert spd.sa_action(a("fd01::1")).kind == BYPASS
    assert spd.sa_action(a("fd02::1")).kind == OPPORTUNISTIC
    dp = DecisionPoint(spd)
    d = dp.decide_local(Request(a("fd00::1")))
    assert d.accept and d.min_level == AUTHENTICATED and d.source == "local"
    assert not dp.decide_local(Request(a("fd01::1"))).accept
    assert dp.counters["accept"] == 1 and dp.counters["reject"] == 1


def test_with_min_tightens_never_loosens():
    opp = Action(OPPORTUNISTIC)
    assert opp.with_min(0) is opp
    t = opp.with_min(AUTHENTICATED)
    assert t.kind == REQUIRE and t.level == AUTHENTICATED
    assert Action(BYPASS).with_min(ENCRYPTED).kind == REQUIRE
    r = Action(REQUIRE, AUTHORIZED)
    assert r.with_min(ENCRYPTED) is r
    assert not t.allows_clear() and opp.allows_clear()


@pytest.mark.parametrize("d, field", [
    ({"action": "bypass"}, "peer"),
    ({"peer": "fd00::/129", "action": "bypass"}, "peer"),
    ({"peer": "fd00::1/64", "action": "bypass"}, "peer"),           # host bits set
    ({"peer": "not-an-address", "action": "bypass"}, "peer"),
    ({"peer": "fp:TOO-SHORT", "action": "bypass"}, "peer"),
    ({"peer": "fp:ABCD-EFGH-IJKL-MNO1", "action": "bypass"}, "peer"),  # 1 not base32
    ({"peer": 5, "action": "bypass"}, "peer"),
    ({"peer": "any", "port": 70000, "action": "bypass"}, "port"),
    ({"peer": "any", "port": "http", "action": "bypass"}, "port"),
    ({"peer": "any", "local_port": -1, "action": "bypass"}, "local_port"),
    ({"peer": "any", "remote_port": True, "action": "bypass"}, "remote_port"),
    ({"peer": "any", "port": 1, "local_port": 2, "action": "bypass"}, "port"),
    ({"peer": "any"}, "action"),
    ({"peer": "any", "action": "encrypt"}, "action"),
    ({"peer": "any", "action": "require", "level": "secret"}, "level"),
    ({"peer": "any", "action": "require", "level": "clear"}, "level"),
    ({"peer": "any", "action": "require", "level": 7}, "level"),
    ({"peer": "any", "action": "bypass", "level": "encrypted"}, "level"),
    ({"peer": "any", "acton": "bypass"}, "acton"),
])
def test_parse_errors_name_the_field(d, field):
    with pytest.raises(ValueError) as ei:
        parse_entry(d)
    assert str(ei.value).startswith(field + ":"), str(ei.value)
    with pytest.raises(ValueError) as ei:
        Spd.from_dicts([{"peer": "any", "action": "bypass"}, d])
    assert str(ei.value).startswith("spd[1]." + field + ":"), str(ei.value)


def test_default_from_dict_and_errors():
    spd = Spd.from_dicts([], default={"action": "require", "level": "encrypted"})
    assert spd.match(a("::1")).kind == REQUIRE
    assert Spd.from_dicts([], default="bypass").match(a("::1")).kind == BYPASS
    with pytest.raises(ValueError, match="^default.action:"):
        Spd.from_dicts([], default={"action": "nope"})


def test_add_entry_dynamically():
    spd = Spd()
    spd.add({"peer": "10.0.0.0/8", "action": "bypass"})
    assert spd.match(a("10.9.9.9")).kind == BYPASS
    spd.add({"peer": "10.9.0.0/16", "action": "require"}, 0)
    assert spd.match(a("10.9.9.9")).kind == REQUIRE


# ---------------------------------------------------------------- decision point

def run(coro):
    return asyncio.run(coro)


def test_remote_answer_wins_and_is_cached():
    calls = []

    async def ask(req):
        calls.append(req)
        return {"accept": True, "level": "authorized", "lifetime": 30}

    spd = Spd.from_dicts([{"peer": "any", "action": "require", "level": "authenticated"}])
    dp = DecisionPoint(spd, ask=ask, timeout=0.5, cache_lifetime=60)
    req = Request(a("fd00::1"), (11, b"peer"), "pubkey", FP_A, IN)
    d = run(dp.decide(req, 100000))
    assert d.accept and d.source == "remote" and d.level == AUTHORIZED
    assert d.min_level == AUTHENTICATED      # the local floor is kept
    d2 = run(dp.decide(req, 110000))
    assert d2.accept and d2.source == "cache" and len(calls) == 1
    # the server's lifetime (30) is shorter than cache_lifetime: expiry at 130
    d3 = run(dp.decide(req, 130000))
    assert d3.source == "remote" and len(calls) == 2
    # a different direction is a different question
    run(dp.decide(Request(a("fd00::1"), (11, b"peer"), "pubkey", FP_A, OUT), 131000))
    assert len(calls) == 3
    assert dp.counters["remote"] == 3 and dp.counters["cache_hit"] == 1


def test_remote_reject_overrides_local_accept():
    async def ask(req):
        return False
    dp = DecisionPoint(Spd(), ask=ask)
    d = run(dp.decide(Request(a("::1")), 0))
    assert not d.accept and d.source == "remote"


def test_remote_timeout_falls_back_to_local_and_caches():
    calls = []

    async def slow(req):
        calls.append(1)
        await asyncio.sleep(1.0)
        return {"accept": False}

    spd = Spd.from_dicts([{"peer": "fd00::/8", "action": "bypass"}])
    dp = DecisionPoint(spd, ask=slow, timeout=0.02, fallback_lifetime=10.0)
    d = run(dp.decide(Request(a("2001:db8::1")), 0))
    assert d.accept and d.source == "fallback"
    assert dp.counters["remote_timeout"] == 1
    d = run(dp.decide(Request(a("2001:db8::1")), 5000))
    assert d.accept and d.source == "cache" and len(calls) == 1
    d = run(dp.decide(Request(a("2001:db8::1")), 10000))      # fallback cache expired
    assert d.source == "fallback" and len(calls) == 2
    d = run(dp.decide(Request(a("fd00::1")), 10000))
    assert not d.accept and d.source == "fallback"          # local says bypass: no SA


def test_remote_error_and_garbage_fall_back():
    async def broken(req):
        raise OSError("unreachable")

    async def garbage(req):
        return {"level": 2}

    for ask in (broken, garbage):
        dp = DecisionPoint(Spd(), ask=ask, timeout=0.5)
        d = run(dp.decide(Request(a("::1")), 0))
        assert d.accept and d.source == "fallback"
        assert dp.counters["remote_error"] == 1


def test_cache_lifetime_and_bound():
    n = [0]

    async def ask(req):
        n[0] += 1
        return True
    dp = DecisionPoint(Spd(), ask=ask, cache_lifetime=5.0, cache_max=4)
    for i in range(10):
        run(dp.decide(Request(bytes([10, 0, 0, i])), i * 1000))
    assert len(dp._cache) <= 4 and n[0] == 10
    # sync path reads the cache
    d = dp.decide_now(Request(bytes([10, 0, 0, 9])), 10000)
    assert d.source == "cache"
    d = dp.decide_now(Request(bytes([10, 0, 0, 9])), 14000)
    assert d.source == "local"


def test_no_ask_is_local_even_async():
    dp = DecisionPoint()
    d = run(dp.decide(Request(a("::1")), 0))
    assert d.accept and d.source == "local"


def test_engine_policy_adapter():
    spd = Spd.from_dicts([{"peer": "192.0.2.0/24", "action": "bypass"}])
    dp = DecisionPoint(spd)
    pol = dp.engine_policy(lambda req, d: ("cfg", d.min_level), lambda: 0)
    assert pol(("192.0.2.1", 500), None, None) is None
    assert pol(("2001:db8::1", 500), None, "null") == ("cfg", CLEAR)


def test_decision_repr():
    assert "accept" in repr(Decision(True))


def test_cache_expiry_across_the_tick_wrap_and_tick_purges():
    from pnpipsec import ticks

    async def ask(req):
        return True
    dp = DecisionPoint(Spd(), ask=ask, cache_lifetime=5.0)
    t0 = ticks.MASK - 1000                  # expires 4 s after the wrap
    req = Request(bytes([10, 0, 0, 1]))
    assert run(dp.decide(req, t0)).source == "remote"
    assert dp.decide_now(req, ticks.add(t0, 4999)).source == "cache"
    assert dp.decide_now(req, ticks.add(t0, 5000)).source == "local"
    # an answer nobody asks for again is dropped by the timer's tick, so it can never
    # look fresh again when the ticks come round (2^30 ms later)
    run(dp.decide(req, t0))
    dp.tick(ticks.add(t0, 4999))
    assert len(dp._cache) == 1
    dp.tick(ticks.add(t0, 5000))
    assert len(dp._cache) == 0
