"""The user-space link emulator (host_tests/peers/linkem.py): netem's model between
two TUN devices in network namespaces (this kernel has no sch_netem).

The model is checked as a pure class (determinism, frequencies, netem's order of
decisions); the emulator end to end with numbered UDP datagrams both ways, judged
from what the receivers saw, and its counters checked against those observations.
"""

import json
import os
import statistics
import struct
import subprocess

import pytest

from host_tests.peers import linkem
from host_tests.peers import netns as nn
from host_tests.peers import require

# -- the model alone (no namespaces) ---------------------------------------------------

ISSUE = dict(loss=0.30, reorder=0.25, duplicate=0.10, delay=0.020)


def decisions(model, n, now=100.0):
    return [tuple(model.decide(now + i * 0.001)) for i in range(n)]


def test_same_seed_same_decisions_and_seeds_and_directions_differ():
    a1 = decisions(linkem.Model(seed=7, direction="a2b", **ISSUE), 5000)
    a2 = decisions(linkem.Model(seed=7, direction="a2b", **ISSUE), 5000)
    assert a1 == a2
    assert [bool(d) for d in a1] == [bool(d) for d in a2]          # the same drops
    assert decisions(linkem.Model(seed=8, direction="a2b", **ISSUE), 5000) != a1
    assert decisions(linkem.Model(seed=7, direction="b2a", **ISSUE), 5000) != a1


def test_frequencies_follow_netem_order_of_decisions():
    n = 200_000
    m = linkem.Model(seed=3, **ISSUE)
    copies = [m.decide(0.0) for _ in range(n)]
    exp = linkem.expected(**ISSUE)
    missing = sum(1 for c in copies if not c) / n
    twice = sum(1 for c in copies if len(c) == 2) / n
    assert abs(missing - exp["missing"]) < 0.005, missing            # 0.27, not 0.30
    assert abs(twice - exp["twice"]) < 0.003, twice                  # 0.049
    assert all(len(c) <= 2 for c in copies)
    sent = [x for c in copies for x in c]
    assert abs(len(sent) / n - exp["delivered"]) < 0.005
    assert abs(sum(1 for x in sent if x[1]) / len(sent) - 0.25) < 0.005
    # a clone is made when duplicated and not lost (7 %); drops are the missing originals
    # plus the clones lost in their own pass
    n_missing, n_twice = round(missing * n), round(twice * n)
    assert abs(m.counts["duplicated"] / n - 0.10 * 0.70) < 0.003
    assert m.counts["dropped"] == n_missing + (m.counts["duplicated"] - n_twice)
    # reordered copies leave at once, the others exactly `delay` later; clones flagged
    assert {x[0] for x in sent if x[1]} == {0.0}
    assert {x[0] for x in sent if not x[1]} == {0.020}
    assert sum(1 for c in copies if len(c) == 2 and c[1][2]) == sum(1 for c in copies if len(c) == 2)
    assert m.counts["in"] == n


def test_duplicated_and_lost_is_sent_once_as_in_the_kernel():
    # loss 1 with duplicate 1: count = 1 + 1 - 1 = 1, no clone
    m = linkem.Model(loss=1.0, duplicate=1.0, delay=0.01)
    assert [m.decide(5.0) for _ in range(3)] == [[(5.01, False, False)]] * 3
    assert m.counts["duplicated"] == 0 and m.counts["dropped"] == 0
    # duplicate 1 without loss: the clone is never duplicated again
    m = linkem.Model(duplicate=1.0)
    assert m.decide(1.0) == [(1.0, False, False), (1.0, False, True)]


def test_edges_and_jitter_and_runtime_change():
    m = linkem.Model(loss=1.0)
    assert all(m.decide(0.0) == [] for _ in range(100))
    m = linkem.Model(delay=0.05, jitter=0.01, seed=2)
    ts = [m.decide(10.0)[0][0] - 10.0 for _ in range(5000)]
    assert 0.04 <= min(ts) < 0.041 and 0.059 < max(ts) <= 0.06
    m.set(loss=1.0)                                      # blackhole at run time
    assert m.decide(0.0) == []
    with pytest.raises(ValueError):
        m.set(loss=1.5)
    with pytest.raises(ValueError):
        m.set(rate=1)
    with pytest.raises(ValueError):
        linkem.Model(delay=-1)


