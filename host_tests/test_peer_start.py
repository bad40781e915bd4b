"""Start helpers of the real-peer harness return when the service *answers*, not when
a file or a pid exists (issue 8: charon's vici socket file appears before charon
listens, so ``swanctl --load-all`` right after ``start()`` got "Connection refused").

These tests run a fake charon (``CHARON_BIN`` monkeypatched, a fake namespace object)
and need neither root nor strongSwan.
"""

import os
import re
import socket
import subprocess
import sys
import time

import pytest

from host_tests.peers import charon as ch

FAKE_CHARON = r'''#!%(python)s
# fake charon: binds the vici unix socket (the file appears), then behaves per FAKE_MODE
import os, re, signal, socket, sys, time
conf = open(os.environ["STRONGSWAN_CONF"]).read()
path = re.search(r"socket = unix://(\S+)", conf).group(1)
mode = os.environ["FAKE_MODE"]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)                      # the socket file exists from here on ...
if mode == "exit":
    time.sleep(0.1)
    sys.exit(7)
if mode == "never":
    time.sleep(60)
time.sleep(0.5)                   # ... but nobody listens for 0.5 s
s.listen(8)
open(path + ".listening", "w").write(repr(time.monotonic()))
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    c, _ = s.accept()
    c.close()
'''


class FakeNs:
    """Stands in for a netns.Namespace: runs CHARON_BIN (the last word of the start
    script) directly, with the STRONGSWAN_CONF the script would set."""

    def __init__(self, mode):
        self.mode = mode
        self.procs = []
        self.binaries = []

    def popen(self, cmd, **kw):
        script = cmd[-1]
        conf = re.search(r"STRONGSWAN_CONF=(\S+)", script).group(1)
        binary = script.split()[-1]
        self.binaries.append(binary)
        env = dict(os.environ, STRONGSWAN_CONF=conf, FAKE_MODE=self.mode)
        p = subprocess.Popen([binary], env=env, start_new_session=True, **kw)
        self.procs.append(p)
        return p


@pytest.fixture
def fake_charon(tmp_path, monkeypatch):
    exe = tmp_path / "fake-charon"
    exe.write_text(FAKE_CHARON % {"python": sys.executable})
    exe.chmod(0o755)
    monkeypatch.setattr(ch, "CHARON_BIN", str(exe))
    made = []

    def make(mode):
        ns = FakeNs(mode)
        c = ch.Charon(ns, str(tmp_path / ("w-" + mode)))
        made.append(c)
        return c, ns

    yield make
    for c in made:
        c.stop(grace=2)


def _connects(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def test_charon_start_waits_until_vici_accepts(fake_charon):
    c, ns = fake_charon("slow")
    t0 = time.monotonic()
    c.start(timeout=5)
    took = time.monotonic() - t0
    assert ns.binaries == [ch.CHARON_BIN]            # the fake really ran
    assert os.path.exists(c.vici + ".listening"), \
        "start() returned %.3f s after launch, before charon listened on vici" % took
    assert _connects(c.vici)                          # what swanctl does next
    assert 0.4 <= took < 4, took


def test_charon_start_fails_fast_when_charon_exits(fake_charon):
    c, _ = fake_charon("exit")
    t0 = time.monotonic()
    with pytest.raises(ch.CharonError, match="exited with 7"):
        c.start(timeout=5)
    assert time.monotonic() - t0 < 2


def test_charon_start_times_out_when_vici_never_listens(fake_charon):
    c, _ = fake_charon("never")
    t0 = time.monotonic()
    with pytest.raises(ch.CharonError, match="vici"):
        c.start(timeout=1)
    assert 0.9 <= time.monotonic() - t0 < 3


# -- pluto: it adds the conns *before* it binds its IKE sockets --------------------
FAKE_PLUTO = r'''#!%(python)s
# fake pluto: control socket at once, conns after 0.1 s, IKE interfaces only 0.5 s later
import json, os, signal, sys, time
a = sys.argv
conf, run = a[a.index("--config") + 1], a[a.index("--rundir") + 1]
conns = [l.split()[1] for l in open(conf) if l.startswith("conn ")]
listen = [l.split("=", 1)[1].strip() for l in open(conf) if l.strip().startswith("listen=")]
state = os.path.join(run, "state.json")
def put(d):
    open(state + ".tmp", "w").write(json.dumps(d)); os.rename(state + ".tmp", state)
signal.signal(signal.SIGTERM, lambda *x: sys.exit(0))
put({"conns": [], "ifaces": []})
open(os.path.join(run, "pluto.ctl"), "w").close()
time.sleep(0.1)
put({"conns": conns, "ifaces": []})
time.sleep(0.5)
put({"conns": conns, "ifaces": ["[%%s]:500" %% listen[0], "[%%s]:4500" %% listen[0]]})
open(os.path.join(run, "listening"), "w").close()
time.sleep(60)
'''

FAKE_WHACK = r'''#!%(python)s
import json, os, sys
a = sys.argv
run = os.path.dirname(a[a.index("--ctlsocket") + 1])
try:
    st = json.load(open(os.path.join(run, "state.json")))
except OSError:
    sys.exit(1)
for i in st["ifaces"]:
    print("000 interface veth0 UDP " + i)
for c in st["conns"]:
    print('000 "%%s": fd00:99:1::2...%%%%any; unrouted; eroute owner: #0' %% c)
'''

FAKE_IPSEC = r'''#!/bin/sh
# fake "ipsec initnss --nssdir DIR"
touch "$3/cert9.db"
'''


class FakePlutoNs:
    """Runs what follows ``exec`` in pluto's start script directly; ``run`` runs a command."""

    def __init__(self):
        self.procs = []

    def popen(self, cmd, **kw):
        argv = cmd[-1].split(" && exec ", 1)[1].split()
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def run(self, cmd, check=True, timeout=30, **kw):
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_pluto_start_waits_until_pluto_listens_for_ike(tmp_path):
    from host_tests.peers import pluto as pl
    ls = tmp_path / "libreswan"
    for rel, text in (("usr/libexec/ipsec/pluto", FAKE_PLUTO), ("usr/libexec/ipsec/whack", FAKE_WHACK),
                      ("usr/sbin/ipsec", FAKE_IPSEC)):
        f = ls / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text % {"python": sys.executable})
        f.chmod(0o755)
    p = pl.Pluto(FakePlutoNs(), str(tmp_path / "w"), lsdir=str(ls))
    p.add_conn("null", left="fd00:99:1::2")
    t0 = time.monotonic()
    try:
        p.start(timeout=5)
        took = time.monotonic() - t0
        assert os.path.exists(os.path.join(p.rundir, "listening")), \
            "start() returned %.3f s after launch, before pluto bound its IKE sockets" % took
        assert 0.5 <= took < 4, took
    finally:
        p.stop(grace=2)
