"""A seeded user-space link emulator with netem's model, between two TUN devices.

This kernel has no ``sch_netem``, so lossy links are emulated in user space: two
network namespaces each get a TUN device (``tun0``) carrying ``fd00:ee::<i>/64`` and
``10.98.0.<i>/24``; their only route to each other is that TUN.  One emulator process
holds both TUN fds and forwards every IP packet across, applying netem's per-packet
model in each direction:

    with LossyNet(loss=0.30, reorder=0.25, duplicate=0.10, delay=0.020, seed=1) as net:
        a, b = net.ns                         # host_tests.peers.netns.Namespace objects
        b.popen_python([...]); a.run([...])   # as with Netns
        net.counters()                        # live counters (dict per direction)
        net.set_model(loss=1.0)               # change the model at run time (blackhole)
    net.stats                                 # final counters, written at SIGTERM

The model (:class:`Model`) follows ``netem_enqueue`` in ``net/sched/sch_netem.c``
(no correlation, no rate, no slotting), per packet, in this order:

* duplicate: with probability ``duplicate`` one more copy (``count += 1``);
* loss: with probability ``loss`` one copy fewer (``count -= 1``); ``count == 0`` drops
  the packet.  A packet both duplicated and lost is therefore sent once, as in the
  kernel;
* ``count == 2``: the clone goes through the model again with duplication off (so it
  meets loss, reorder and delay of its own);
* reorder: with probability ``reorder`` the packet leaves at once (netem puts it at the
  head of its queue: it jumps ahead of the delayed ones; ``tc`` sets gap 1 when only
  ``reorder P`` is given); otherwise it leaves ``delay`` later, plus uniform jitter in
  ``[-jitter, +jitter]`` (netem's distribution without a table), never before now.

So of the packets offered, ``loss * (1 - duplicate)`` never arrive, and
``duplicate * (1 - loss)**2`` arrive twice (:func:`expected`).  Delayed packets wait in
a timer heap (poll with a timeout: no busy loop), at most ``limit`` of them; beyond
that a packet is dropped and counted as ``overflow`` (netem's ``limit``).

Each direction (``a2b``, ``b2a``) has its own ``random.Random`` seeded from
``(seed, direction)``: the same seed gives the same decisions for the same packet
sequence.  Packets the kernel sends on its own (none expected here: RA/RS are off)
also draw from it; counters per flow (``udp:<dport>``, ``other``) keep a test's own
datagrams apart.

Counters per direction: ``in`` (packets read from the TUN), ``dropped`` (loss,
originals and clones), ``duplicated`` (clones made), ``reordered`` (sent at once),
``delivered`` (written to the other TUN), ``overflow``, ``write_errors``, ``queued``
(still waiting when the counters were written) and ``flows`` (the same per flow).
Invariant: ``delivered + queued + write_errors == in + duplicated - dropped - overflow``.

Emulator CLI (what :class:`LossyNet` starts, in the root namespace)::

    python -m host_tests.peers.linkem --ns-a NS_A --ns-b NS_B [--dev tun0]
        [--loss P] [--reorder P] [--duplicate P] [--delay S] [--jitter S] [--seed N]
        [--limit N] --stats FILE [--control FILE]

prints ``ready`` once both TUNs are attached; SIGTERM/SIGINT: write the counters to
``--stats`` and exit; SIGUSR1: write them and print ``stats``; SIGHUP: read the JSON
object in ``--control`` (model keys, optionally under ``"a2b"`` / ``"b2a"``), apply it
to packets arriving from then on and print ``model <json>``.
"""

import argparse
import ctypes
import errno
import fcntl
import heapq
import json
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

from host_tests.peers import netns as nn

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000

MODEL_KEYS = ("loss", "reorder", "duplicate", "delay", "jitter")
DIRECTIONS = ("a2b", "b2a")
COUNTERS = ("in", "dropped", "duplicated", "reordered", "delivered", "overflow", "write_errors")
MAX_FLOWS = 256


