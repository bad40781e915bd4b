"""Discovery state machine: first datagram not held, bounded probing, legacy cache, sticky."""

import pytest
from hypothesis import given, settings, strategies as st

from pnpipsec import CLEAR, ENCRYPTED, AUTHENTICATED, AUTHORIZED
from pnpipsec import discovery as dm
from pnpipsec import ticks
from pnpipsec.discovery import Discovery, SEND_CLEAR, SEND_ESP, HOLD, FAIL
from pnpipsec.policy import Action, BYPASS, OPPORTUNISTIC, REQUIRE

OPP = Action(OPPORTUNISTIC)
BYP = Action(BYPASS)
REQ = Action(REQUIRE, ENCRYPTED)
REQ_AUTH = Action(REQUIRE, AUTHENTICATED)
P = b"\xfd" + bytes(14) + b"\x02"


def test_first_datagram_leaves_at_once_and_probe_starts_once():
    d = Discovery()
    assert d.on_send(P, OPP, CLEAR, 0) == (SEND_CLEAR, True, "")
    assert d.state(P) == dm.PROBING
    for t in (100, 500, 1000):
        assert d.on_send(P, OPP, CLEAR, t) == (SEND_CLEAR, False, "")
    assert d.counters["probes"] == 1
    d.probe_result(P, dm.OK, 1200)
    d.seen_level(P, ENCRYPTED, 1200)
    assert d.on_send(P, OPP, ENCRYPTED, 2000) == (SEND_ESP, False, "")
    assert d.state(P) == dm.IPSEC


def test_bypass_always_clear_no_probe():
    d = Discovery()
    d.seen_level(P, AUTHENTICATED, 0)
    assert d.on_send(P, BYP, AUTHENTICATED, 1000) == (SEND_CLEAR, False, "")
    assert d.counters["probes"] == 0


def test_legacy_after_timeout_and_unreachable():
    d = Discovery(probe_timeout=3.0, backoff_min=30.0)
    d.on_send(P, OPP, CLEAR, 0)
    assert d.next_deadline(0) == 3000 and d.next_deadline(1000) == 2000
    assert d.tick(2900) == []
    assert d.tick(3000) == [P]
    assert d.state(P, 3000) == dm.LEGACY and d.legacy_until(P) == 33000
    assert d.on_send(P, OPP, CLEAR, 10000) == (SEND_CLEAR, False, "")  # cached: no probe
    assert d.on_send(P, REQ, CLEAR, 10000) == (FAIL, False, "legacy")
    assert d.on_send(P, OPP, CLEAR, 33000) == (SEND_CLEAR, True, "")   # cache over: probe
    d.probe_result(P, dm.UNREACHABLE, 33100)                            # ICMP
    assert d.legacy_until(P) == 33100 + 60000
    assert d.counters["probe_unreachable"] == 1 and d.counters["probe_timeout"] == 1
    assert d.counters["legacy_marks"] == 2
    assert d.next_deadline(33100) is None


def test_backoff_doubles_to_cap():
    d = Discovery(backoff_min=30.0, backoff_max=3600.0)
    assert [d.backoff(n) for n in range(1, 10)] == \
        [30000, 60000, 120000, 240000, 480000, 960000, 1920000, 3600000, 3600000]
    d2 = Discovery(backoff_min=1.0, backoff_max=5.0)
    assert [d2.backoff(n) for n in range(1, 5)] == [1000, 2000, 4000, 5000]


def _bound(hour, timeout, bmin, bmax):
    """Most probes a legacy peer can see in `hour` ms: each costs timeout + backoff."""
    t, n, k = 0, 0, 1
    while t <= hour:
        n += 1
        t += timeout + min(bmax, bmin * 2 ** (k - 1))
        k += 1
    return n


@pytest.mark.parametrize("burst", [100, 3])
def test_negative_cache_bounds_probes_over_an_hour(burst):
    # burst 100: the negative cache alone; burst 3 (default): plus the per-window bound
    d = Discovery(probe_timeout=3.0, backoff_min=30.0, backoff_max=3600.0,
                  probe_burst=burst, probe_window=600.0)
    peers = [bytes([10, 0, 0, i]) for i in range(1, 5)]
    t = 0
    gaps = []
    last = {}
    while t <= 3600000:
        d.tick(t)
        for p in peers:
            what, probe, _ = d.on_send(p, OPP, CLEAR, t)
            assert what == SEND_CLEAR                 # a legacy peer is never held
            if probe:
                if p in last:
                    gaps.append(t - last[p])
                last[p] = t
            d.on_clear_inbound(p, OPP, t)             # chatty legacy peer answering in clear
        t += 500
    bound = _bound(3600000, 3000, 30000, 3600000)
    assert bound == 7
    assert d.counters["probes"] <= bound * len(peers)
    assert d.counters["legacy_marks"] == d.counters["probes"]
    if burst == 100:
        assert d.counters["probes"] == 7 * len(peers)
        # gaps between probes of one peer grow: timeout + 30, + 60, + 120 ...
        assert sorted(set(gaps)) == [33000, 63000, 123000, 243000, 483000, 963000]
    else:
        assert min(gaps) >= 33000


