"""Hostile MOBIKE on a real link (issue 12, item 6): a spoofed UPDATE_SA_ADDRESSES and
a spoofed source address after a move are refused, and counted.

Three network namespaces on one bridge: our node A (``host_tests/ctlnode.py``: the real
Node on the host board, zero configuration, NULL auth lifted by the proof) is the
original initiator of a MOBIKE SA with our node B; M is an attacker on the same link.
Both nodes protect the app port under an SPD ``require`` entry. M gets the genuine
packets it needs the way an on-link attacker does: it poisons A's neighbour entry for B
(``ip neigh replace`` in A's namespace stands in for the ARP spoof), so A's frames for
B reach M, where tcpdump records them and nothing forwards them: B never sees them. M
then sends what it holds from its own UDP socket on port 4500.

1. Forged UPDATE_SA_ADDRESSES for the live SA (its SPIs and message ID) from M's
   address without the keys: the captured UPDATE with a flipped ICV or ciphertext
   byte, a random body, a clear (no SK) N(UPDATE_SA_ADDRESSES). B drops every one by
   the engine's drop counters, answers none, starts no check, moves nothing.
2. The genuine UPDATE A sent (withheld from B, so B has not seen its message ID)
   delivered from M's address: its ICV checks, so B answers it there and checks
   return routability with a fresh COOKIE2 to M; M cannot answer it (it reflects the
   check with the response flag set: a forged answer, drop_icv), so after 3 sends the
   check goes to A's proven address ("rr_failed"); the SA stays there and traffic
   flows. Replayed once more after B processed it: the cached answer, no new check.
3. A really moves (new address, the old one removed, UPDATE_SA_ADDRESSES); B checks
   and follows. M takes A's old address (and B's neighbour entry for it) and sends from
   it: A's genuine ESP packets it withheld (fresh sequence numbers, valid ICV), one of
   them twice, and a genuine fresh UPDATE of A's it withheld. B checks the old address
   and gets no valid answer ("rr_failed"), the SA stays at A's new address, the
   withheld datagrams are delivered labelled with A's current address (never the old
   one: "esp_src_kept"), no ESP goes to the old address.
A tcpdump on the bridge sees no clear datagram on the protected port in the whole run.
"""

import json
import random
import struct
import subprocess
import time

import pytest

from host_tests.ctlnode import CtlNode
from host_tests.peers import capture as cap
from host_tests.peers import netns as nn
from host_tests.peers import require_real_peers

APP = 7000
NATT = 4500
NET_ID = 121
RR_TRIES = 3        # x_mobike.RR_TRIES
SPD = [{"peer": "any", "port": APP, "action": "require", "level": "encrypted"}]

# M's tool: send datagrams (hex, one a line in a file) from (src, 4500) to dst:4500, then
# listen `wait` s and report what arrived. With reflect, every IKE request that comes
# in goes back with the I and R flags set: a forged "answer" (M has no keys).
ATTACKER = r"""
import json, socket, sys, time
src, dst, wait, reflect, path = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1", sys.argv[5]
pkts = [bytes.fromhex(l) for l in open(path).read().split()]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 4500))
s.settimeout(0.02)
for p in pkts:
    s.sendto(p, (dst, 4500))
    time.sleep(0.02)
print("sent", flush=True)
got, back = [], 0
end = time.monotonic() + wait
while time.monotonic() < end:
    try:
        d, a = s.recvfrom(65535)
    except socket.timeout:
        continue
    got.append([d.hex(), a[0], a[1]])
    if reflect and len(d) >= 32 and d[:4] == bytes(4) and not d[4 + 19] & 0x20:
        f = bytearray(d)
        f[4 + 19] |= 0x28
        s.sendto(bytes(f), a)
        back += 1
print(json.dumps({"got": got, "reflected": back}), flush=True)
"""


def ike_hdr(p):
    """(exchange, flags, mid) of a UDP payload on 4500 carrying IKE (marker), else None."""
    if len(p) < 32 or p[:4] != bytes(4):
        return None
    return p[4 + 18], p[4 + 19], struct.unpack_from("!I", p, 4 + 20)[0]


