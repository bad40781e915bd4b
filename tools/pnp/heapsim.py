"""Heap co-simulation: the example app on a 32-bit MicroPython heap, with 4 peers.

    python -m pnp.heapsim --variant frozen --heap esp32 --days 1 [--json]

The board is tools/pnp/heapsim_board.py run by a 32-bit build of MicroPython's unix
port with a fixed heap (-X heapsize=N): one zero-configuration Node set up as
boards/common/pnpboard/app.py sets it up (identity in a RAM store, echo on UDP 7000,
levels printed). Its package is either FROZEN into the binary (footprint.frozen_binary:
bytecode in flash, as on boards flashed with firmware/manifest.py) or loaded from
`.mpy` files compiled here (footprint.compile_tree; footprint.unix_port_binary), as
`pnp deploy` puts them on a board. Only the board's heap is measured; the peers are real
CPython `pnpipsec.node.Node`s (zero_config, deterministic identities, OpenSSL crypto)
in this process. One simulated clock drives everything: time jumps from one due event
to the next (every node's next_due, the hourly app sends), so a day takes seconds.

Scenario (run()):
  a) 4 peers connect to the board (NULL auth, then the proofs: AUTHENTICATED both ways);
     heap "app + 4 SAs";
  b) a 5th peer starts a handshake and is held mid-way: the board has answered
     IKE_SA_INIT, the IKE_AUTH is not yet delivered; heap "app + 4 SAs + handshake in
     flight" -- THE figure of issue 10's heap budgets. Then it finishes and the 5th
     peer deletes its SA (heap "after the 5th left");
  c) `days` simulated days with the app's default lifetimes (zero_config: CHILD SAs
     rekey every hour or so, IKE SAs every 4 h): every peer sends the board one
     datagram an hour and the echo must come back. Heap sampled every hour.
The board samples gc.mem_alloc() after gc.collect() after every command (the peak is
the largest of those: live heap, not the transient inside a step); a MemoryError
anywhere (the fixed heap is the true test of transients and fragmentation) ends the run
with ok=False.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from pnp import footprint

BOARD_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "heapsim_board.py")

# Heap profiles (bytes): boards/qemu/build.py PROFILES, i.e. what a MicroPython board
# has free after boot; "large" is room for the whole package from .mpy.
HEAPS = {"esp32": 110 * 1024, "pico_w": 178 * 1024, "pico": 205 * 1024, "large": 320 * 1024,
         "huge": 1024 * 1024}

BOARD = "10.0.0.1"
PEERS = ["10.0.0.%d" % (11 + i) for i in range(5)]    # the 5th is the handshake in flight
NATT = 4500
APP = 7000
HOUR = 3600 * 1000
DAY = 24 * HOUR
_IKE_AUTH = 35
_CREATE_CHILD_SA = 36


class BoardDied(Exception):
    pass


def heap_bytes(heap):
    """A profile name (HEAPS) or a number of bytes."""
    if isinstance(heap, int):
        return heap
    if heap in HEAPS:
        return HEAPS[heap]
    return int(heap)


class Rand:
    """Deterministic rand(n): SHA-256 in counter mode over a seed (as on the board)."""

    def __init__(self, seed):
        self.seed = seed
        self.n = 0

    def __call__(self, n):
        import hashlib
        out = b""
        while len(out) < n:
            self.n += 1
            out += hashlib.sha256(self.seed + self.n.to_bytes(4, "big")).digest()
        return out[:n]


class BoardProc:
    """The MicroPython process and its line protocol (see heapsim_board.py)."""

    def __init__(self, exe, heapsize, variant, mpy_dir, seed, cwd):
        args = [exe, "-X", "heapsize=%d" % heapsize, BOARD_SCRIPT, seed, variant]
        if variant != "frozen":
            args.append(mpy_dir)
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, bufsize=1, cwd=cwd)
        self.logs = []
        self.log_tail = []
        self.levels = {}          # peer host -> level name, from the app's level lines
        self.events = {}          # node event name -> count (ChildRekeyed, IkeRekeyed ...)
        self.memory_error = None
        self.due = None           # ms to the next due, as of the last reply
        self.imported = None      # (alloc, modules) after the imports
        self.setup_alloc = None
        self.aes = None           # (heap the AES provider took, its class)
        self.final = None
        self.commands = 0

    def start(self):
        """Read the board's setup lines (imports, identity, node) up to its first N."""
        self._reply()

    def _reply(self):
        """Lines up to the N line that ends a reply: ([(dst, port, bytes)], extra)."""
        sent = []
        extra = {}
        max_free = None
        while True:
            line = self.p.stdout.readline()
            if not line:
                self._died("the board exited")
            line = line.rstrip("\n")
            tag, _, rest = line.partition(" ")
            if tag == "S":
                dst, port, hexdata = rest.split()
                sent.append((dst, int(port), bytes.fromhex(hexdata)))
            elif tag == "N":
                self.due = None if rest == "-" else int(rest)
                return sent, extra
            elif tag == "L":
                self._log(rest)
            elif tag == "H":
                a, free, peak, block = (int(x) for x in rest.split())
                extra["heap"] = {"alloc": a, "free": free, "peak": peak,
                                 "max_free_block": None if max_free is None else max_free * block}
            elif tag == "I":
                parts = rest.split()
                self.imported = (int(parts[0]), parts[1:])
            elif tag == "A":
                n, cls = rest.split()
                self.aes = (int(n), cls)
            elif tag == "R":
                self.setup_alloc = int(rest)
            elif tag == "Q":
                parts = rest.split()
                self.final = (int(parts[0]), sorted(parts[1:]))
                return sent, extra
            elif tag == "X":
                self.memory_error = rest
                self._died(rest)
            elif "max free sz:" in line:
                max_free = int(line.split("max free sz:")[1].split()[0])

    def _log(self, text):
        self.log_tail = (self.log_tail + [text])[-40:]
        if "MemoryError" in text and self.memory_error is None:
            self.memory_error = "logged by the node: " + text
        if text.startswith("level "):
            host, _, change = text[6:].partition(": ")
            self.levels[host] = change.split(" -> ")[-1]
        else:
            name = text.split(" ")[0]
            if name.endswith(("Up", "Down", "Rekeyed", "Failed")):
                self.events[name] = self.events.get(name, 0) + 1

    def _died(self, why):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            rest = self.p.stdout.read()
            err = self.p.stderr.read()
        except OSError:
            rest = err = ""
        for line in rest.splitlines():
            if line.startswith("X ") and self.memory_error is None:
                self.memory_error = line[2:]
        code = self.p.wait(timeout=10)
        if "MemoryError" in err and self.memory_error is None:
            self.memory_error = err.strip().splitlines()[-1]
        raise BoardDied("%s (exit %s)\n%s\n%s" % (why, code, "\n".join(self.log_tail[-10:]), err[-2000:]))

    def cmd(self, line):
        self.commands += 1
        try:
            self.p.stdin.write(line + "\n")
            self.p.stdin.flush()
        except (BrokenPipeError, OSError):
            self._died("the board closed its input")
        return self._reply()

    def quit(self):
        try:
            self.cmd("Q")
        finally:
            try:
                self.p.stdin.close()
            except OSError:
                pass
            code = self.p.wait(timeout=30)
        return code

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(timeout=10)


