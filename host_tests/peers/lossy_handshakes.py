"""How many handshakes between two of our nodes survive a lossy link.

Inside a :class:`host_tests.peers.linkem.LossyNet` (netem's model in user space, default:
the issue's 30 % loss, 25 % reorder, 10 % duplication, 20 ms delay, both ways):

* namespace B runs one responder, ``pnp node --config b.toml --echo 7000`` with
  ``zero_config = true`` (NULL auth, transport mode);
* namespace A runs one python process that does ``n`` sequential rounds of: a fresh
  ``Node(board, identity, accept_any=zero_config())`` -> ``await node.connect(peer,
  timeout)`` -> record the level and the time -> ``await node.stop()``.  A fresh Node
  each round, so each round is a new IKE_SA_INIT + IKE_AUTH (same identity).

``measure(n, seed, ..., rekeys=0, workers=1)``: ``workers`` initiator processes, each on
its own address of A's /64, share the rounds; the first then does ``rekeys`` CHILD and
IKE rekeys on one SA kept up, echoing a datagram after each (``res["rekeys"]``).
Returns ``{"ok", "n", "times", "failures", "levels", "rekeys", "link",
"responder_log_tail", "model", "seed"}``: ``ok`` rounds reached ENCRYPTED or better
within ``timeout``; ``times`` their connect times (s); ``failures`` one reason per
failed round (the NodeError text plus the states of the engine's IKE SAs);
``link`` the emulator's counters per direction and flow (``udp:500``, ``udp:4500`` ...).

CLI (root)::

    python -m host_tests.peers.lossy_handshakes --n 100 --seed 1 [--family 6|4]
        [--timeout 20] [--loss 0.3 --reorder 0.25 --duplicate 0.1 --delay 0.02]
        [--keep DIR]

prints the result as JSON.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from host_tests.peers import linkem
from host_tests.peers import netns as nn

ISSUE_MODEL = {"loss": 0.30, "reorder": 0.25, "duplicate": 0.10, "delay": 0.020, "jitter": 0.0}
ECHO_PORT = 7000

ROUNDS = r"""
import asyncio, json, os, sys, time
from pnp_hostboard.board import HostBoard
from pnp_hostboard.storage import DirStorage
from pnpipsec import identity, LEVEL_NAMES, ENCRYPTED
from pnpipsec.node import Node, zero_config

peer, n, timeout, state, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]

bind = sys.argv[7] if len(sys.argv) > 7 and sys.argv[7] else None

async def main():
    # a worker binds its own IPv6 address only: unicast binds are exclusive (no
    # SO_REUSEADDR), so parallel workers cannot share 0.0.0.0:4500
    board = HostBoard(state, bind6=bind, bind4=None) if bind else HostBoard(state)
    ident, _ = identity.load_or_create(DirStorage(state), os.urandom)
    res = {"ok": 0, "n": n, "times": [], "failures": [], "levels": []}
    for i in range(n):
        node = Node(board, ident, accept_any=zero_config())
        await node.start()
        t0 = time.monotonic()
        try:
            level = await node.connect(peer, timeout=timeout)
            dt = time.monotonic() - t0
            res["levels"].append(LEVEL_NAMES[level])
            if level >= ENCRYPTED:
                res["ok"] += 1
                res["times"].append(round(dt, 4))
            else:
                res["failures"].append("round %d: level %s after %.2f s" % (i, LEVEL_NAMES[level], dt))
        except Exception as e:
            dt = time.monotonic() - t0
            states = sorted(sa.state for sa in node.engine.sas.values())
            res["levels"].append(None)
            res["failures"].append("round %d after %.2f s: %s: %s (our IKE SAs: %s)"
                                   % (i, dt, type(e).__name__, e, ", ".join(states) or "none"))
        finally:
            try:
                await node.stop()
            except Exception as e:
                res["failures"].append("round %d: stop raised %r" % (i, e))
        sys.stderr.write("round %d: %s %.2f s\n" % (i, res["levels"][-1], dt))
        sys.stderr.flush()
    res["rekeys"] = await rekeys(board, ident, int(sys.argv[6]) if len(sys.argv) > 6 else 0)
    with open(out, "w") as f:
        json.dump(res, f)


async def until(pred, limit):
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > limit:
            return None
        await asyncio.sleep(0.05)
    return round(time.monotonic() - t0, 3)


async def echo(node, ep, text):
    # a datagram may be lost on this link: the app retries
    for _ in range(20):
        try:
            await ep.send(text.encode(), (peer, 7000), timeout=5)
            data, _, lv = await asyncio.wait_for(ep.recv(), 1.0)
            if data == text.encode():
                return True
        except Exception:
            pass
    return False


async def rekeys(board, ident, k):
    # one SA kept up: k CHILD rekeys and k IKE rekeys, a datagram echoed after each
    r = {"child": 0, "ike": 0, "n": k, "echo_ok": 0, "echo": 0, "times": []}
    if not k:
        return r
    node = Node(board, ident, accept_any=zero_config())
    await node.start()
    ep = node.endpoint(40001)
    try:
        await node.connect(peer, timeout=60)
        for i in range(k):
            old = node.out[peer].child
            node.engine.rekey_child(old, node.board.now_ms()); node._pump()
            t = await until(lambda: peer in node.out and node.out[peer].child is not old
                            and old.spi_in not in node.children, 60)
            if t is not None:
                r["child"] += 1
                r["times"].append(("child", t))
            r["echo"] += 1
            r["echo_ok"] += await echo(node, ep, "after-child-%d" % i)
            old_ike = node.ike_up[peer]
            node.engine.rekey_ike(old_ike, node.board.now_ms()); node._pump()
            t = await until(lambda: node.ike_up.get(peer) not in (None, old_ike)
                            and old_ike.state == "dead", 60)
            if t is not None:
                r["ike"] += 1
                r["times"].append(("ike", t))
            else:
                cur = node.ike_up.get(peer)
                r.setdefault("ike_failures", []).append(
                    "IKE rekey %d: old %s (pending %s), now %s, engine %s" % (
                        i, old_ike.state, old_ike.pending and old_ike.pending.exch,
                        cur and cur.state, node.engine.stats))
            r["echo"] += 1
            r["echo_ok"] += await echo(node, ep, "after-ike-%d" % i)
    finally:
        await node.stop()
    return r

