"""Our node as a process in a network namespace, driven by JSON lines, for wire tests.

    python -m host_tests.ctlnode CONFIG_JSON

runs one real :class:`pnpipsec.node.Node` on the host board (both families, every
address of its namespace) and answers commands on stdin, one JSON object a line,
each with an ``id``; the answer is one JSON line with the same ``id`` on stdout.
Commands run as their own tasks, so a long one (``loop``) does not block the rest.

CONFIG_JSON keys (all optional): ``state`` (identity and pins; the same folder keeps
the identity across restarts), ``port`` (IKE and NAT-T port, 4500), ``endpoints``
(app ports to open and record, [7000]), ``echo`` (answer every datagram on those
ports through the node), ``spd`` (list of SPD entry dicts, README), ``dpd``,
``retransmit_base``, ``retransmit_max``, ``retransmit_tries`` (zero_config's
PeerConfig), ``keepalive`` (s, 0 = off), ``keylog`` (folder).

Commands (``op``):

* ``status`` -> ``node.status()`` plus ``children`` ({spi_in hex: {"drops": EspIn
  drops, "packets": n, "spi_out": hex}}), ``level`` ({host: level}),
  ``delivered`` (count), ``ep_dropped`` (endpoint queue overflow), ``sock_dropped``
  (the host board's receive-queue overflow on the NAT-T socket), ``fp``, ``pins``.
* ``delivered`` -> ``items``: every datagram the app endpoints got, in order:
  [data hex, host, port, level, local port].
* ``ike`` -> ``sas``: the engine's IKE SAs ({spi_i, spi_r (hex), initiator, state,
  mobike, peer_addr}).
* ``addresses`` (``addrs``): ``node.local_addresses_changed(addrs)`` (MOBIKE: the
  engine tells the peers) -> ``told`` (how many SAs).
* ``send`` (``host``, ``port``, ``data`` hex, ``min_level``, ``timeout``, ``sport``)
  -> ``level`` or ``error`` (exception class name) + ``msg``.
* ``connect`` (``host``, ``timeout``) -> ``level`` or ``error``.
* ``wait_level`` (``host``, ``level``, ``timeout``) -> ``level`` or ``error``.
* ``loop`` (``host``, ``port``, ``interval``, ``timeout``, ``prefix``, ``sport``):
  start sending ``prefix N`` every ``interval`` s (each send with ``timeout``) -> ``t0``
  (``time.monotonic()`` of the start: one clock for every process of the machine);
  ``loop_stop`` -> ``results``: [[N, t_start, t_end, level or null, error or null, msg]]
  (t relative to the loop's start).
"""

import asyncio
import binascii
import json
import os
import signal
import subprocess
import sys
import threading
import time


# -- the node process ----------------------------------------------------------------

