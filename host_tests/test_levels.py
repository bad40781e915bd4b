"""Level table: change events and callbacks, waiters with deadlines, downgrade on SA loss."""

import asyncio

from hypothesis import given, settings, strategies as st

from pnpipsec import CLEAR, ENCRYPTED, AUTHENTICATED, AUTHORIZED
from pnpipsec import ticks
from pnpipsec.levels import LevelTable

P = b"\x0a\x00\x00\x02"
Q = b"\x0a\x00\x00\x03"


def test_set_returns_events_and_calls_back():
    t = LevelTable()
    seen = []
    t.on_change(lambda peer, old, new, now: seen.append((peer, old, new, now)))
    assert t.level(P) == CLEAR and t.since(P) is None
    assert t.set(P, ENCRYPTED, 1000) == [(P, CLEAR, ENCRYPTED)]
    assert t.set(P, ENCRYPTED, 2000) == []                  # unchanged: no event
    assert t.since(P) == 1000
    assert t.set(P, AUTHENTICATED, 3000) == [(P, ENCRYPTED, AUTHENTICATED)]
    assert t.drop(P, 4000) == [(P, AUTHENTICATED, CLEAR)]   # SA gone
    assert t.level(P) == CLEAR and t.peers() == []
    assert seen == [(P, 0, 1, 1000), (P, 1, 2, 3000), (P, 2, 0, 4000)]
    assert t.counters["up"] == 2 and t.counters["down"] == 1


def test_off_change_and_bad_callback():
    t = LevelTable()
    calls = []

    def bad(*a):
        raise RuntimeError("app bug")
    t.on_change(bad)
    h = t.on_change(lambda *a: calls.append(a))
    t.set(P, ENCRYPTED, 0)
    assert len(calls) == 1 and t.counters["callback_errors"] == 1
    t.off_change(h)
    t.set(P, CLEAR, 1)
    assert len(calls) == 1


def test_wait_immediate_upgrade_and_deadline():
    t = LevelTable()
    got = []
    t.set(Q, AUTHENTICATED, 0)
    assert t.wait(Q, ENCRYPTED, 5000, lambda ok, lv: got.append(("q", ok, lv))) is None
    w1 = t.wait(P, AUTHENTICATED, 10000, lambda ok, lv: got.append(("a", ok, lv)))
    w2 = t.wait(P, ENCRYPTED, None, lambda ok, lv: got.append(("e", ok, lv)))
    w3 = t.wait(P, AUTHORIZED, 10000, lambda ok, lv: got.append(("z", ok, lv)))
    assert t.next_deadline(0) == 10000 and t.next_deadline(400) == 9600 and t.waiting() == 3
    t.set(P, ENCRYPTED, 1000)
    assert got == [("q", True, AUTHENTICATED), ("e", True, ENCRYPTED)]
    t.drop(P, 2000)                                          # downgrade does not fail waiters
    t.set(P, AUTHENTICATED, 3000)
    assert got[-1] == ("a", True, AUTHENTICATED) and w1.ok and w2.ok
    assert t.tick(9900) == 0
    assert t.tick(10000) == 1
    assert got[-1] == ("z", False, AUTHENTICATED) and w3.ok is False
    assert t.waiting() == 0 and t.next_deadline(10000) is None
    assert t.counters["waits_ok"] == 3 and t.counters["waits_timeout"] == 1


def test_cancel():
    t = LevelTable()
    got = []
    w = t.wait(P, ENCRYPTED, 1000, lambda ok, lv: got.append(ok))
    t.cancel(w)
    t.cancel(w)
    t.cancel(None)
    t.set(P, ENCRYPTED, 500)
    t.tick(2000)
    assert got == [] and t.waiting() == 0


def test_asyncio_wrapper_shape():
    """The way the runtime wraps a waiter: an Event set by the callback."""
    async def main():
        t = LevelTable()
        ev = asyncio.Event()
        box = []
        t.wait(P, AUTHENTICATED, 5000, lambda ok, lv: (box.append((ok, lv)), ev.set()))

        async def sa_comes_up():
            await asyncio.sleep(0.01)
            t.set(P, ENCRYPTED, 10)
            await asyncio.sleep(0.01)
            t.set(P, AUTHENTICATED, 20)
        task = asyncio.create_task(sa_comes_up())
        await asyncio.wait_for(ev.wait(), 1.0)
        await task
        return box
    box = asyncio.run(main())
    assert box == [(True, AUTHENTICATED)]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["set", "wait", "tick"]),
                          st.sampled_from([P, Q]), st.integers(0, 3),
                          st.integers(0, 5000)), max_size=40))
def test_every_waiter_fires_once_with_right_answer(ops):
    # ms ticks starting 3 s before the wrap, so deadlines straddle it
    t = LevelTable()
    now = ticks.MASK - 3000
    fired = {}
    waiters = []
    for op, peer, lv, dt in ops:
        now = ticks.add(now, dt)
        if op == "set":
            t.set(peer, lv, now)
        elif op == "wait":
            i = len(waiters)

            def cb(ok, level, i=i, peer=peer, lv=lv):
                assert i not in fired
                fired[i] = (ok, level)
                if ok:
                    assert level >= lv and t.level(peer) == level
            waiters.append(t.wait(peer, lv, ticks.add(now, 2000), cb))
            # an already reached level answers at once
            assert (i in fired) == (t.level(peer) >= lv)
        else:
            t.tick(now)
    t.tick(ticks.add(now, 10000))
    assert len(fired) == len(waiters) and t.waiting() == 0
