"""A running `pnp node` can be inspected and told things (issue 11, items 1 and 2).

Every process is a real `pnp` command on loopback with ports of its own: the node under
test (zero configuration), peers made with `pnp connect --hold` / `pnp send`. All of
them are stopped by the tests.

* `pnp status --json`: the peer with its level by name, pin, SPIs, counters, why not higher;
* the issue's case: a peer's key changed (ENCRYPTED, "key changed"), `pnp pins approve
  --pending` on the running node makes it AUTHENTICATED at once, and the approval
  survives the node's next pin save;
* `pnp events --follow` streams the log; -q keeps INFO out of stderr; log lines carry a
  timestamp, the peer and level names;
* the control socket is 0600, a second node on the same state exits 2, a stale socket
  is replaced;
* `pnp send` says why there is no SA (the peer's NO_PROPOSAL_CHOSEN).
"""

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import time

import pytest

from .conftest import VENV
from .test_cli_timeouts import _free_ports

PNP = VENV.bin("pnp")


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def pnp(*args, timeout=30):
    return subprocess.run([PNP] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


class Procs:
    """Background processes of one test, all stopped at its end."""

    def __init__(self):
        self.procs = []

    def start(self, *args, wait_line=None, stderr=subprocess.PIPE):
        p = subprocess.Popen([PNP] + [str(a) for a in args], stdout=subprocess.PIPE,
                             stderr=stderr, text=True, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        if wait_line is not None:
            line = p.stdout.readline()
            assert wait_line in line, (line, p.poll(), p.stderr.read() if p.poll() is not None and p.stderr else "")
        return p

    def stop(self, p):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        out, err = p.communicate()
        return out, err

    def stop_all(self):
        for p in self.procs:
            self.stop(p)


@pytest.fixture
def procs():
    ps = Procs()
    try:
        yield ps
    finally:
        ps.stop_all()


@pytest.fixture
def world(tmp_path):
    """node.toml (the node under test, zero config) and peer.toml (a node whose only peer
    is the node under test)."""
    a, b, c = _free_ports(3)
    node = _write(tmp_path / "node.toml", 'state = "st"\nike_port = %d\nnatt_port = %d\n'
                  "zero_config = true\n" % (a, a))
    peer = _write(tmp_path / "peer.toml", 'state = "pst"\nike_port = %d\nnatt_port = %d\n'
                  '[[peer]]\naddress = "127.0.0.1"\nike_port = %d\nnatt_port = %d\n'
                  '[[peer]]\naddress = "::1"\nike_port = %d\nnatt_port = %d\n' % (b, b, a, a, a, a))
    return {"node": node, "peer": peer, "state": str(tmp_path / "st"), "pstate": str(tmp_path / "pst"),
            "tmp": tmp_path, "spare": c}


def _port_of(cfg):
    """The node's own ike_port in a config _write made (its first line with one)."""
    for line in open(cfg):
        if line.startswith("ike_port = "):
            return int(line.split("=")[1])
    raise AssertionError(cfg)


def status(state):
    r = pnp("status", "--state", state, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def peer_of(st, addr):
    for p in st["peers"]:
        if p["address"] == addr:
            return p
    raise AssertionError("no peer %s in %s" % (addr, [p["address"] for p in st["peers"]]))


def wait_for(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > end:
            return v
        time.sleep(0.05)


def test_status_then_approve_a_changed_key_on_the_running_node(world, procs):
    node = procs.start("node", "--config", world["node"], wait_line="ready")
    # a peer connects: first sight of its key, pinned (tofu): AUTHENTICATED
    b1 = procs.start("connect", "--config", world["peer"], "127.0.0.1", "--hold", "30",
                     wait_line="IKE SA up")
    p = wait_for(lambda: peer_of(status(world["state"]), "127.0.0.1")["level"] == "AUTHENTICATED"
                 and peer_of(status(world["state"]), "127.0.0.1"))
    assert p, status(world["state"])
    st = status(world["state"])
    assert re.fullmatch(r"[A-Z2-7]{4}(-[A-Z2-7]{4}){3}", st["identity"])
    assert st["ike_port"] == st["natt_port"]
    p = peer_of(st, "127.0.0.1")
    assert p["pin"]["state"] == "tofu" and p["why"] is None
    assert p["ike"]["auth"] == "null" and len(p["ike"]["spi_i"]) == 16 and p["ike"]["age_s"] >= 0
    (ch,) = p["children"]
    assert re.fullmatch("[0-9a-f]{8}", ch["spi_in"]) and ch["active"] and ch["expire_in_s"] > 0
    assert ch["in"]["packets"] >= 0 and "bytes" in ch["out"]
    assert p["discovery"]["state"] == "ipsec"
    text = pnp("status", "--config", world["node"]).stdout
    assert "peer: 127.0.0.1" in text and "level: AUTHENTICATED" in text and "child: SPIs in" in text

    # the peer comes back with another key: ENCRYPTED until approved
    procs.stop(b1)
    os.remove(os.path.join(world["pstate"], "identity"))
    procs.start("connect", "--config", world["peer"], "127.0.0.1", "--hold", "30", wait_line="IKE SA up")
    assert wait_for(lambda: peer_of(status(world["state"]), "127.0.0.1")["pin"]["state"] == "changed")
    p = wait_for(lambda: (lambda q: q if q["level"] == "ENCRYPTED" else None)(
        peer_of(status(world["state"]), "127.0.0.1")))
    assert p and "key changed" in p["why"] and "awaiting approval" in p["why"], p
    new_key = p["pin"]["presents"]

    r = pnp("pins", "--state", world["state"], "approve", "127.0.0.1", "--pending")
    assert r.returncode == 0, r.stderr
    assert "running node" in r.stdout and "AUTHENTICATED" in r.stdout, r.stdout
    p = peer_of(status(world["state"]), "127.0.0.1")
    assert p["level"] == "AUTHENTICATED" and p["pin"] == {"state": "approved", "pinned": new_key,
                                                          "presents": None}

    # the node's next pin save (another peer, ::1, pinned on first sight) keeps the approval
    # (another port and state: the holding peer keeps its port, and unicast binds are
    # exclusive, no SO_REUSEADDR)
    peer2 = _write(world["tmp"] / "peer2.toml", open(world["peer"]).read().replace(
        'state = "pst"', 'state = "pst2"').replace("ike_port = %d\nnatt_port = %d\n[[peer]]" % (
            _port_of(world["peer"]), _port_of(world["peer"])),
        "ike_port = %d\nnatt_port = %d\n[[peer]]" % (world["spare"], world["spare"]), 1))
    r = pnp("connect", "--config", peer2, "::1", "--timeout", "5")
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: any(p["address"] == "::1" and p["pin"]
                                for p in status(world["state"])["peers"]))
    lines = pnp("pins", "--state", world["state"], "list").stdout.splitlines()
    assert any(l.split()[:3] == ["127.0.0.1", new_key, "approved"] for l in lines), lines
    assert any(l.split()[0] == "::1" and l.split()[2] == "tofu" for l in lines), lines

    # the log: timestamps, the peer, level names, the key change
    out, err = procs.stop(node)
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} WARNING +KEY CHANGED for 127\.0\.0\.1", err, re.M), err
    assert re.search(r"INFO +IkeUp 127\.0\.0\.1: auth null", err), err
    assert "127.0.0.1 level ENCRYPTED -> AUTHENTICATED" in err, err


def test_events_follow_and_quiet_log(world, procs):
    node = procs.start("node", "--config", world["node"], "-q", wait_line="ready")
    follow = procs.start("events", "--state", world["state"], "--follow")
    time.sleep(0.3)
    r = pnp("connect", "--config", world["peer"], "127.0.0.1", "--timeout", "5")
    assert r.returncode == 0, r.stderr
    got = []
    end = time.monotonic() + 5
    while time.monotonic() < end:
        line = follow.stdout.readline()
        got.append(line)
        if "IkeDown 127.0.0.1" in line:
            break
    text = "".join(got)
    assert "IkeUp 127.0.0.1" in text and "127.0.0.1 level CLEAR -> ENCRYPTED" in text, text
    procs.stop(follow)
    # the history, without --follow
    r = pnp("events", "--state", world["state"])
    assert r.returncode == 0 and "node up" in r.stdout and "IkeUp 127.0.0.1" in r.stdout
    out, err = procs.stop(node)
    assert "INFO" not in err and "IkeUp" not in err, err        # -q: warnings only


def test_control_socket_mode_single_node_and_stale_socket(world, procs):
    node = procs.start("node", "--config", world["node"], wait_line="ready")
    sock = os.path.join(world["state"], "control.sock")
    st = os.stat(sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    # a second node on the same state folder (other ports): refused, exit 2
    other = _write(world["tmp"] / "again.toml", 'state = "st"\nike_port = %d\nnatt_port = %d\n'
                   % (world["spare"], world["spare"]))
    r = pnp("node", "--config", other, timeout=15)
    assert r.returncode == 2 and "already running" in r.stderr, (r.returncode, r.stderr)
    assert pnp("status", "--state", world["state"]).returncode == 0
    procs.stop(node)
    assert not os.path.exists(sock)
    r = pnp("status", "--state", world["state"])
    assert r.returncode == 1 and "no node answers" in r.stderr
    # a socket left by a node that died: nobody answers, the next node replaces it
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sock)
    s.close()
    assert os.path.exists(sock)
    procs.start("node", "--config", world["node"], wait_line="ready")
    assert status(world["state"])["peers"] == []


def test_send_says_why_there_is_no_sa(world, procs):
    """The node under test refuses a tunnel-mode CHILD SA (it does transport only):
    NO_PROPOSAL_CHOSEN. `pnp send` used to wait for its timeout and say only "no SA with
    ... within T s"; now it says what the peer answered, at once."""
    node = procs.start("node", "--config", world["node"], wait_line="ready")
    port = int(re.search(r"ike_port = (\d+)", open(world["node"]).read()).group(1))
    mine = _free_ports(1)[0]
    cfg = _write(world["tmp"] / "tunnel.toml",
                 'state = "tst"\naddresses = ["127.0.0.1"]\nike_port = %d\nnatt_port = %d\n'
                 '[[peer]]\naddress = "127.0.0.1"\nike_port = %d\nnatt_port = %d\nmode = "tunnel"\n'
                 % (mine, mine, port, port))
    t0 = time.monotonic()
    r = pnp("send", "--config", cfg, "127.0.0.1", "9999", "hello", "--timeout", "5")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == \
        "pnp send: no SA with 127.0.0.1: NO_PROPOSAL_CHOSEN (from the peer)", r.stderr
    assert time.monotonic() - t0 < 4
    out, err = procs.stop(node)
    assert "ChildFailed 127.0.0.1: NO_PROPOSAL_CHOSEN (we refused)" in err, err