class _PeerBoard:
    name = "heapsim-peer"

    def __init__(self, world, seed):
        from pnp_hostboard.crypto import CryptographyAES, fast_ed25519, fast_x25519
        self.world = world
        self.rand = Rand(seed)
        self.aes = CryptographyAES()
        self.dh = fast_x25519
        self.sig = fast_ed25519
        self.storage = None

    def now_ms(self):
        return self.world.t


class _Sock:
    def __init__(self, world, host, port):
        self.world, self.host, self.port = world, host, port

    def sendto(self, data, addr):
        self.world.q.append((self.host, addr[0], addr[1], bytes(data)))

    def close(self):
        pass


def _ike_exchange(data, dport):
    """The exchange type of an IKE message (None for ESP, keepalives, other)."""
    if dport == NATT:
        if data[:4] != b"\x00\x00\x00\x00":
            return None
        data = data[4:]
    return data[18] if len(data) >= 28 else None


class World:
    def __init__(self, board):
        from pnpipsec.identity import Identity
        from pnpipsec.node import Endpoint, Node, zero_config
        self.board = board
        self.t = 0
        self.q = []
        self.hold = None          # (src, exchange type): such datagrams to the board wait
        self.held = []
        self.peers = {}
        self.eps = {}
        self.rekeys = {}          # peer host -> {"ChildRekeyed": n, "IkeRekeyed": n}
        self.board_due_at = None
        for i, host in enumerate(PEERS):
            seed = b"peer%d" % i
            n = Node(_PeerBoard(self, seed), Identity(Rand(seed + b"id")(32)), ike_port=NATT,
                     natt_port=NATT, addresses=[host], accept_any=zero_config())
            n.sock_natt = n.sock_ike = _Sock(self, host, NATT)
            ep = Endpoint(n, APP)
            n.endpoints[APP] = ep
            self.eps[host] = ep
            self.rekeys[host] = {"ChildRekeyed": 0, "IkeRekeyed": 0}
            n._event = self._counting(n, host)
            self.peers[host] = n
        self.active = list(PEERS[:4])

    def _counting(self, node, host):
        orig = node._event

        def _event(ev):
            name = ev.__class__.__name__
            if name in self.rekeys[host]:
                self.rekeys[host][name] += 1
            return orig(ev)
        return _event

    def _board(self, line):
        sent, extra = self.board.cmd(line)
        for dst, port, data in sent:
            self.q.append((BOARD, dst, port, data))
        self.board_due_at = None if self.board.due is None else self.t + self.board.due
        return extra

    def settle(self):
        n = 0
        while self.q:
            src, dst, dport, data = self.q.pop(0)
            n += 1
            if n > 20000:
                raise RuntimeError("datagrams never stop")
            if dst == BOARD:
                if src not in self.active and src != (self.hold or (None,))[0]:
                    continue
                if self.hold and src == self.hold[0] and _ike_exchange(data, dport) == self.hold[1]:
                    self.held.append((src, dst, dport, data))
                    continue
                self._board("D %s %d %d %s" % (src, NATT, 1 if dport == NATT else 0, data.hex()))
            elif dst in self.peers:
                node = self.peers[dst]
                node._datagram(data, (src, NATT), node.sock_natt, dport == NATT)

    def timers(self):
        """The board's and every peer's timer pass; ms to the earliest due (or None)."""
        self._board("T %d" % self.t)
        self.settle()
        best = self.board_due_at
        for host, n in self.peers.items():
            if host not in self.active and host != (self.hold or (None,))[0]:
                continue
            n._timer_pass()
            self.settle()
            d = n.next_due(self.t)
            if d is not None and (best is None or self.t + d < best):
                best = self.t + d
        # a reply to a peer may have moved the board's due
        if self.board_due_at is not None and (best is None or self.board_due_at < best):
            best = self.board_due_at
        return best

    def advance(self, until, stop=None):
        """Run events up to `until` ms (or until stop() is true); returns stop()'s value."""
        while self.t < until:
            due = self.timers()
            if stop is not None and stop():
                return True
            step = until - self.t
            if due is not None:
                step = min(step, max(1, due - self.t))
            self.t += step
        self.timers()
        return stop() if stop is not None else False

    def heap(self):
        return self._board("M")["heap"]

    def up(self, host):
        """True when both ends see each other AUTHENTICATED with an SA to send on."""
        from pnpipsec import AUTHENTICATED
        n = self.peers[host]
        return (n.level(BOARD) >= AUTHENTICATED and BOARD in n.out
                and self.board.levels.get(host) in ("AUTHENTICATED", "AUTHORIZED"))