def flip(p, i):
    b = bytearray(p)
    b[i] ^= 0x01
    return bytes(b)


def engine_drops(st):
    return sum(v for k, v in st["engine"].items() if k.startswith("drop_"))


def d(st, base, key, part="engine"):
    return st[part].get(key, 0) - base[part].get(key, 0)


def wait_for(pred, timeout, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


class World:
    def __init__(self, net, tmp):
        self.net = net
        self.tmp = tmp
        self.a, self.b, self.m = net.ns
        self.old = self.a.ip4
        self.new = "10.99.%d.11" % NET_ID
        self.mac_b = net.mac(self.b)
        self.mac_m = net.mac(self.m)
        self.n = 0
        # deleting the primary IPv4 address must not take the new one with it
        self.a.run(["sysctl", "-qw", "net.ipv4.conf.veth0.promote_secondaries=1"])
        base = {"keepalive": 0, "spd": SPD, "endpoints": [APP]}
        # B's requests (the return-routability check) retransmit fast: 0.25, 0.5, 1 s
        self.B = CtlNode(self.b, dict(base, state=str(tmp / "b"), retransmit_base=0.25,
                                      retransmit_max=1.0, retransmit_tries=8), str(tmp / "b.err"))
        self.A = CtlNode(self.a, dict(base, state=str(tmp / "a")), str(tmp / "a.err"))

    def sa_b(self):
        sas = [s for s in self.B.call("ike")["sas"] if s["state"] == "established"]
        assert len(sas) == 1, sas
        return sas[0]

    def send_ab(self, tag):
        self.n += 1
        r = self.A.call("send", host=self.b.ip4, port=APP, data=(b"%s %d" % (tag, self.n)).hex(), timeout=3)
        assert r.get("level", 0) >= 1, r
        return b"%s %d" % (tag, self.n)

    def flows(self, tag, a_host):
        """A -> B and B -> A (to a_host) both arrive: [the datagram B got, the one A got]."""
        want = self.send_ab(tag)
        got = wait_for(lambda: [x for x in self.B.call("delivered")["items"] if bytes.fromhex(x[0]) == want], 3)
        back = b"back " + want
        r = self.B.call("send", host=a_host, port=APP, data=back.hex(), timeout=3)
        assert r.get("level", 0) >= 1, r
        got_a = wait_for(lambda: [x for x in self.A.call("delivered")["items"] if bytes.fromhex(x[0]) == back], 3)
        return got, got_a

    def poison(self):
        self.a.run(["ip", "neigh", "replace", self.b.ip4, "lladdr", self.mac_m, "dev", "veth0", "nud", "permanent"])

    def unpoison(self):
        self.a.run(["ip", "neigh", "replace", self.b.ip4, "lladdr", self.mac_b, "dev", "veth0", "nud", "permanent"])

    def steal(self, name, trigger, datagrams=0):
        """A's frames for B go to M while trigger() runs (and `datagrams` app datagrams
        are sent); M's tcpdump records them. Returns (the first IKE request: the
        UPDATE, [ESP packets], the datagrams). A stays poisoned: call unpoison()."""
        pcap = str(self.tmp / ("steal-%s.pcap" % name))
        self.poison()
        c = cap.Capture(self.m, "veth0", "udp and dst host %s and dst port %d" % (self.b.ip4, NATT), pcap).start()
        try:
            told = trigger()
            sent = [self.send_ab(b"withheld-" + name.encode()) for _ in range(datagrams)]
            time.sleep(0.3)
        finally:
            c.stop()
        rows = cap.tshark_fields(pcap, ["udp.payload"])
        wire = [bytes.fromhex(r[0].replace(":", "")) for r in rows if r and r[0]]
        reqs = [p for p in wire if ike_hdr(p) and ike_hdr(p)[0] == 37 and not ike_hdr(p)[1] & 0x20]
        esp = []
        for p in wire:
            if len(p) > 8 and p[:4] != bytes(4) and p not in esp:
                esp.append(p)
        assert reqs, ("no UPDATE captured", told, [p[:8].hex() for p in wire])
        return reqs[0], esp, sent

    def attack(self, src, pkts, wait, reflect, name, on_sent=None):
        path = str(self.tmp / ("m-%s.hex" % name))
        with open(path, "w") as f:
            f.write("\n".join(p.hex() for p in pkts) + "\n")
        p = self.m.popen_python(["-c", ATTACKER, src, self.b.ip4, str(wait), "1" if reflect else "0", path],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = p.stdout.readline().strip()
        assert line == "sent", (line, p.stderr.read())
        if on_sent is not None:
            on_sent()
        out, err = p.communicate(timeout=wait + 10)
        res = json.loads(out.strip().splitlines()[-1])
        res["got"] = [(bytes.fromhex(h), a, port) for h, a, port in res["got"]]
        return res


def run_scenario(tmp):
    obs = {}
    with nn.Netns(3, net_id=NET_ID) as net:
        hub = net.hub
        whole = str(tmp / "bridge.pcap")
        bridge = cap.Capture(hub, "any", "udp", whole, snaplen=96).start()
        w = None
        try:
            w = World(net, tmp)
            a, b, m = w.a, w.b, w.m
            assert w.A.call("connect", host=b.ip4, timeout=5).get("level", 0) >= 1
            assert w.A.call("wait_level", host=b.ip4, level=2, timeout=5).get("level") == 2
            time.sleep(0.3)             # the proofs' INFORMATIONAL exchanges are done
            sa0 = w.sa_b()
            assert sa0["mobike"] and not sa0["initiator"], sa0
            assert sa0["peer_addr"] == [w.old, NATT], sa0
            got, got_a = w.flows(b"before", w.old)
            assert got and got_a, "no traffic before the attacks"

            # -- 1 and 2: A's UPDATE (it believes its addresses changed) never reaches B
            base1 = w.B.call("status")
            upd, _, _ = w.steal("upd1", lambda: w.A.call("addresses", addrs=[w.old])["told"])
            rng = random.Random(12)
            hdr = upd[:4 + 28]
            plain = upd[4:4 + 16] + bytes([41, 0x20, 37, 0x08]) + upd[4 + 20:4 + 24] + \
                struct.pack("!I", 36) + struct.pack("!BBHBBH", 0, 0, 8, 0, 0, 16400)
            forged = [flip(upd, len(upd) - 1),              # the ICV
                      flip(upd, 4 + 28 + 4 + 20),           # ciphertext (inside the SK payload)
                      hdr + bytes(rng.getrandbits(8) for _ in range(len(upd) - len(hdr))),
                      bytes(4) + plain]                     # N(UPDATE_SA_ADDRESSES) in clear
            r1 = w.attack(m.ip4, forged, 1.0, False, "forged")
            st1 = w.B.call("status")
            obs["forged"] = {"n": len(forged), "drops": engine_drops(st1) - engine_drops(base1),
                             "drop_icv": d(st1, base1, "drop_icv"),
                             "mobike_update": d(st1, base1, "mobike_update"),
                             "rr_sent": d(st1, base1, "rr_sent"), "moved": d(st1, base1, "moved"),
                             "m_got": len(r1["got"]), "peer_addr": w.sa_b()["peer_addr"]}

            # 2: the genuine UPDATE, never seen by B, from M's address
            base2 = st1
            r2 = w.attack(m.ip4, [upd], 3.5, True, "replay", on_sent=w.unpoison)
            wait_for(lambda: d(w.B.call("status"), base2, "rr_failed") >= 1, 6)
            time.sleep(0.5)
            st2 = w.B.call("status")
            sa2 = w.sa_b()
            got2, got2a = w.flows(b"after-replay", w.old)
            r2b = w.attack(m.ip4, [upd], 1.0, False, "replay-again")
            st2b = w.B.call("status")
            ike_in = [ike_hdr(p) for p, _, _ in r2["got"]]
            obs["replay"] = {"mobike_update": d(st2, base2, "mobike_update"),
                             "rr_sent": d(st2, base2, "rr_sent"), "rr_failed": d(st2, base2, "rr_failed"),
                             "moved": d(st2, base2, "moved"), "drop_icv": d(st2, base2, "drop_icv"),
                             "reflected": r2["reflected"],
                             "m_requests": len([h for h in ike_in if h and not h[1] & 0x20]),
                             "m_answers": len([h for h in ike_in if h and h[1] & 0x20]),
                             "m_esp": len([1 for h in ike_in if h is None]),
                             "peer_addr": sa2["peer_addr"], "spis": (sa2["spi_i"], sa2["spi_r"]),
                             "spis0": (sa0["spi_i"], sa0["spi_r"]), "flows": bool(got2 and got2a),
                             "again_replay": d(st2b, st2, "replay"), "again_rr_sent": d(st2b, st2, "rr_sent"),
                             "again_moved": d(st2b, st2, "moved"), "again_peer": w.sa_b()["peer_addr"],
                             "again_m_got": len(r2b["got"])}

            # -- 3: A really moves; then M sends from A's old address
            base3 = w.B.call("status")
            a.run(["ip", "addr", "add", w.new + "/24", "dev", "veth0"])
            a.run(["ip", "addr", "del", w.old + "/24", "dev", "veth0"])
            assert w.A.call("addresses", addrs=[w.new])["told"] == 1
            assert wait_for(lambda: w.sa_b()["peer_addr"] == [w.new, NATT], 6), w.sa_b()
            st3a = w.B.call("status")
            got3, got3a = w.flows(b"after-move", w.old)
            moved_label = got3[0][1] if got3 else None
            m.run(["ip", "addr", "add", w.old + "/24", "dev", "veth0"])
            b.run(["ip", "neigh", "replace", w.old, "lladdr", w.mac_m, "dev", "veth0", "nud", "permanent"])
            n_before = len(w.B.call("delivered")["items"])
            base3b = w.B.call("status")
            upd2, esp2, withheld = w.steal("upd2", lambda: w.A.call("addresses", addrs=[w.new, a.ip6])["told"],
                                           datagrams=3)
            assert len(esp2) == 3, [p[:8].hex() for p in esp2]
            r3 = w.attack(w.old, esp2 + [esp2[0], upd2], 3.5, True, "old-source", on_sent=w.unpoison)
            wait_for(lambda: d(w.B.call("status"), base3b, "rr_failed") >= 1, 6)
            time.sleep(0.5)
            st3 = w.B.call("status")
            sa3 = w.sa_b()
            items = w.B.call("delivered")["items"]
            late = items[n_before:]
            got4, got4a = w.flows(b"after-spoof", w.new)
            ike3 = [ike_hdr(p) for p, _, _ in r3["got"]]
            obs["old_source"] = {
                "moved_by_genuine": d(st3a, base3, "moved"), "label_after_move": moved_label,
                "peer_addr": sa3["peer_addr"], "moved": d(st3, base3b, "moved"),
                "rr_sent": d(st3, base3b, "rr_sent"), "rr_failed": d(st3, base3b, "rr_failed"),
                "mobike_update": d(st3, base3b, "mobike_update"),
                "esp_src_kept": d(st3, base3b, "esp_src_kept", "node"),
                "esp_in": d(st3, base3b, "esp_in", "node"), "esp_drop": d(st3, base3b, "esp_drop", "node"),
                "withheld": [x.decode() for x in withheld],
                "late": [(bytes.fromhex(x[0]).decode(), x[1]) for x in late],
                "m_esp": len([1 for h in ike3 if h is None]),
                "m_requests": len([h for h in ike3 if h and not h[1] & 0x20]),
                "reflected": r3["reflected"], "flows": bool(got4 and got4a),
                "spis": (sa3["spi_i"], sa3["spi_r"]), "spis0": (sa0["spi_i"], sa0["spi_r"]),
                "labels_all": sorted(set(x[1] for x in w.B.call("delivered")["items"]))}
            obs["end"] = {"b": w.B.call("status"), "a": w.A.call("status")}
        finally:
            for n in (getattr(w, "A", None), getattr(w, "B", None)):   # (w None: getattr -> None)
                if n is not None:
                    n.stop()
            bridge.stop()
        rows = cap.tshark_fields(whole, ["udp.srcport", "udp.dstport"])
        obs["clear_app"] = len([r for r in rows if str(APP) in (r[0], r[1])])
        obs["udp_rows"] = len(rows)
        obs["addrs"] = {"old": w.old, "new": w.new, "m": w.m.ip4}
    obs["leftover"] = nn.leftover_namespaces()
    return obs


@pytest.fixture(scope="module")
def obs(tmp_path_factory):
    require_real_peers(charon=False, capture=True)
    t0 = time.monotonic()
    o = run_scenario(tmp_path_factory.mktemp("hostile_mobike"))
    o["secs"] = time.monotonic() - t0
    print("\n[hostile mobike] %.1f s: %s" % (o["secs"], json.dumps({k: v for k, v in o.items() if k != "end"})))
    return o


def test_forged_update_dropped(obs):
    f = obs["forged"]
    # every forgery dropped by the engine (ICV, or no SK payload), none answered
    assert f["drops"] == f["n"] and f["drop_icv"] >= 2, f
    assert f["mobike_update"] == 0 and f["rr_sent"] == 0 and f["moved"] == 0, f
    assert f["m_got"] == 0, f
    assert f["peer_addr"] == [obs["addrs"]["old"], NATT], f


def test_replayed_update_fails_return_routability(obs):
    r = obs["replay"]
    assert r["mobike_update"] == 1 and r["rr_sent"] >= 1, r
    assert r["rr_failed"] == 1 and r["moved"] == 0, r
    # M got B's answer and the check, RR_TRIES times; its reflected "answers" are dropped
    assert r["m_answers"] >= 1 and r["m_requests"] == RR_TRIES and r["m_esp"] == 0, r
    assert r["reflected"] == RR_TRIES and r["drop_icv"] >= RR_TRIES, r
    assert r["peer_addr"] == [obs["addrs"]["old"], NATT] and r["spis"] == r["spis0"], r
    assert r["flows"], r
    # replayed again once B processed it: the cached answer, nothing checked or moved
    assert r["again_replay"] >= 1 and r["again_rr_sent"] == 0 and r["again_moved"] == 0, r
    assert r["again_peer"] == [obs["addrs"]["old"], NATT], r


def test_spoofed_old_source_after_move(obs):
    o = obs["old_source"]
    old, new = obs["addrs"]["old"], obs["addrs"]["new"]
    assert o["moved_by_genuine"] == 1 and o["label_after_move"] == new, o
    # the fresh UPDATE from the old address: checked there, refused, the SA stays
    assert o["mobike_update"] == 1 and o["rr_failed"] == 1 and o["moved"] == 0, o
    assert o["peer_addr"] == [new, NATT] and o["spis"] == o["spis0"], o
    assert o["m_requests"] == RR_TRIES and o["reflected"] == RR_TRIES, o
    # the withheld ESP: accepted once (genuine), never followed to the old address
    assert o["esp_in"] == 3 and o["esp_drop"] == 1 and o["esp_src_kept"] == 3, o
    assert sorted(x for x, _ in o["late"]) == sorted(o["withheld"]), o
    assert all(h == new for _, h in o["late"]), o
    assert o["m_esp"] == 0, o                    # no ESP went to the old address
    assert o["flows"], o


def test_no_clear_datagram_and_clean_exit(obs):
    assert obs["udp_rows"] > 0 and obs["clear_app"] == 0, obs["clear_app"]
    b = obs["end"]["b"]
    assert b["node"].get("clear_in", 0) == 0, b["node"]
    assert obs["leftover"] == []
    assert obs["secs"] < 60, obs["secs"]
