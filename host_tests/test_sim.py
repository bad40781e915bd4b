"""`pnp sim`, the demo: run it as a user would (a subprocess) and judge what it claims.

One JSON run (6 s) and one live-table run (3 s) in the same output folder; the JSON is
checked against the scenario's expectations, the pcap is parsed here (not with the
writer's own reader) and judged by tshark with the key log the sim wrote (every ESP
ICV good, every IKE message, IKE_AUTH included, decrypted with a correct checksum).
"""

import json
import os
import shutil
import socket
import struct
import subprocess
import sys

import pytest

from host_tests.conftest import REPO, missing

LEVELS = ("CLEAR", "ENCRYPTED", "AUTHENTICATED", "AUTHORIZED")
APPLIANCES = ("camera", "display")


def _pnp(*args, timeout=60):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "pnp.cli", "sim", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=env)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("sim")
    out = str(base / "out")
    first = _pnp("--duration", "6", "--json", "--out", out)
    assert first.returncode == 0, first.stderr + first.stdout
    view = json.loads(first.stdout)           # stdout is the JSON and nothing else
    saved = str(base / "first")
    shutil.copytree(out, saved)               # the second run rewrites pcap and keys
    second = _pnp("--duration", "3", "--out", out)
    return {"view": view, "first_dir": saved, "out": out, "second": second}


def level(view, node, peer):
    return LEVELS.index(view["nodes"][node][peer]["level"])


def test_json_meets_the_scenario(runs):
    v = runs["view"]
    assert v["ok"] is True and all(e["ok"] for e in v["expectations"]), v["expectations"]
    assert set(v["nodes"]) == {"camera", "display", "laptop"}
    # Appliances AUTHENTICATED with each other; laptop <-> appliances at least ENCRYPTED.
    assert level(v, "camera", "display") == level(v, "display", "camera") == 2
    for a in APPLIANCES:
        assert level(v, "laptop", a) >= 1 and level(v, a, "laptop") >= 1
    # The first datagrams travelled in clear, everything after inside ESP.
    cd, dc = v["nodes"]["camera"]["display"], v["nodes"]["display"]["camera"]
    assert cd["clear_out"] >= 1 and dc["clear_in"] >= 1
    assert v["app"]["display"]["frames_received"].get("CLEAR", 0) >= 1
    assert v["app"]["display"]["frames_received"].get("AUTHENTICATED", 0) > 10
    for n in v["nodes"]:
        for p, e in v["nodes"][n].items():
            if p != "thermostat":
                assert e["esp_in"] > 0 and e["esp_out"] > 0, (n, p, e)
    # Levels rose after the first datagram, in order, for every pair.
    tl = v["timeline"]
    for a, b in (("camera", "display"), ("display", "camera")):
        steps = [(e["from"], e["to"]) for e in tl if e["node"] == a and e["peer"] == b]
        assert steps == [("CLEAR", "ENCRYPTED"), ("ENCRYPTED", "AUTHENTICATED")], steps
        e = v["nodes"][a][b]
        assert 0 < e["encrypted_after_ms"] <= e["authenticated_after_ms"] < 2000
    assert [e["t"] for e in tl] == sorted(e["t"] for e in tl)
    # The legacy thermostat: in clear throughout, got exactly what was sent to it.
    th = v["legacy"]["thermostat"]
    assert th["exact"] is True and th["sent_to"] == th["received"] > 5
    assert th["replied"] == th["received"] and th["replies_at_laptop"] == th["replied"]
    lt = v["nodes"]["laptop"]["thermostat"]
    assert lt["level"] == "CLEAR" and lt["esp_out"] == 0 and lt["clear_out"] == th["sent_to"]
    assert lt["clear_in"] == th["replied"]
    assert 1 <= th["ike_probes"] <= 3          # one bounded probe, nothing more
    assert th["legacy_after_s"] is not None and lt["discovery"] == "legacy"
    assert not any(e["peer"] == "thermostat" for e in tl)
    # The command waited for AUTHENTICATED and was executed at that level.
    assert v["app"]["laptop"]["command_sent_level"] == "AUTHENTICATED"
    assert v["app"]["display"]["commands_done"] == 1
    assert v["app"]["display"]["commands_refused"] == 0


