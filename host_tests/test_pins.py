"""Pin store: TOFU, changed key reported and not trusted, approval, persistence, limit."""

import os

import pytest
from hypothesis import given, settings, strategies as st

from pnp_hostboard.storage import DirStorage
from pnpipsec import pins
from pnpipsec.pins import PinStore, PinError

K1 = bytes(range(32))
K2 = bytes(range(1, 33))
K3 = bytes([7]) * 32


def test_tofu_then_match(tmp_path):
    ps = PinStore(DirStorage(str(tmp_path)))
    assert ps.observe(b"cam-1", K1, 0.0) == "new-pinned"
    assert ps.is_trusted(b"cam-1", K1)
    assert ps.state(b"cam-1") == "tofu"
    assert ps.observe(b"cam-1", K1, 1.0) == "match"
    assert ps.counters["writes"] == 1            # a match does not write


def test_changed_key_reported_not_trusted(tmp_path):
    ps = PinStore(DirStorage(str(tmp_path)))
    ps.observe(b"cam-1", K1, 0.0)
    assert ps.observe(b"cam-1", K2, 1.0) == "changed"
    assert not ps.is_trusted(b"cam-1", K2)
    assert ps.is_trusted(b"cam-1", K1)           # the old pin stands
    assert ps.state(b"cam-1") == "changed"
    assert ps.changes() == [(b"cam-1", K1, K2)]
    assert ps.observe(b"cam-1", K2, 2.0) == "changed"   # still not accepted by repetition
    assert ps.observe(b"cam-1", K1, 3.0) == "match"
    # the report survives a restart
    ps2 = PinStore(DirStorage(str(tmp_path)))
    assert ps2.changes() == [(b"cam-1", K1, K2)] and not ps2.is_trusted(b"cam-1", K2)


def test_approve_replaces_and_clears_report(tmp_path):
    ps = PinStore(DirStorage(str(tmp_path)))
    ps.observe(b"cam-1", K1, 0.0)
    ps.observe(b"cam-1", K2, 1.0)
    ps.approve(b"cam-1", K2)
    assert ps.is_trusted(b"cam-1", K2) and not ps.is_trusted(b"cam-1", K1)
    assert ps.state(b"cam-1") == "approved" and ps.changes() == []
    assert ps.observe(b"cam-1", K1, 2.0) == "changed"
    # approve before first sight
    ps.approve("display", K3)
    assert ps.observe(b"display", K3, 3.0) == "match"
    assert ps.get("display") == (K3, "approved", None)


def test_forget(tmp_path):
    ps = PinStore(DirStorage(str(tmp_path)))
    ps.observe(b"x", K1, 0)
    assert ps.forget(b"x") and not ps.forget(b"x")
    assert ps.observe(b"x", K2, 1) == "new-pinned"


def test_persistence_across_instances(tmp_path):
    ps = PinStore(DirStorage(str(tmp_path)))
    ps.observe(b"a", K1, 0)
    ps.approve(b"b", K2)
    ps.observe(b"c", K1, 0)
    ps.observe(b"c", K3, 0)
    ps2 = PinStore(DirStorage(str(tmp_path)))
    assert sorted(ps2.items()) == sorted(ps.items())
    assert ps2.get(b"c") == (K1, "changed", K3)


