"""The engine loads the cookie gate (x_cookie) only under load and the IKE rekey
module (x_rekey) only at a rekey: a fresh interpreter runs a handshake and looks."""

import os
import subprocess
import sys

FIRMWARE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "firmware")

SCRIPT = r"""
import os, sys
from pnpipsec.crypto.aes_pure import PureAES
from pnpipsec.ike.engine import Engine
from pnpipsec.ike.sa import LocalIdentity, PeerConfig

def loaded():
    return sorted(m[15:] for m in sys.modules if m.startswith("pnpipsec.ike.x_"))

def run(a, b, now):
    for _ in range(10):
        moved = False
        for d, to in a.pop_datagrams():
            moved = True
            b.receive(d, ("fd00::1", to[1]), now)
        for d, to in b.pop_datagrams():
            moved = True
            a.receive(d, ("fd00::2", to[1]), now)
        if not moved:
            return

a = Engine(os.urandom, PureAES(), LocalIdentity())
b = Engine(os.urandom, PureAES(), LocalIdentity())
print(loaded())
sa = a.initiate(("fd00::2", 500), PeerConfig(), 0)
run(a, b, 0)
assert sa.state == "established", sa
print(loaded())
a.rekey_ike(sa, 1000)
run(a, b, 1000)
print(loaded())
b.cookie_threshold = 0
a.initiate(("fd00::2", 500), PeerConfig(), 2000)
run(a, b, 2000)
print(loaded())
"""


def test_cookie_and_rekey_modules_load_only_when_needed():
    env = dict(os.environ, PYTHONPATH=FIRMWARE)
    p = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split("\n")
    base = "['auth', 'child', 'info', 'init']"
    assert lines[:4] == [base, base, "['auth', 'child', 'info', 'init', 'rekey']",
                         "['auth', 'child', 'cookie', 'info', 'init', 'rekey']"], p.stdout