asyncio.run(main())
"""


def _tail(path, lines=30):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()[-lines:]
    except OSError:
        return []


def _run_workers(a, peer, n, timeout, work, rekeys, workers, family):
    """`workers` processes in namespace a, each on its own address (so each has its own
    port 4500) doing its share of the rounds; worker 0 also does the rekeys."""
    procs = []
    for k in range(workers):
        bind = ""
        if workers > 1 and family == 6:
            bind = "fd00:ee::1:%d" % (k + 1)
            a.run(["ip", "-6", "addr", "add", bind + "/64", "dev", "tun0", "nodad"])
        share = n // workers + (1 if k < n % workers else 0)
        out = os.path.join(work, "a%d-result.json" % k)
        err_path = os.path.join(work, "a%d.err" % k)
        with open(err_path, "w") as err:
            p = a.popen_python(["-c", ROUNDS, peer, str(share), str(timeout),
                                os.path.join(work, "a%d-state" % k), out,
                                str(rekeys if k == 0 else 0), bind], stderr=err)
        procs.append((p, out, err_path))
    res = {"ok": 0, "n": 0, "times": [], "failures": [], "levels": []}
    for p, out, err_path in procs:
        try:
            p.wait(n * (timeout + 5) + rekeys * 300 + 60)
        except subprocess.TimeoutExpired:
            raise RuntimeError("the rounds did not finish; last lines:\n" + "\n".join(_tail(err_path)))
        if p.returncode != 0 or not os.path.exists(out):
            raise RuntimeError("the rounds failed (%s):\n%s" % (p.returncode, "\n".join(_tail(err_path))))
        with open(out) as f:
            part = json.load(f)
        for k in ("ok", "n"):
            res[k] += part[k]
        for k in ("times", "failures", "levels"):
            res[k] += part[k]
        if part.get("rekeys", {}).get("n"):
            res["rekeys"] = part["rekeys"]
    res.setdefault("rekeys", {"child": 0, "ike": 0, "n": 0, "echo_ok": 0, "echo": 0, "times": []})
    return res


def measure(n=100, seed=1, family=6, timeout=20.0, keep=None, rekeys=0, workers=1, **model):
    """Run ``n`` handshakes (fresh Node each) across a LossyNet, then, on one SA kept up,
    ``rekeys`` CHILD and IKE rekeys (result["rekeys"]); see the module docstring."""
    params = dict(ISSUE_MODEL)
    params.update(model)
    work = keep or tempfile.mkdtemp(prefix="lossy-hs-")
    os.makedirs(work, exist_ok=True)
    try:
        with linkem.LossyNet(seed=seed, **params) as net:
            a, b = net.ns
            cfg = os.path.join(work, "b.toml")
            with open(cfg, "w") as f:
                f.write('state = "%s"\nzero_config = true\n' % os.path.join(work, "b-state"))
            b_err = os.path.join(work, "b.err")
            with open(b_err, "w") as err:
                responder = b.popen_python(["-m", "pnp.cli", "node", "--config", cfg, "--echo", str(ECHO_PORT)],
                                           stdout=subprocess.PIPE, stderr=err, text=True)
            line = responder.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError("responder did not start: %r %s" % (line, "\n".join(_tail(b_err))))
            res = _run_workers(a, b.addr(family), n, timeout, work, rekeys, workers, family)
            nn.stop_process(responder)
            responder.stdout.close()
        res["responder_log_tail"] = _tail(b_err, 15)
        res["link"] = {d: {k: net.stats[d][k] for k in ("in", "dropped", "duplicated", "reordered",
                                                        "delivered", "overflow", "write_errors", "queued", "flows")}
                       for d in ("a2b", "b2a")} if net.stats else None
        res["model"] = params
        res["seed"] = seed
        return res
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m host_tests.peers.lossy_handshakes",
                                description="N handshakes between two of our nodes across a lossy link")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--family", type=int, choices=(6, 4), default=6)
    p.add_argument("--timeout", type=float, default=20.0, help="connect timeout per round (s)")
    for k, v in ISSUE_MODEL.items():
        p.add_argument("--" + k, type=float, default=v)
    p.add_argument("--rekeys", type=int, default=0, help="then CHILD and IKE rekeys on one SA")
    p.add_argument("--workers", type=int, default=1, help="parallel initiators, one address each")
    p.add_argument("--keep", help="keep configs and logs in this directory")
    args = p.parse_args(argv)
    ok, why = nn.can_use_netns()
    if not ok:
        print("lossy_handshakes: " + why, file=sys.stderr)
        return 2
    t0 = time.monotonic()
    res = measure(n=args.n, seed=args.seed, family=args.family, timeout=args.timeout, keep=args.keep,
                  rekeys=args.rekeys, workers=args.workers,
                  **{k: getattr(args, k) for k in ISSUE_MODEL})
    res["wall_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
