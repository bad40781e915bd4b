"""One pin store, two writers (issue 11): a running node and `pnp pins` both write the
state folder's pin file. Neither may write back a stale copy over the other's change:
every change re-reads the file and merges under the file's lock (pnpipsec.pins,
pnp_hostboard.storage.DirStorage.lock)."""

import os
import subprocess
import sys
import time

from pnp_hostboard.storage import DirStorage
from pnpipsec.pins import PinStore

K1 = bytes(range(32))
K2 = bytes(range(1, 33))

N = 30     # 60 pins: under the store's limit of 64

# One writer: the "node" keeps one PinStore open and pins new peers (observe); the
# "cli" opens a fresh store for each approval, as each `pnp pins approve` does.
WRITER = r"""
import os, sys, time
from pnp_hostboard.storage import DirStorage
from pnpipsec.pins import PinStore
state, role, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
while time.time() < go:
    time.sleep(0.001)
store = PinStore(DirStorage(state))
for i in range(n):
    key = bytes([i + 1]) * 32
    if role == "node":
        assert store.observe(b"node-%03d" % i, key) == "new-pinned"
    else:
        PinStore(DirStorage(state)).approve(b"cli-%03d" % i, key)
print("done")
"""


def test_a_stale_copy_never_erases_an_approval(tmp_path):
    """The issue's case: the node holds a changed key for a peer, the user approves it in
    the file, then the node pins someone else. The approval must still be there."""
    state = str(tmp_path)
    node = PinStore(DirStorage(state))
    node.observe(b"cam", K1)
    assert node.observe(b"cam", K2) == "changed"
    cli = PinStore(DirStorage(state))
    cli.approve(b"cam", K2)
    # the node sees the approval before deciding ...
    assert node.is_trusted(b"cam", K2) and node.state(b"cam") == "approved"
    # ... and its next save keeps it
    assert node.observe(b"door", K1) == "new-pinned"
    again = PinStore(DirStorage(state))
    assert again.get(b"cam") == (K2, "approved", None)
    assert again.state(b"door") == "tofu"


def test_forget_in_the_file_is_not_undone_by_the_node(tmp_path):
    state = str(tmp_path)
    node = PinStore(DirStorage(state))
    node.observe(b"cam", K1)
    PinStore(DirStorage(state)).forget(b"cam")
    node.observe(b"door", K1)
    assert PinStore(DirStorage(state)).get(b"cam") is None


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    state = str(tmp_path)
    go = time.time() + 0.5
    env = dict(os.environ)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, state, role, str(N), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for role in ("node", "cli")]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=60))
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and out.strip() == "done", err[-2000:]
    store = PinStore(DirStorage(state))
    states = {pid: st for pid, _, st in store.items()}
    assert len(states) == 2 * N, sorted(states)
    for i in range(N):
        assert states[b"node-%03d" % i] == "tofu"
        assert states[b"cli-%03d" % i] == "approved"
    # nothing left behind but the store and its lock
    assert sorted(os.listdir(state)) == ["pins", "pins.lock"]