def _packets(path):
    """(src, sport, dst, dport, payload) of each record; lengths and IPv4 checksums
    checked here, independently of pnp.pcapwriter."""
    with open(path, "rb") as f:
        data = f.read()
    magic, vmaj, vmin, _, _, _, linktype = struct.unpack("<IHHiIII", data[:24])
    assert (magic, vmaj, vmin) == (0xA1B2C3D4, 2, 4) and linktype in (101, 228)
    out, off = [], 24
    while off < len(data):
        _, _, incl, orig = struct.unpack("<IIII", data[off:off + 16])
        pkt = data[off + 16:off + 16 + incl]
        off += 16 + incl
        assert incl == orig == len(pkt)
        assert pkt[0] == 0x45 and pkt[9] == 17
        total = struct.unpack("!H", pkt[2:4])[0]
        assert total == len(pkt)
        s = sum(struct.unpack("!10H", pkt[:20]))
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
        assert s == 0xFFFF, "bad IPv4 header checksum"
        sport, dport, ulen = struct.unpack("!HHH", pkt[20:26])
        assert ulen == len(pkt) - 20
        out.append((socket.inet_ntoa(pkt[12:16]), sport, socket.inet_ntoa(pkt[16:20]), dport, pkt[28:]))
    return out


def test_pcap_records_every_datagram(runs):
    v, d = runs["view"], runs["first_dir"]
    pkts = _packets(os.path.join(d, "sim.pcap"))
    assert len(pkts) == v["pcap_packets"] > 50
    a = v["addresses"]
    # The very first datagram is the camera's first frame, in clear, before any IKE.
    assert pkts[0] == (a["camera"], 7000, a["display"], 7000, b"frame 0")
    # The thermostat got on its app port exactly the laptop's polls, and sent only replies.
    to_th = [p for p in pkts if p[2] == a["thermostat"] and p[3] == 7000]
    assert len(to_th) == v["legacy"]["thermostat"]["sent_to"]
    assert all(p[0] == a["laptop"] and p[4].startswith(b"status?") for p in to_th)
    from_th = [p for p in pkts if p[0] == a["thermostat"]]
    assert len(from_th) == v["legacy"]["thermostat"]["replied"]
    assert all(p[4].startswith(b"thermostat:") for p in from_th)
    # Between nodes, port 7000 in clear only at the start: the rest is on the NAT-T port.
    nodes = {a[n] for n in ("camera", "display", "laptop")}
    clear = [p for p in pkts if p[0] in nodes and p[2] in nodes and p[3] in (7000, 7001)]
    assert 1 <= len(clear) <= 6
    assert not any(p[3] == 7001 for p in clear)    # the command never left in clear