# -- the model (pure: no sockets, no clock) ----------------------------------------

class Model:
    """netem's per-packet decisions for one direction.

    ``decide(now)`` -> list of ``(when, reordered, clone)``, one per copy to send
    (empty: dropped), and updates ``self.counts`` (``in``, ``dropped``,
    ``duplicated``, ``reordered``).  Four random draws per pass through the model
    (duplicate, loss, reorder, jitter) whatever the parameters, so changing one
    probability does not shift the others' random stream.
    """

    def __init__(self, loss=0.0, reorder=0.0, duplicate=0.0, delay=0.0, jitter=0.0,
                 seed=0, direction="a2b"):
        self.rng = random.Random("linkem/%s/%s" % (seed, direction))
        self.loss = self.reorder = self.duplicate = self.delay = self.jitter = 0.0
        self.set(loss=loss, reorder=reorder, duplicate=duplicate, delay=delay, jitter=jitter)
        self.counts = {"in": 0, "dropped": 0, "duplicated": 0, "reordered": 0}

    def set(self, **params):
        for k, v in params.items():
            if k not in MODEL_KEYS:
                raise ValueError("unknown model parameter %r (known: %s)" % (k, ", ".join(MODEL_KEYS)))
            v = float(v)
            if k in ("loss", "reorder", "duplicate") and not 0.0 <= v <= 1.0:
                raise ValueError("%s must be a probability in [0, 1], not %r" % (k, v))
            if k in ("delay", "jitter") and v < 0:
                raise ValueError("%s must be >= 0 seconds, not %r" % (k, v))
            setattr(self, k, v)

    def params(self):
        return {k: getattr(self, k) for k in MODEL_KEYS}

    def decide(self, now):
        self.counts["in"] += 1
        return self._enqueue(now, True)

    def _enqueue(self, now, may_duplicate):
        r_dup, r_loss, r_reorder, r_jitter = (self.rng.random() for _ in range(4))
        count = 1
        if may_duplicate and r_dup < self.duplicate:
            count += 1
        if r_loss < self.loss:
            count -= 1
        if count == 0:
            self.counts["dropped"] += 1
            return []
        out = []
        if count > 1:                      # the clone re-enters with duplication off
            self.counts["duplicated"] += 1
            out = [(w, r, True) for (w, r, _) in self._enqueue(now, False)]
        if r_reorder < self.reorder:
            self.counts["reordered"] += 1
            return [(now, True, False)] + out
        when = now + self.delay
        if self.jitter:
            when += self.jitter * (2.0 * r_jitter - 1.0)
        return [(max(now, when), False, False)] + out


def expected(loss=0.0, reorder=0.0, duplicate=0.0, **_):
    """Fractions per packet offered: ``missing`` (no copy arrives), ``twice`` (two
    arrive), ``delivered`` (copies arriving per packet offered), ``reordered`` (share
    of delivered copies sent at once)."""
    return {"missing": loss * (1 - duplicate),
            "twice": duplicate * (1 - loss) ** 2,
            "delivered": 1 - loss * (1 - duplicate) + duplicate * (1 - loss) ** 2,
            "reordered": reorder}


class DelayQueue:
    """netem's time-ordered queue: a heap of (when, seq, item), at most ``limit`` items.
    Equal times leave in arrival order."""

    def __init__(self, limit=10000):
        self.limit = limit
        self.heap = []
        self.seq = 0

    def __len__(self):
        return len(self.heap)

    def push(self, when, item):
        """False (and nothing queued) when full."""
        if len(self.heap) >= self.limit:
            return False
        self.seq += 1
        heapq.heappush(self.heap, (when, self.seq, item))
        return True

    def next_time(self):
        return self.heap[0][0] if self.heap else None

    def pop_due(self, now):
        out = []
        while self.heap and self.heap[0][0] <= now:
            out.append(heapq.heappop(self.heap)[2])
        return out