async def _amain(cfg):
    from pnp_hostboard.board import HostBoard
    from pnp_hostboard.storage import DirStorage
    from pnpipsec import identity, policy
    from pnpipsec.node import Node, zero_config

    state = cfg.get("state")
    board = HostBoard(state)
    storage = DirStorage(state) if state else None
    if storage is not None:
        ident, _ = identity.load_or_create(storage, os.urandom)
    else:
        ident = identity.Identity(os.urandom(32))
    zkw = {k: cfg[k] for k in ("dpd", "retransmit_base", "retransmit_max", "retransmit_tries")
           if k in cfg}
    kl = None
    if cfg.get("keylog"):
        from pnp.keylogdir import KeylogDir
        kl = KeylogDir(cfg["keylog"])
    port = cfg.get("port", 4500)
    node = Node(board, ident, ike_port=port, natt_port=port, accept_any=zero_config(**zkw),
                spd=policy.Spd.from_dicts(cfg.get("spd", [])), keylog=kl,
                keepalive=cfg.get("keepalive", 20.0))
    await node.start()
    delivered = []
    out_lock = asyncio.Lock()

    def emit(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    async def record(ep):
        while True:
            data, addr, level = await ep.recv()
            delivered.append([binascii.hexlify(data).decode(), addr[0], addr[1], level, ep.port])
            if cfg.get("echo"):
                try:
                    await ep.send(data, addr, timeout=5)
                except Exception:
                    pass

    tasks = []
    for p in cfg.get("endpoints", [7000]):
        ep = node.endpoint(p)
        tasks.append(asyncio.create_task(record(ep)))
    for ep in node.endpoints.values():      # clear sockets bound before "ready"
        await ep._opened.wait()
    loop_state = {}

    async def do(cmd):
        op = cmd["op"]
        if op == "status":
            st = node.status()
            st["children"] = {"%08x" % spi: {"drops": dict(c.inp.drops), "packets": c.inp.packets,
                                             "spi_out": "%08x" % c.child.spi_out}
                              for spi, c in node.children.items()}
            st["level"] = {h: lv for h, lv in node.levels.peers()}
            st["delivered"] = len(delivered)
            st["ep_dropped"] = sum(ep.dropped for ep in node.endpoints.values())
            st["sock_dropped"] = node.sock_natt.dropped
            st["fp"] = ident.fingerprint
            st["peer_stats"] = node.peer_stats
            st["events"] = [[e[0], e[1]] for e in node.events]
            return st
        if op == "delivered":
            return {"items": list(delivered)}
        if op == "ike":
            return {"sas": [{"spi_i": sa.spi_i.hex(), "spi_r": sa.spi_r.hex(),
                             "initiator": sa.initiator, "state": sa.state,
                             "mobike": bool(getattr(sa, "mobike", False)),
                             "peer_addr": list(sa.peer_addr)}
                            for sa in node.engine.sas.values()]}
        if op == "addresses":
            told = node.local_addresses_changed(cmd["addrs"])
            return {"told": len(told)}
        if op == "send":
            try:
                lv = await node.endpoint(cmd.get("sport", 7000)).send(
                    binascii.unhexlify(cmd["data"]), (cmd["host"], cmd["port"]),
                    min_level=cmd.get("min_level"), timeout=cmd.get("timeout"))
                return {"level": lv}
            except Exception as e:
                return {"error": e.__class__.__name__, "msg": str(e)}
        if op == "connect":
            try:
                return {"level": await node.connect(cmd["host"], timeout=cmd.get("timeout", 10))}
            except Exception as e:
                return {"error": e.__class__.__name__, "msg": str(e)}
        if op == "wait_level":
            try:
                return {"level": await node.wait_level(cmd["host"], cmd["level"], timeout=cmd.get("timeout", 10))}
            except Exception as e:
                return {"error": e.__class__.__name__, "msg": str(e)}
        if op == "loop":
            loop_state["stop"] = False
            res = loop_state["results"] = []
            ep = node.endpoint(cmd.get("sport", 7000))

            t0 = time.monotonic()

            async def sender():
                n = 0
                while not loop_state["stop"]:
                    ts = time.monotonic()
                    data = ("%s %d" % (cmd.get("prefix", "loop"), n)).encode()
                    try:
                        lv = await ep.send(data, (cmd["host"], cmd["port"]), timeout=cmd.get("timeout", 1.0))
                        res.append([n, ts - t0, time.monotonic() - t0, lv, None, ""])
                    except Exception as e:
                        res.append([n, ts - t0, time.monotonic() - t0, None, e.__class__.__name__, str(e)])
                    n += 1
                    await asyncio.sleep(cmd.get("interval", 0.2))
            loop_state["task"] = asyncio.create_task(sender())
            return {"started": True, "t0": t0}
        if op == "loop_stop":
            loop_state["stop"] = True
            t = loop_state.get("task")
            if t is not None:
                await t
            return {"results": loop_state.get("results", [])}
        if op == "stop":
            await node.stop()
            return {"stopped": True}
        return {"error": "BadCommand", "msg": op}

    async def run(cmd):
        try:
            ans = await do(cmd)
        except Exception as e:     # report, keep serving
            ans = {"error": e.__class__.__name__, "msg": repr(e)}
        ans["id"] = cmd.get("id")
        async with out_lock:
            emit(ans)

    emit({"ready": True, "fp": ident.fingerprint})
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    lines = asyncio.Queue()

    def reader():
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(stop.set)
    threading.Thread(target=reader, daemon=True).start()

    async def dispatch():
        while True:
            line = await lines.get()
            if line.strip():
                tasks.append(asyncio.create_task(run(json.loads(line))))
    disp = asyncio.create_task(dispatch())
    await stop.wait()
    disp.cancel()
    await node.stop()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    asyncio.run(_amain(json.loads(argv[0])))


# -- the test side -------------------------------------------------------------------

class CtlError(RuntimeError):
    pass


class CtlNode:
    """Start ``host_tests.ctlnode`` in namespace ``ns`` and talk to it.

    ``n.call(op, timeout=..., **args)`` -> the answer dict; ``n.kill()`` (SIGKILL: no
    DELETE leaves), ``n.stop()`` (SIGTERM: the node deletes its SAs)."""

    def __init__(self, ns, cfg, err_path, start_timeout=10.0):
        self.ns = ns
        self.err_path = err_path
        self._err = open(err_path, "w")
        self.proc = ns.popen_python(["-m", "host_tests.ctlnode", json.dumps(cfg)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=self._err, text=True)
        self._answers = {}
        self._cv = threading.Condition()
        self._next = 0
        self._ready = None
        self._closed = False
        threading.Thread(target=self._reader, daemon=True).start()
        deadline = time.monotonic() + start_timeout
        with self._cv:
            while self._ready is None:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise CtlError("ctlnode did not start: " + self.stderr())
                self._cv.wait(left)
        self.fp = self._ready["fp"]

    def _reader(self):
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            with self._cv:
                if obj.get("ready"):
                    self._ready = obj
                else:
                    self._answers[obj.get("id")] = obj
                self._cv.notify_all()
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def stderr(self):
        try:
            with open(self.err_path) as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def call(self, op, timeout=30.0, **args):
        with self._cv:
            self._next += 1
            i = self._next
        cmd = dict(args, op=op, id=i)
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as e:
            raise CtlError("ctlnode gone (%s): %s" % (e, self.stderr()))
        deadline = time.monotonic() + timeout
        with self._cv:
            while i not in self._answers:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CtlError("no answer to %r in %s s; stderr: %s" % (op, timeout, self.stderr()))
                if self._closed:
                    raise CtlError("ctlnode exited (%s); stderr: %s" % (self.proc.poll(), self.stderr()))
                self._cv.wait(min(left, 0.5))
            return self._answers.pop(i)

    def kill(self):
        """SIGKILL: the process dies at once, its SAs stay behind at the peer."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        self._err.close()

    def stop(self, timeout=5.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self._err.close()


if __name__ == "__main__":
    main()