def test_delay_queue_orders_by_time_then_arrival_and_is_bounded():
    q = linkem.DelayQueue(limit=3)
    assert q.push(2.0, "c") and q.push(1.0, "a") and q.push(1.0, "b")
    assert not q.push(0.5, "overflow")
    assert q.next_time() == 1.0
    assert q.pop_due(0.9) == []
    assert q.pop_due(1.0) == ["a", "b"]
    assert q.pop_due(5.0) == ["c"] and q.next_time() is None


def test_flow_key():
    udp = struct.pack("!HHHH", 1234, 9002, 8, 0)
    v4 = bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0]) + bytes(8) + udp
    v6 = bytes([0x60, 0, 0, 0, 0, 8, 17, 64]) + bytes(32) + udp
    assert linkem.flow_key(v4) == linkem.flow_key(v6) == "udp:9002"
    frag = bytearray(v4)
    frag[6:8] = b"\x20\x00"                              # more fragments: not a whole datagram
    assert linkem.flow_key(bytes(frag)) == "other"
    assert linkem.flow_key(b"\x60" + bytes(50)) == "other"


# -- the emulator between two namespaces -----------------------------------------------

# Sends N numbered datagrams (seq, monotonic send time) paced at INTERVAL to the peer
# and records what arrives on its own port; CLOCK_MONOTONIC is shared by namespaces.
STREAM = r"""
import json, socket, struct, sys, threading, time
listen, lport, to, tport, n, interval, out = sys.argv[1:8]
lport, tport, n, interval = int(lport), int(tport), int(n), float(interval)
fam = lambda a: socket.AF_INET6 if ":" in a else socket.AF_INET
rx = socket.socket(fam(listen), socket.SOCK_DGRAM)
rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
rx.bind((listen, lport))
tx = socket.socket(fam(to), socket.SOCK_DGRAM)
print("ready", flush=True)
sys.stdin.readline()
done = []
def send():
    t0 = time.monotonic()
    for i in range(n):
        d = t0 + i * interval - time.monotonic()
        if d > 0:
            time.sleep(d)
        tx.sendto(struct.pack("!Id", i, time.monotonic()) + bytes(40), (to, tport))
    done.append(time.monotonic())
threading.Thread(target=send, daemon=True).start()
got = []
rx.settimeout(0.05)
last = time.monotonic()
while True:
    try:
        data = rx.recv(2000)
    except socket.timeout:
        if done and time.monotonic() - max(last, done[0]) > 0.6:
            break
        continue
    now = time.monotonic()
    last = now
    seq, sent = struct.unpack_from("!Id", data)
    got.append([seq, sent, now])
json.dump(got, open(out, "w"))
print("done", flush=True)
"""

N = 2000
INTERVAL = 0.001
PORT_A, PORT_B = 9001, 9002


@pytest.fixture
def need_netns():
    require(nn.can_use_netns())
    if not os.path.exists("/dev/net/tun"):
        require((False, "/dev/net/tun missing (the link emulator needs TUN devices)"))
    yield
    assert not nn.leftover_namespaces()