def flow_key(pkt):
    """``udp:<dport>`` for an unfragmented UDP packet in IPv4 or IPv6, else ``other``."""
    if len(pkt) >= 28 and pkt[0] >> 4 == 4:
        ihl = (pkt[0] & 15) * 4
        frag = struct.unpack_from("!H", pkt, 6)[0] & 0x3FFF
        if pkt[9] == 17 and not frag and len(pkt) >= ihl + 8:
            return "udp:%d" % struct.unpack_from("!H", pkt, ihl + 2)[0]
    elif len(pkt) >= 48 and pkt[0] >> 4 == 6 and pkt[6] == 17:
        return "udp:%d" % struct.unpack_from("!H", pkt, 42)[0]
    return "other"


# -- the emulator process ------------------------------------------------------------

class Direction:
    """One way across: reads ``fd_in``, writes ``fd_out``, applies its Model."""

    def __init__(self, name, fd_in, fd_out, model, limit):
        self.name = name
        self.fd_in = fd_in
        self.fd_out = fd_out
        self.model = model
        self.queue = DelayQueue(limit)
        self.c = {k: 0 for k in COUNTERS}
        self.flows = {}

    def _flow(self, key):
        f = self.flows.get(key)
        if f is None:
            if len(self.flows) >= MAX_FLOWS:
                key = "other"
                f = self.flows.get(key)
            if f is None:
                f = self.flows[key] = {k: 0 for k in COUNTERS}
        return f

    def packet(self, pkt, now):
        f = self._flow(flow_key(pkt))
        before = dict(self.model.counts)
        copies = self.model.decide(now)
        for k in ("in", "dropped", "duplicated", "reordered"):
            d = self.model.counts[k] - before[k]
            self.c[k] += d
            f[k] += d
        for when, reordered, clone in copies:
            if reordered or when <= now:
                self._write(pkt, f)
            elif not self.queue.push(when, (pkt, f)):
                self.c["overflow"] += 1
                f["overflow"] += 1

    def flush(self, now):
        for pkt, f in self.queue.pop_due(now):
            self._write(pkt, f)

    def _write(self, pkt, f):
        try:
            os.write(self.fd_out, pkt)
        except OSError:
            self.c["write_errors"] += 1
            f["write_errors"] += 1
            return
        self.c["delivered"] += 1
        f["delivered"] += 1

    def snapshot(self):
        d = dict(self.c)
        d["queued"] = len(self.queue)
        d["model"] = self.model.params()
        d["flows"] = {k: dict(v) for k, v in sorted(self.flows.items())}
        return d


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _setns(libc, fd):
    if libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "setns: " + os.strerror(e))