def test_rate_bound_when_peer_answers_but_sa_keeps_dying():
    d = Discovery(probe_burst=3, probe_window=600.0)
    t = 0
    n = 0
    while t < 1200000:
        what, probe, _ = d.on_send(P, OPP, CLEAR, t)
        if probe:
            n += 1
            d.probe_result(P, dm.OK, t + 100)        # answers, but the SA never sticks
        t += 1000
    assert n <= 3 * 2 + 1 and d.counters["rate_limited"] > 0


def test_require_holds_then_fails_for_legacy():
    d = Discovery(probe_timeout=2.0)
    assert d.on_send(P, REQ, CLEAR, 0) == (HOLD, True, "")
    assert d.on_send(P, REQ, CLEAR, 1000) == (HOLD, False, "probing")
    d.tick(2000)
    assert d.on_send(P, REQ, CLEAR, 3000) == (FAIL, False, "legacy")
    assert d.on_send(P, REQ_AUTH, ENCRYPTED, 3000) == (HOLD, False, "level")
    assert d.on_send(P, REQ_AUTH, AUTHENTICATED, 3000) == (SEND_ESP, False, "")
    assert d.on_send(P, REQ, AUTHORIZED, 3000) == (SEND_ESP, False, "")


def test_sticky_after_sa_loss():
    d = Discovery(probe_timeout=2.0, sticky_time=1000.0, backoff_min=30.0)
    d.on_send(P, OPP, CLEAR, 0)
    d.probe_result(P, dm.OK, 500)
    d.seen_level(P, ENCRYPTED, 500)
    # SA lost (the runtime now reports level CLEAR): hold and re-probe, never clear
    assert d.on_send(P, OPP, CLEAR, 100000) == (HOLD, True, "sticky")
    assert d.on_send(P, OPP, CLEAR, 101000) == (HOLD, False, "sticky")
    d.tick(102000)                                     # attacker blocks IKE
    assert d.on_send(P, OPP, CLEAR, 103000) == (FAIL, False, "sticky")
    d.probe_result(P, dm.UNREACHABLE, 103000)         # forged ICMP changes nothing
    t = 103000
    while t < 1000000:
        d.tick(t)
        what, probe, _ = d.on_send(P, OPP, CLEAR, t)
        assert what in (HOLD, FAIL)
        if probe:
            d.tick(t + 2000)
        t += 7000
    # memory over and the negative cache over: clear is allowed again
    t = 1000500 + 3600000
    assert d.on_send(P, OPP, CLEAR, t)[0] == SEND_CLEAR
    # inbound clear from a sticky peer is delivered (labelled CLEAR) and probes
    d2 = Discovery(sticky_time=1000.0)
    d2.seen_level(P, ENCRYPTED, 0)
    assert d2.on_clear_inbound(P, OPP, 5000) == (True, True)


def test_sticky_renews_and_policy_time():
    d = Discovery(sticky_time=10.0)
    d.seen_level(P, ENCRYPTED, 0, sticky_time=100.0)    # sticky_time: seconds
    assert d.is_sticky(P, 99000) and not d.is_sticky(P, 100000)
    d.seen_level(P, ENCRYPTED, 95000)                 # shorter renewal does not shorten
    assert d.is_sticky(P, 99000)
    d.seen_level(P, CLEAR, 200000)                    # CLEAR never makes sticky
    assert not d.is_sticky(P, 200000)


def test_clear_inbound():
    d = Discovery()
    assert d.on_clear_inbound(P, BYP, 0) == (True, False)
    assert d.on_clear_inbound(P, OPP, 0) == (True, True)
    assert d.on_clear_inbound(P, OPP, 100) == (True, False)     # already probing
    Q = b"\x0a\x00\x00\x09"
    assert d.on_clear_inbound(Q, REQ, 0) == (False, True)
    assert d.counters["refused_in"] == 1 and d.counters["delivered_clear"] == 3