def test_tshark_decrypts_with_the_key_log(runs):
    if shutil.which("tshark") is None:
        missing("tshark not installed (apt-get install tshark): the pcap and key log are not judged")
    from host_tests.peers import capture as cap

    v, d = runs["view"], runs["first_dir"]
    pcap, keys = os.path.join(d, "sim.pcap"), os.path.join(d, "keys")
    decode = [] if v["natt_port"] == 4500 else ["udp.port==%d,udpencap" % v["natt_port"]]
    opts = dict(cap.ESP_OPTIONS, **{"ip.check_checksum": "TRUE", "udp.check_checksum": "TRUE"})
    rows = cap.tshark_fields(pcap, ["ip.checksum.status", "udp.checksum.status"], options=opts,
                             keydir=keys, decode_as=decode)
    assert len(rows) == v["pcap_packets"]
    assert all(r[0] == "1" and r[1].split(",")[0] == "1" for r in rows), rows[:5]   # 1 = Good
    esp = cap.tshark_fields(pcap, ["esp.spi", "esp.icv_good", "esp.icv_bad"], options=cap.ESP_OPTIONS,
                            keydir=keys, display_filter="esp", decode_as=decode)
    n_esp = sum(e["esp_out"] for peers in v["nodes"].values() for e in peers.values())
    assert len(esp) >= n_esp > 0          # keepalives aside, one ESP packet per datagram
    assert all(r[1] == "1" and r[2] in ("", "0") for r in esp), [r for r in esp if r[1] != "1"][:5]
    # Control: the same capture with every integrity key altered has no good ICV.
    bad = os.path.join(d, "keys-altered")
    os.makedirs(bad, exist_ok=True)
    with open(os.path.join(keys, "esp_sa")) as f, open(os.path.join(bad, "esp_sa"), "w") as g:
        for line in f:
            head, _, key = line.strip().rpartition(',"0x')
            g.write('%s,"0x%x%s\n' % (head, int(key[0], 16) ^ 1, key[1:]))
    worse = cap.tshark_fields(pcap, ["esp.icv_good", "esp.icv_bad"], options=cap.ESP_OPTIONS,
                              keydir=bad, display_filter="esp", decode_as=decode)
    assert len(worse) == len(esp) and all(r[0] != "1" and r[1] == "1" for r in worse), worse[:3]
    # Decrypted ESP shows the application's datagrams (transport mode: inner UDP 7000).
    inner = cap.tshark_fields(pcap, ["data.data"], options=cap.ESP_OPTIONS, keydir=keys,
                              display_filter="esp && udp.dstport == 7001", decode_as=decode)
    assert any(bytes.fromhex(r[0].replace(":", "")).startswith(b"show laptop screen") for r in inner), inner
    # Every encrypted IKE message, IKE_AUTH included, decrypts with a correct checksum.
    args = ["-V", "-Y", "isakmp.exchangetype == 35"] + sum((["-d", x] for x in decode), [])
    text = cap.tshark(pcap, args, options=cap.ESP_OPTIONS, keydir=keys).stdout
    n_auth = text.count("Exchange type: IKE_AUTH (35)")
    assert n_auth >= 6                    # three pairs, request and response each
    assert text.count("Decrypted Data (") == n_auth
    assert text.count("[correct]") == n_auth and "[incorrect" not in text
    args = ["-V", "-Y", "isakmp"] + sum((["-d", x] for x in decode), [])
    text = cap.tshark(pcap, args, options=cap.ESP_OPTIONS, keydir=keys).stdout
    enc = text.count("Payload: Encrypted and Authenticated (46)")
    assert enc > n_auth and text.count("Decrypted Data (") == enc and "[incorrect" not in text


def test_outputs_identities_and_live_table(runs):
    v, out, second = runs["view"], runs["out"], runs["second"]
    assert second.returncode == 0, second.stderr + second.stdout
    for n in ("camera", "display", "laptop"):
        assert os.path.exists(os.path.join(out, n, "identity"))
        assert v["identities"][n]["created"] is True
    with open(os.path.join(out, "view.json")) as f:
        v2 = json.load(f)
    for n in ("camera", "display", "laptop"):      # second boot: the same identity
        assert v2["identities"][n] == {"fingerprint": v["identities"][n]["fingerprint"], "created": False}
        assert "%s identity %s (reused)" % (n.ljust(8), v["identities"][n]["fingerprint"]) in second.stdout
    assert v2["ok"] is True
    with open(os.path.join(runs["first_dir"], "view.json")) as f:
        assert json.load(f) == v                    # view.json is what --json printed
    text = second.stdout
    assert text.count("pnp sim  live") >= 2 and "pnp sim  final" in text
    assert "NODE     PEER" in text and "camera   display     AUTHENTICATED" in text
    assert "CLEAR (probing)" in text or "CLEAR (legacy)" in text
    assert "pnp sim: all expectations met" in text
    readme = open(os.path.join(out, "README.txt")).read()
    assert "WIRESHARK_CONFIG_DIR=" in readme and "sim.pcap" in readme
    prefs = open(os.path.join(out, "keys", "preferences")).read()
    assert "esp.enable_encryption_decode: TRUE" in prefs