def attach_tun(ns_name, dev):
    """Open ``dev`` (a TUN made by ``ip tuntap add``) inside namespace ``ns_name``;
    the fd stays bound to that device after we switch back to our own namespace."""
    libc = _libc()
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open("/run/netns/" + ns_name, os.O_RDONLY)
    try:
        _setns(libc, target)
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
            try:
                fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", dev.encode(), IFF_TUN | IFF_NO_PI))
            except OSError:
                os.close(fd)
                raise
        finally:
            _setns(libc, home)
    finally:
        os.close(target)
        os.close(home)
    return fd


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def run_emulator(args):
    model = {k: getattr(args, k) for k in MODEL_KEYS}
    fd_a = attach_tun(args.ns_a, args.dev)
    fd_b = attach_tun(args.ns_b, args.dev)
    dirs = {"a2b": Direction("a2b", fd_a, fd_b, Model(seed=args.seed, direction="a2b", **model), args.limit),
            "b2a": Direction("b2a", fd_b, fd_a, Model(seed=args.seed, direction="b2a", **model), args.limit)}
    by_fd = {fd_a: dirs["a2b"], fd_b: dirs["b2a"]}
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)   # the wakeup fd carries the signal number
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    poller = select.poll()
    for fd in (fd_a, fd_b, wake_r):
        poller.register(fd, select.POLLIN)

    def stats():
        return {"seed": args.seed, "dev": args.dev, "ns_a": args.ns_a, "ns_b": args.ns_b,
                "limit": args.limit, **{n: d.snapshot() for n, d in dirs.items()}}

    print("ready", flush=True)
    running = True
    while running:
        times = [t for t in (d.queue.next_time() for d in dirs.values()) if t is not None]
        timeout = None
        if times:
            timeout = max(0, int((min(times) - time.monotonic()) * 1000.0 + 0.999))
        events = poller.poll(timeout)
        now = time.monotonic()
        for fd, ev in events:
            if fd == wake_r:
                try:
                    sigs = os.read(wake_r, 64)
                except BlockingIOError:
                    sigs = b""
                for s in sigs:
                    if s in (signal.SIGTERM, signal.SIGINT):
                        running = False
                    elif s == signal.SIGUSR1:
                        _write_json(args.stats, stats())
                        print("stats", flush=True)
                    elif s == signal.SIGHUP:
                        try:
                            with open(args.control) as f:
                                ctl = json.load(f)
                            for name, d in dirs.items():
                                d.model.set(**{k: v for k, v in ctl.items() if k in MODEL_KEYS})
                                d.model.set(**ctl.get(name, {}))
                            print("model " + json.dumps({n: d.model.params() for n, d in dirs.items()},
                                                        sort_keys=True), flush=True)
                        except (OSError, ValueError, TypeError) as e:
                            print("model-error %s" % e, flush=True)
                continue
            if ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                sys.stderr.write("linkem: poll event %#x on fd %d: stopping\n" % (ev, fd))
                running = False
                continue
            d = by_fd[fd]
            for _ in range(256):          # a bounded burst per wakeup, then timers again
                try:
                    pkt = os.read(fd, 65536)
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno in (errno.EINTR, errno.EAGAIN):
                        break
                    raise
                d.packet(pkt, now)
        now = time.monotonic()
        for d in dirs.values():
            d.flush(now)
    _write_json(args.stats, stats())
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="python -m host_tests.peers.linkem",
                                description="netem's model (loss, reorder, duplicate, delay) between two TUNs")
    p.add_argument("--ns-a", required=True)
    p.add_argument("--ns-b", required=True)
    p.add_argument("--dev", default="tun0")
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--reorder", type=float, default=0.0)
    p.add_argument("--duplicate", type=float, default=0.0)
    p.add_argument("--delay", type=float, default=0.0, help="seconds")
    p.add_argument("--jitter", type=float, default=0.0, help="seconds (uniform +-)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--limit", type=int, default=10000, help="delayed packets queued per direction")
    p.add_argument("--stats", required=True, help="counters (JSON) written here")
    p.add_argument("--control", help="JSON model read on SIGHUP")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    Model(**{k: getattr(args, k) for k in MODEL_KEYS})      # validate before attaching
    return run_emulator(args)


# -- the test-side context manager ---------------------------------------------------

class LinkemError(RuntimeError):
    pass


