"""`pnp send/connect --timeout T` end within T + 1.5 s, whatever part of the exchange stalls.

T bounds the whole exchange (SA, the wait for the level the policy needs, the reply); the
node then stops within 1 s (tools/pnp/runtime.STOP_LIMIT), and the rest of the 1.5 s is
interpreter start-up. Each command runs as a subprocess (`.venv/bin/pnp`) against
loopback only, and its wall time is measured from outside.
"""

import random
import socket
import subprocess
import time

import pytest

from .conftest import VENV

PNP = VENV.bin("pnp")
T = 2.0
MARGIN = 1.5


def _free_ports(n):
    """n UDP ports free on both [::] and 0.0.0.0 (a node binds both)."""
    got = []
    while len(got) < n:
        port = random.randint(20000, 60000)
        socks = []
        try:
            for fam, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
                s = socket.socket(fam, socket.SOCK_DGRAM)
                socks.append(s)
                if fam == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((host, port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        if port not in got:
            got.append(port)
    return got


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def _timed(*args):
    t0 = time.monotonic()
    r = subprocess.run([PNP] + list(args), capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    return r, time.monotonic() - t0


def _assert_bounded_failure(r, wall, prog, word):
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert lines and lines[-1].startswith(prog + ": ") and word in lines[-1], r.stderr
    assert wall <= T + MARGIN, "%s took %.2f s with --timeout %s (bound %.1f s)" % (prog, wall, T, T + MARGIN)


@pytest.fixture
def silent_peer(tmp_path):
    """A config whose only peer is 127.0.0.1 on ports where nothing answers."""
    ike, natt, p_ike, p_natt = _free_ports(4)
    return _write(tmp_path / "node.toml", 'state = "st"\nike_port = %d\nnatt_port = %d\n'
                  '[[peer]]\naddress = "127.0.0.1"\nike_port = %d\nnatt_port = %d\n'
                  % (ike, natt, p_ike, p_natt))


def test_send_to_silent_peer_is_bounded(silent_peer):
    r, wall = _timed("send", "--config", silent_peer, "127.0.0.1", "9999", "hello", "--timeout", str(T))
    _assert_bounded_failure(r, wall, "pnp send", "no SA with 127.0.0.1")


def test_connect_to_silent_peer_is_bounded(silent_peer):
    r, wall = _timed("connect", "--config", silent_peer, "127.0.0.1", "--timeout", str(T))
    _assert_bounded_failure(r, wall, "pnp connect", "no SA with 127.0.0.1")


@pytest.fixture
def responder(tmp_path):
    """A zero-config `pnp node` on loopback (NULL auth: it reaches ENCRYPTED), echo on 9999.
    Yields (its IKE port, its NAT-T port)."""
    ike, natt = _free_ports(2)
    cfg = _write(tmp_path / "resp.toml", 'state = "rst"\nike_port = %d\nnatt_port = %d\n'
                 "zero_config = true\n" % (ike, natt))
    p = subprocess.Popen([PNP, "node", "--config", cfg, "--echo", "9999"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        line = p.stdout.readline()
        assert line.strip() == "ready", (line, p.poll())
        yield ike, natt
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _initiator(tmp_path, ike, natt, extra=""):
    mine = _free_ports(2)
    return _write(tmp_path / "send.toml", 'state = "sst"\nike_port = %d\nnatt_port = %d\n'
                  "tofu = false\n"
                  '[[peer]]\naddress = "127.0.0.1"\nike_port = %d\nnatt_port = %d\n%s'
                  % (mine[0], mine[1], ike, natt, extra))


def test_send_works_and_prints_the_reply(tmp_path, responder):
    cfg = _initiator(tmp_path, *responder)
    r, wall = _timed("send", "--config", cfg, "127.0.0.1", "9999", "hello", "--timeout", str(T))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello\n" and "reply from 127.0.0.1 port 9999" in r.stderr
    assert wall <= T + MARGIN


def test_send_waiting_for_a_level_is_bounded(tmp_path, responder):
    """The SA comes up at ENCRYPTED, the policy needs AUTHENTICATED (tofu = false, so the
    peer's proof is not enough). This used to wait the endpoint's own send timeout
    (Node.send_timeout = 10 s) after the SA came up: T + 10 s at worst."""
    cfg = _initiator(tmp_path, *responder, extra='[[spd]]\npeer = "any"\naction = "require"\n'
                     'level = "authenticated"\n')
    r, wall = _timed("send", "--config", cfg, "127.0.0.1", "9999", "hello", "--timeout", str(T))
    _assert_bounded_failure(r, wall, "pnp send", "not sent to 127.0.0.1")
    assert "ENCRYPTED" in r.stderr and r.stdout == ""


def test_send_without_reply_is_bounded(tmp_path, responder):
    """Port 9998 has no echo: the datagram leaves, the reply never comes."""
    cfg = _initiator(tmp_path, *responder)
    r, wall = _timed("send", "--config", cfg, "127.0.0.1", "9998", "hello", "--timeout", str(T))
    _assert_bounded_failure(r, wall, "pnp send", "no reply within")
    assert "sent 5 bytes" in r.stderr


def test_connect_works(tmp_path, responder):
    cfg = _initiator(tmp_path, *responder)
    r, wall = _timed("connect", "--config", cfg, "127.0.0.1", "--timeout", str(T))
    assert r.returncode == 0 and "IKE SA up with 127.0.0.1" in r.stdout, r.stderr
    assert wall <= T + MARGIN


def test_timeout_must_be_positive(silent_peer):
    for cmd in (["send", "--config", silent_peer, "127.0.0.1", "9", "x"],
                ["connect", "--config", silent_peer, "127.0.0.1"]):
        r, _ = _timed(*cmd, "--timeout", "0")
        assert r.returncode == 2 and "--timeout" in r.stderr