def test_table_and_concurrency_bounds():
    d = Discovery(max_peers=4, max_probing=2)
    peers = [bytes([10, 0, 0, i]) for i in range(10)]
    started = [d.on_send(p, OPP, CLEAR, 0)[1] for p in peers]
    assert started.count(True) == 2                  # max_probing
    assert len(d.peers()) <= 4
    assert d.counters["rate_limited"] + d.counters["table_full"] == 8
    # REQUIRE with no way to probe fails clearly instead of waiting forever
    what, probe, why = d.on_send(bytes([10, 0, 0, 99]), REQ, CLEAR, 0)
    assert (what, probe) == (FAIL, False) and why in ("rate", "full")


def test_seen_level_from_peer_initiated_sa_clears_legacy():
    d = Discovery()
    d.on_send(P, OPP, CLEAR, 0)
    d.tick(10000)
    assert d.state(P, 10000) == dm.LEGACY
    d.seen_level(P, ENCRYPTED, 11000)
    assert d.state(P, 11000) == dm.IPSEC and d.legacy_until(P) is None
    d.forget(P)
    assert d.state(P) == dm.UNKNOWN


# ---------------------------------------------------------------- invariants

PEERS = [b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", P]
ACTIONS = [OPP, BYP, REQ, REQ_AUTH, Action(REQUIRE, AUTHORIZED)]
event = st.one_of(
    st.tuples(st.just("send"), st.sampled_from(PEERS), st.sampled_from(ACTIONS),
              st.sampled_from([CLEAR, ENCRYPTED, AUTHENTICATED, AUTHORIZED])),
    st.tuples(st.just("inbound"), st.sampled_from(PEERS), st.sampled_from(ACTIONS), st.just(0)),
    st.tuples(st.just("result"), st.sampled_from(PEERS),
              st.sampled_from([dm.OK, dm.TIMEOUT, dm.UNREACHABLE]), st.just(0)),
    st.tuples(st.just("seen"), st.sampled_from(PEERS),
              st.sampled_from([CLEAR, ENCRYPTED, AUTHENTICATED]), st.just(0)),
    st.tuples(st.just("forget"), st.sampled_from(PEERS), st.just(None), st.just(0)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(event, st.integers(0, 400000)), max_size=60))
def test_invariants_over_random_events(events):
    """REQUIRE never sends clear; a sticky peer never gets clear unless BYPASS; ESP only
    when the SA level suffices; probes never exceed the burst bound; counters add up."""
    d = Discovery(probe_timeout=3.0, backoff_min=30.0, sticky_time=500.0,
                  probe_burst=3, probe_window=600.0, max_probing=2, max_peers=2)
    # ms ticks starting 3 s before the wrap, so deadlines and windows straddle it
    t = ticks.MASK - 3000
    probe_times = {}
    sends = 0
    for (kind, peer, x, lv), dt in events:
        t = ticks.add(t, dt)
        d.tick(t)
        if kind == "send":
            sticky = d.is_sticky(peer, t)
            what, probe, why = d.on_send(peer, x, lv, t)
            sends += 1
            if x.kind == REQUIRE:
                assert what != SEND_CLEAR
                if what == SEND_ESP:
                    assert lv >= x.level
            if sticky and x.kind != BYPASS:
                assert what != SEND_CLEAR
            if x.kind == BYPASS:
                assert what == SEND_CLEAR and not probe
            if what == SEND_ESP:
                assert lv >= ENCRYPTED
            if probe:
                assert what in (SEND_CLEAR, HOLD)
                probe_times.setdefault(peer, []).append(t)
        elif kind == "inbound":
            deliver, probe = d.on_clear_inbound(peer, x, t)
            if x.kind == REQUIRE:
                assert not deliver
            if probe:
                probe_times.setdefault(peer, []).append(t)
        elif kind == "result":
            d.probe_result(peer, x, t)
        elif kind == "seen":
            d.seen_level(peer, x, t)
        else:
            d.forget(peer)
        assert 0 <= d._probing <= 2
        # every probe running ends within probe_timeout of now (also across the wrap)
        nd = d.next_deadline(t)
        assert nd is None or 0 < nd <= 3000
    t = ticks.add(t, 3000)
    d.tick(t)
    assert d.next_deadline(t) is None and d._probing == 0
    c = d.counters
    assert c["send_clear"] + c["send_esp"] + c["held"] + c["refused"] == sends
    for p in probe_times:
        ts = probe_times[p]
        for i in range(len(ts)):
            window = [x for x in ts if 0 <= ticks.diff(x, ts[i]) < 600000]
            # forget() drops the per-peer history, so only check without forgets
            if not any(e[0][0] == "forget" for e in events):
                assert len(window) <= 3