def run(variant="frozen", heapsize="esp32", days=1.0, exe=None, seed="board", out=None,
        timeout=None):
    """Run the co-simulation; a dict of figures. ok is False when the board ran out of
    memory (memory_error says where) or any step failed (failures)."""
    say = out or (lambda s: None)
    heap = heap_bytes(heapsize)
    if exe is None:
        exe = footprint.frozen_binary() if variant == "frozen" else footprint.unix_port_binary()
    if exe is None:
        raise RuntimeError("no 32-bit MicroPython unix port%s: run scripts/build-micropython.sh"
                           % (" with pnpipsec frozen" if variant == "frozen" else ""))
    tmp = tempfile.mkdtemp(prefix="pnp-heapsim-")
    t_start = time.monotonic()
    res = {"variant": variant, "heapsize": heap, "exe": exe, "days": days, "ok": False,
           "memory_error": None, "failures": [], "phase": "start"}
    board = None
    try:
        mpy_dir = None
        if variant != "frozen":
            mpy_dir = os.path.join(tmp, "lib")
            sizes = footprint.compile_tree(mpy_dir)
            res["mpy_sizes"] = sizes
        board = BoardProc(exe, heap, variant, mpy_dir, seed, tmp)
        board.start()
        res["import_alloc"], res["modules_at_import"] = board.imported
        res["setup_alloc"] = board.setup_alloc
        res["aes_alloc"], res["aes_provider"] = board.aes
        w = World(board)

        # a) four peers connect
        res["phase"] = "connect"
        for host in w.active:
            w.peers[host]._probe(BOARD, True)
        w.settle()
        if not w.advance(w.t + 120000, lambda: all(w.up(h) for h in w.active)):
            res["failures"].append("the 4 peers did not reach AUTHENTICATED within 120 s: %r"
                                   % {h: (w.peers[h].level(BOARD), board.levels.get(h)) for h in w.active})
        res["heap_4_sas"] = w.heap()
        say("app + 4 SAs: %r" % res["heap_4_sas"])

        # b) a fifth peer's handshake, held after the board answered IKE_SA_INIT
        res["phase"] = "handshake in flight"
        fifth = PEERS[4]
        w.hold = (fifth, _IKE_AUTH)
        w.peers[fifth]._probe(BOARD, True)
        w.settle()
        if not w.held:
            res["failures"].append("the 5th peer's IKE_AUTH never came")
        res["heap_in_flight"] = w.heap()
        say("app + 4 SAs + handshake in flight: %r" % res["heap_in_flight"])
        w.hold = None
        w.active.append(fifth)
        w.q.extend(w.held)
        w.held = []
        w.settle()
        if not w.advance(w.t + 60000, lambda: w.up(fifth)):
            res["failures"].append("the 5th peer did not come up")
        res["heap_5_sas"] = w.heap()
        n5 = w.peers[fifth]
        sa = n5.by_host[BOARD].ike if BOARD in n5.by_host else None
        if sa is not None:
            n5.engine.abandon(sa, w.t)
            n5._pump()
        w.settle()
        w.active.remove(fifth)
        w.advance(w.t + 1000)
        res["heap_after_fifth_left"] = w.heap()

        # c) the day
        res["phase"] = "day"
        end = w.t + int(days * DAY)
        nxt = (w.t // HOUR + 1) * HOUR
        sent = ok = 0
        samples = []
        misses = []
        while nxt <= end and days > 0:
            w.advance(nxt)
            hour = nxt // HOUR
            for i, host in enumerate(w.active):
                n = w.peers[host]
                msg = b"ping %d from %d" % (hour, i)
                sent += 1
                if BOARD in n.out:
                    n.send_esp(msg, (BOARD, APP), APP)
                else:
                    n._probe(BOARD, True)
                    misses.append((hour, host, "no SA at the hour"))
            w.settle()
            w._board("E")
            w.settle()
            for i, host in enumerate(w.active):
                got = [d for d, _a, _l in w.eps[host]._items]
                w.eps[host]._items = []
                want = b"echo: ping %d from %d" % (hour, i)
                if want in got:
                    ok += 1
                elif not misses or misses[-1][:2] != (hour, host):
                    misses.append((hour, host, "no echo"))
            samples.append((nxt, w.heap()))
            nxt += HOUR
        if days > 0:
            w.advance(end)
        res["phase"] = "end"
        final = w.heap()
        res["echoes_sent"] = sent
        res["echoes_ok"] = ok
        res["echo_misses"] = misses[:20]
        res["heap_samples"] = [(t, h["alloc"]) for t, h in samples]
        res["heap_final"] = final
        res["peer_rekeys"] = w.rekeys
        res["board_events"] = dict(board.events)
        code = board.quit()
        res["peak"] = board.final[0]
        res["modules_at_end"] = board.final[1]
        res["board_commands"] = board.commands
        res["simulated_ms"] = w.t
        if code != 0:
            res["failures"].append("the board exited with %d" % code)
        if sent != ok:
            res["failures"].append("%d of %d echoes missing" % (sent - ok, sent))
    except BoardDied as e:
        res["failures"].append("board died in phase %s: %s" % (res["phase"], e))
    finally:
        if board is not None:
            res["memory_error"] = board.memory_error
            res["board_commands"] = board.commands
            board.kill()
        shutil.rmtree(tmp, ignore_errors=True)
        res["wall_s"] = round(time.monotonic() - t_start, 2)
    res["ok"] = not res["failures"] and res["memory_error"] is None
    return res


def min_heap(variant="frozen", days=0.0, lo=16 * 1024, hi=1024 * 1024, step=1024, exe=None,
             hi_ok=False):
    """The smallest heap (bytes, to `step`) in which run() succeeds: binary search
    between lo (known to fail) and hi (checked first unless hi_ok), on a grid of `step`.
    Fragmentation makes success not strictly monotonic in the heap size: the answer is
    a heap that works with one `step` less failing, not a bound."""
    lo = lo // step * step
    hi = -(-hi // step) * step
    if not hi_ok and not run(variant, hi, days, exe=exe)["ok"]:
        return None
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if run(variant, mid, days, exe=exe)["ok"]:
            hi = mid
        else:
            lo = mid
    return hi


def summary(r):
    lines = ["heapsim: %s on %s, heap %d bytes, %g day(s): %s"
             % (r["variant"], os.path.relpath(r["exe"], footprint.REPO) if r["exe"].startswith(footprint.REPO) else r["exe"],
                r["heapsize"], r["days"], "ok" if r["ok"] else "FAILED")]
    if r.get("import_alloc") is not None:
        lines.append("  heap after the app's imports          %8d" % r["import_alloc"])
        lines.append("    of which the AES provider (%s)   %8d" % (r["aes_provider"], r["aes_alloc"]))
        lines.append("  heap after the app's setup            %8d" % r["setup_alloc"])
    for key, what in (("heap_4_sas", "app + 4 SAs"),
                      ("heap_in_flight", "app + 4 SAs + handshake in flight"),
                      ("heap_5_sas", "app + 5 SAs"),
                      ("heap_after_fifth_left", "after the 5th peer left"),
                      ("heap_final", "at the end")):
        h = r.get(key)
        if h:
            lines.append("  %-38s %8d  (free %d, largest free block %s)"
                         % (what, h["alloc"], h["free"], h["max_free_block"]))
    if "peak" in r:
        lines.append("  peak live heap (after every command)  %8d" % r["peak"])
    if "echoes_sent" in r and r["days"]:
        lines.append("  echoes %d/%d; rekeys seen by the peers: CHILD %s, IKE %s; board events %s"
                     % (r["echoes_ok"], r["echoes_sent"],
                        [v["ChildRekeyed"] for v in r["peer_rekeys"].values()][:4],
                        [v["IkeRekeyed"] for v in r["peer_rekeys"].values()][:4],
                        r["board_events"]))
    lines.append("  MemoryError: %s" % (r["memory_error"] or "no"))
    for f in r["failures"]:
        lines.append("  FAILURE: %s" % f.splitlines()[0])
    lines.append("  %d board commands, %.1f s" % (r.get("board_commands", 0), r["wall_s"]))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m pnp.heapsim", description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=("frozen", "mpy"), default="frozen")
    ap.add_argument("--heap", default="esp32", help="bytes or a profile: %s" % ", ".join(
        "%s (%d)" % kv for kv in HEAPS.items()))
    ap.add_argument("--days", type=float, default=1.0)
    ap.add_argument("--exe", help="the MicroPython binary (default: footprint's)")
    ap.add_argument("--min-heap", action="store_true",
                    help="binary-search the smallest heap that runs the scenario")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.min_heap:
        m = min_heap(a.variant, a.days, exe=a.exe)
        print(json.dumps({"variant": a.variant, "days": a.days, "min_heap": m}) if a.json
              else "smallest heap for %s, %g day(s): %s" % (a.variant, a.days, m))
        return 0 if m else 1
    r = run(a.variant, heap_bytes(a.heap), a.days, exe=a.exe)
    print(json.dumps(r, indent=1, default=str) if a.json else summary(r))
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