def exchange(net, tmp_path, n=N, interval=INTERVAL, tag="s"):
    """A (listening on its IPv6 address) and B (IPv4) each send n datagrams to the other
    at once: a2b travels over IPv4, b2a over IPv6.  Returns (arrivals at B = the a2b
    stream, arrivals at A = the b2a stream), each a list of [seq, sent, received]."""
    a, b = net.ns
    out_a, out_b = str(tmp_path / f"{tag}-at-a.json"), str(tmp_path / f"{tag}-at-b.json")
    pa = a.popen_python(["-c", STREAM, a.ip6, str(PORT_A), b.ip4, str(PORT_B), str(n), str(interval), out_a],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pb = b.popen_python(["-c", STREAM, b.ip4, str(PORT_B), a.ip6, str(PORT_A), str(n), str(interval), out_b],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    for p in (pa, pb):
        assert p.stdout.readline().strip() == "ready"
    for p in (pa, pb):
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in (pa, pb):
        assert p.stdout.readline().strip() == "done"
        assert p.wait(10) == 0
        p.stdin.close()
        p.stdout.close()
    return load(out_b), load(out_a)


def load(path):
    with open(path) as f:
        return json.load(f)


def observe(arrivals, n):
    """What a receiver can tell: missing, duplicates, overtakers (first copies that
    arrived before a lower-numbered first copy) and one-way delays."""
    first = {}
    for seq, sent, recv in arrivals:
        first.setdefault(seq, (sent, recv))
    order = sorted(first, key=lambda s: first[s][1])
    overtook = set()
    low = None
    for s in reversed(order):                 # a seq arriving before a lower one overtook
        if low is not None and s > low:
            overtook.add(s)
        low = s if low is None else min(low, s)
    delay = {s: first[s][1] - first[s][0] for s in first}
    return {"arrivals": len(arrivals), "unique": len(first), "missing": n - len(first),
            "dups": len(arrivals) - len(first), "overtook": overtook,
            "inversions": sum(1 for x, y in zip(order, order[1:]) if y < x),
            "delay_in_order": [delay[s] for s in first if s not in overtook],
            "delay_overtook": [delay[s] for s in overtook], "order": order}


def test_lossy_link_as_the_issue_describes_it(need_netns, tmp_path):
    exp = linkem.expected(**ISSUE)
    with linkem.LossyNet(seed=1, **ISSUE) as net:
        at_b, at_a = exchange(net, tmp_path)
        pid = net.emu.pid
    assert not os.path.exists("/proc/%d" % pid)          # the emulator was stopped and reaped
    stats = net.stats
    report = {}
    for direction, arrivals, port in (("a2b", at_b, PORT_B), ("b2a", at_a, PORT_A)):
        o = observe(arrivals, N)
        flow = stats[direction]["flows"]["udp:%d" % port]
        report[direction] = {k: v for k, v in o.items() if not isinstance(v, (list, set))}
        report[direction]["overtook"] = len(o["overtook"])
        report[direction]["counters"] = flow
        # what the receiver saw, against the model's expectations
        assert abs(o["missing"] / N - exp["missing"]) < 0.04, report      # ~27 %
        assert abs(o["dups"] / N - exp["twice"]) < 0.02, report           # ~4.9 % of sent
        assert o["dups"] > 0.03 * o["unique"], report
        assert o["inversions"] > 50, report
        assert 0.15 < len(o["overtook"]) / o["unique"] < 0.35, report
        med_in, med_over = statistics.median(o["delay_in_order"]), statistics.median(o["delay_overtook"])
        report[direction]["median_delay_ms"] = (round(med_in * 1000, 2), round(med_over * 1000, 2))
        assert 0.020 <= med_in < 0.040, report
        assert med_over < 0.010, report
        assert min(o["delay_in_order"]) > 0.0 and sorted(o["delay_in_order"])[len(o["delay_in_order"]) // 20] >= 0.0195, report
        # the emulator's counters agree with the receiver, packet for packet
        assert flow["in"] == N, report                  # nothing lost before the emulator
        assert flow["delivered"] == o["arrivals"], report
        assert flow["overflow"] == flow["write_errors"] == 0, report
        assert stats[direction]["queued"] == 0, report
        # kernel order: a packet goes missing only when its original was lost and no clone
        # was made; the rest of the drops are clones, and every surviving clone is a dup
        clone_drops = flow["dropped"] - o["missing"]
        assert 0 <= clone_drops <= flow["duplicated"], report
        assert o["dups"] == flow["duplicated"] - clone_drops, report
        assert abs(len(o["overtook"]) - flow["reordered"]) < 0.2 * flow["reordered"], report
        assert stats[direction]["flows"].keys() == {"udp:%d" % port}, stats[direction]["flows"]
    print(json.dumps(report, indent=1))


def test_clean_link_delivers_everything_once_in_order_and_blackhole_drops_all(need_netns, tmp_path):
    with linkem.LossyNet(delay=0.005, seed=1) as net:
        at_b, at_a = exchange(net, tmp_path, n=500, tag="clean")
        for arrivals in (at_b, at_a):
            assert [x[0] for x in arrivals] == list(range(500))
            delays = [r - s for _, s, r in arrivals]
            assert min(delays) >= 0.005 and statistics.median(delays) < 0.015
        c = net.counters()
        for d in ("a2b", "b2a"):
            assert c[d]["in"] == c[d]["delivered"] == 500, c[d]
            assert c[d]["dropped"] == c[d]["duplicated"] == c[d]["reordered"] == 0
        models = net.blackhole()
        assert models["a2b"]["loss"] == models["b2a"]["loss"] == 1.0
        at_b, at_a = exchange(net, tmp_path, n=50, tag="hole")
        assert at_b == [] and at_a == []
        assert net.blackhole(False)["a2b"]["loss"] == 0.0
        at_b, at_a = exchange(net, tmp_path, n=50, tag="back")
        assert len(at_b) == len(at_a) == 50
    for d in ("a2b", "b2a"):
        assert net.stats[d]["in"] == 600 and net.stats[d]["dropped"] == 50
        assert net.stats[d]["delivered"] == 550