class LossyNet(nn.Netns):
    """Two namespaces joined only by TUN devices and the emulator process.

    Namespaces, processes and teardown as :class:`host_tests.peers.netns.Netns`
    (``net.ns``, ``run``, ``popen``, ``popen_python``); ``ns.ifname`` is ``dev``;
    addresses ``fd00:ee::1``/``10.98.0.1`` (a) and ``::2``/``.2`` (b).

    ``counters()`` -> live counters; ``set_model(direction=None, **params)`` changes
    the model (both directions, or ``"a2b"``/``"b2a"``) for packets from then on;
    ``blackhole(on=True)`` is ``loss=1.0`` (and back to the initial loss);
    ``stats`` -> the final counters once the block has exited.
    """

    def __init__(self, loss=0.0, reorder=0.0, duplicate=0.0, delay=0.0, jitter=0.0, seed=1,
                 limit=10000, dev="tun0", prefix6="fd00:ee::", prefix4="10.98.0."):
        super().__init__(n=2, prefix6=prefix6, prefix4=prefix4, warmup=False)
        self.model = {"loss": loss, "reorder": reorder, "duplicate": duplicate,
                      "delay": delay, "jitter": jitter}
        Model(**self.model)                                 # validate early
        self.seed = seed
        self.limit = limit
        self.dev = dev
        for ns in self.ns:
            ns.ifname = dev
        self.emu = None
        self.stats = None
        self.workdir = None

    @property
    def a(self):
        return self.ns[0]

    @property
    def b(self):
        return self.ns[1]

    def setup(self):
        self.workdir = tempfile.mkdtemp(prefix="linkem-")
        for ns in self.ns:
            nn._sh(["ip", "netns", "add", ns.name])
        for ns in self.ns:
            d = self.dev
            ns.run("set -e\n"
                   "ip link set lo up\n"
                   "ip tuntap add dev %(d)s mode tun\n"
                   "sysctl -q -w net.ipv6.conf.%(d)s.accept_ra=0 net.ipv6.conf.%(d)s.router_solicitations=0\n"
                   "ip -6 addr add %(ip6)s/64 dev %(d)s nodad\n"
                   "ip addr add %(ip4)s/24 dev %(d)s\n"
                   "ip link set %(d)s up\n" % {"d": d, "ip6": ns.ip6, "ip4": ns.ip4})
        self.stats_path = os.path.join(self.workdir, "stats.json")
        self.control_path = os.path.join(self.workdir, "control.json")
        self.err_path = os.path.join(self.workdir, "linkem.err")
        cmd = [nn.VENV_PYTHON if os.path.exists(nn.VENV_PYTHON) else sys.executable,
               "-m", "host_tests.peers.linkem", "--ns-a", self.a.name, "--ns-b", self.b.name,
               "--dev", self.dev, "--seed", str(self.seed), "--limit", str(self.limit),
               "--stats", self.stats_path, "--control", self.control_path]
        for k, v in self.model.items():
            cmd += ["--" + k, repr(float(v))]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.err_path, "w") as err:
            self.emu = subprocess.Popen(cmd, cwd=nn.REPO, env=env, stdout=subprocess.PIPE,
                                        stderr=err, text=True, start_new_session=True)
        self._expect("ready", 10)

    def _expect(self, word, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.emu.stdout], [], [], left)[0]:
                raise LinkemError("emulator: no %r within %s s; stderr: %s" % (word, timeout, self._err()))
            line = self.emu.stdout.readline()
            if not line:
                raise LinkemError("emulator exited (%s); stderr: %s" % (self.emu.poll(), self._err()))
            line = line.strip()
            if line.split(" ", 1)[0] == word:
                return line
            if line.startswith("model-error"):
                raise LinkemError(line)

    def _err(self):
        try:
            with open(self.err_path) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def counters(self):
        """The emulator's counters now (see the module docstring)."""
        self.emu.send_signal(signal.SIGUSR1)
        self._expect("stats", 5)
        with open(self.stats_path) as f:
            return json.load(f)

    def set_model(self, direction=None, **params):
        """Change the model for packets arriving from now on; returns both directions' models."""
        Model(**params)                                     # validate here, not in the emulator
        ctl = dict(params) if direction is None else {direction: dict(params)}
        _write_json(self.control_path, ctl)
        self.emu.send_signal(signal.SIGHUP)
        return json.loads(self._expect("model", 5).split(" ", 1)[1])

    def blackhole(self, on=True, direction=None):
        return self.set_model(direction, loss=1.0 if on else self.model["loss"])

    def stop_emulator(self):
        if self.emu is None:
            return
        nn.stop_process(self.emu, grace=5.0)
        if self.emu.stdout:
            self.emu.stdout.close()
        try:
            with open(self.stats_path) as f:
                self.stats = json.load(f)
        except (OSError, ValueError):
            self.stats = None
        self.emu = None

    def teardown(self):
        try:
            self.stop_emulator()
        finally:
            try:
                super().teardown()
            finally:
                if self.workdir:
                    shutil.rmtree(self.workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