@pytest.mark.parametrize("damage", ["flip", "truncate", "magic", "empty", "badline"])
def test_corrupt_file_raises_and_is_left_intact(tmp_path, damage):
    st_ = DirStorage(str(tmp_path))
    ps = PinStore(st_)
    ps.observe(b"a", K1, 0)
    ps.observe(b"b", K2, 0)
    path = os.path.join(str(tmp_path), "pins")
    blob = open(path, "rb").read()
    if damage == "flip":
        i = blob.index(b"\n") + 5
        bad = blob[:i] + (b"0" if blob[i:i + 1] != b"0" else b"1") + blob[i + 1:]
    elif damage == "truncate":
        bad = blob[:len(blob) // 2]
    elif damage == "magic":
        bad = b"X" + blob[1:]
    elif damage == "empty":
        bad = b""
    else:
        body = blob[:blob.rfind(b"check ")] + b"zz yy t\n"
        bad = body + b"check " + pins._check(body) + b"\n"
    open(path, "wb").write(bad)
    with pytest.raises(PinError):
        PinStore(DirStorage(str(tmp_path)))
    assert open(path, "rb").read() == bad


def test_limit_evicts_least_recently_seen_tofu_pin_never_approved(tmp_path):
    ps = PinStore(DirStorage(str(tmp_path)), limit=3)
    for i in range(3):
        assert ps.observe(b"p%d" % i, K1, 0) == "new-pinned"
    assert ps.observe(b"p0", K1, 0) == "match"       # p0 seen again: p1 is now the stalest
    assert ps.observe(b"p9", K2, 0) == "new-pinned"  # a flood cannot lock new peers out
    assert len(ps) == 3 and ps.get(b"p1") is None and ps.is_trusted(b"p0", K1)
    assert ps.counters["evicted"] == 1
    for pid in (b"p0", b"p2", b"p9"):
        ps.approve(pid, K3)                          # the user's word is never evicted
    assert ps.observe(b"p5", K2, 0) == "full"
    assert not ps.is_trusted(b"p5", K2) and len(ps) == 3
    with pytest.raises(PinError):
        ps.approve(b"p5", K2)
    ps.forget(b"p2")
    assert ps.observe(b"p5", K2, 0) == "new-pinned"
    # a file holding more pins than the limit is refused, not truncated
    with pytest.raises(PinError):
        PinStore(DirStorage(str(tmp_path)), limit=2)


def test_bad_arguments(tmp_path):
    ps = PinStore(DirStorage(str(tmp_path)))
    with pytest.raises(ValueError):
        ps.observe(b"", K1, 0)
    with pytest.raises(ValueError):
        ps.observe(b"x" * 65, K1, 0)
    with pytest.raises(ValueError):
        ps.observe(b"x", K1[:31], 0)


class MemStorage:
    def __init__(self):
        self.d = {}

    def read(self, name):
        return self.d.get(name)

    def write(self, name, data):
        self.d[name] = bytes(data)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["obs", "approve", "forget"]),
                          st.sampled_from([b"a", b"b", b"c", b"d"]),
                          st.sampled_from([K1, K2, K3])), max_size=30))
def test_model_and_roundtrip(ops):
    """Against a dict model: trusted iff the pinned key; reload equals memory."""
    storage = MemStorage()
    ps = PinStore(storage, limit=3)
    model = {}
    approved = set()
    used = []                 # pids, least recently seen first
    for op, pid, key in ops:
        if op == "obs":
            v = ps.observe(pid, key, 0)
            if pid not in model:
                victims = [p for p in used if p in model and p not in approved]
                if len(model) >= 3 and not victims:
                    assert v == "full"
                else:
                    assert v == "new-pinned"
                    if len(model) >= 3:
                        del model[victims[0]]      # the least recently seen TOFU pin
                    model[pid] = key
            else:
                assert v == ("match" if model[pid] == key else "changed")
            if pid in model:
                used = [p for p in used if p != pid] + [pid]
        elif op == "approve":
            if pid not in model and len(model) >= 3:
                with pytest.raises(PinError):
                    ps.approve(pid, key)
            else:
                ps.approve(pid, key)
                model[pid] = key
                approved.add(pid)
        else:
            assert ps.forget(pid) == (pid in model)
            model.pop(pid, None)
            approved.discard(pid)
        for p in (b"a", b"b", b"c", b"d"):
            for k in (K1, K2, K3):
                assert ps.is_trusted(p, k) == (model.get(p) == k)
    if storage.read("pins") is not None:
        assert sorted(PinStore(storage, limit=3).items()) == sorted(ps.items())
