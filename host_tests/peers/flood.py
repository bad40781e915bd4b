"""IKE_SA_INIT floods against one of our nodes, measured (issue 8; issue 16 points 3, 4).

Topology (:class:`host_tests.peers.netns.Netns` (2), ``fd00:99:8::/64`` on one veth):

* namespace B (``fd00:99:8::2``) runs the victim: the node ``pnp node --config v.toml
  --echo 7000`` runs (``zero_config = true``: NULL auth, ports 500/4500), started by this
  file's ``--role victim`` so that it also appends ``node.status()`` plus the host
  board's queue counters, its own CPU time and the exact maximum of half-open SAs to a
  JSON-lines file every ``interval`` s;
* namespace A (``fd00:99:8::1``) holds the flood senders and the legitimate clients.
  Addresses (all in A's /64; B has a permanent neighbour entry -> A's MAC for each,
  so B's answers to them cross the veth without neighbour discovery and A drops those
  for addresses it does not have):

  ``fd00:99:8::c:K``  legitimate client K (on A's veth)
  ``fd00:99:8::e:I``  cookie-echo sender I (on A's veth: it must read the COOKIE)
  ``fd00:99:8::f:I``  spoofed line-rate sources (not on A; I < ``sources``)
  ``fd00:99:8::5:1``  the single-source flood's spoofed source (not on A)

Flood kinds (each stops by itself after ``duration`` s and a packet count bound):

* ``line-rate``: ``senders`` processes, each an AF_PACKET socket on A's veth sending
  pre-built Ethernet/IPv6/UDP frames as fast as Python goes (or ``pps`` in all)
  from ``sources`` spoofed addresses, never answering. The IKE payload is a genuine
  IKE_SA_INIT made by :class:`pnpipsec.ike.engine.Engine`; every packet gets a fresh
  SPIi whose 16-bit words come in (w, ~w) pairs, so the UDP checksum computed once per
  template stays valid (a word plus its complement adds 0 in one's complement).
  ``ports`` "500,4500": alternately marker-less to 500 and with the non-ESP marker to
  4500 (zero-config peers start IKE on 4500, so that is where legitimate
  IKE_SA_INITs arrive).
* ``cookie-echo``: ``addrs`` real addresses (UDP sockets bound to them) start
  exchanges at ``rate`` per second in all: IKE_SA_INIT, and on an N(COOKIE) answer the
  same request again with the cookie first; on the IKE_SA_INIT answer they fall silent,
  leaving a half-open SA behind.
* ``single``: like line-rate from one spoofed address.

Legitimate clients: ``legit`` processes in A, client K bound to ``fd00:99:8::c:K``
(ports 500/4500 on that address), each a fresh ``Node(accept_any=zero_config())`` per
attempt (what ``pnp connect --config c.toml ADDR --timeout T`` does), started at spread
times during the flood; up to ``attempts`` attempts of ``attempt_timeout`` s, cut at the
flood's end: a handshake counts only when ENCRYPTED (or better) came while the flood ran.

Measured: packets sent (the senders' own counts) and the veth counters of A (tx) and B
(rx, drops); the victim's CPU (utime+stime from /proc/<pid>/stat over the flood, as a
fraction of one core) and liveness; its counters (engine: cookie_sent, evict_half_open,
drop_full, ...; node; the board queues' length and ``dropped``; half-open SAs sampled
and their exact maximum, checked after every IKE datagram that changed the SA table);
B's kernel UDP counters (``/proc/net/snmp6`` Udp6InDatagrams / Udp6RcvbufErrors, the
per-socket ``drops`` of ports 500 and 4500 in ``/proc/net/udp6``) and the global
``/proc/net/softnet_stat`` backlog drops; per legitimate client: success, time to
ENCRYPTED, attempts, failure reasons.

CLI (root)::

    python -m host_tests.peers.flood --kind line-rate|cookie-echo|single --duration 15
        --legit 6 [--senders 2] [--pps 0] [--sources 1024] [--ports 500,4500]
        [--addrs 32] [--rate 500] [--attempts 3] [--attempt-timeout 10] [--keep DIR] --json

``measure(kind, duration, legit, ...)`` returns the same dict. The processes inside
the namespaces run this file with ``--role victim|raw|cookie-echo|legit``.
Tests: ``host_tests/test_flood.py``.
"""

import argparse
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

from host_tests.peers import netns as nn

NET_ID = 8
PREFIX = "fd00:99:8::"
ECHO_PORT = 7000
MAX_HALF_OPEN = 16             # issue 8: the engine's budget of half-open responder SAs
MARKER = b"\x00\x00\x00\x00"   # RFC 3948 non-ESP marker
N_COOKIE = 16390
PT_N = 41
PT_SA = 33


def legit_addr(k):
    return "%sc:%x" % (PREFIX, k + 1)


def echo_addr(i):
    return "%se:%x" % (PREFIX, i + 1)


def spoof_addr(i):
    return "%sf:%x" % (PREFIX, i)


SINGLE_ADDR = PREFIX + "5:1"


# -- packets ------------------------------------------------------------------------------

def genuine_init(peer, port=500):
    """A genuine IKE_SA_INIT request (marker-less) from our engine, as a zero-config
    initiator would send it."""
    from pnp_hostboard.crypto import CryptographyAES, fast_x25519
    from pnpipsec.ike import engine as ike
    from pnpipsec.node import zero_config
    eng = ike.Engine(os.urandom, CryptographyAES(), ike.LocalIdentity(), dh=fast_x25519)
    eng.initiate((peer, port), zero_config(), 0)
    (data, _addr), = eng.pop_datagrams()
    return data


def paired_spi(n, salt=0):
    """8-byte SPIi from a counter: words (w1, ~w1, w2, ~w2) add 0 to a one's-complement sum."""
    w1 = n & 0xFFFF
    w2 = ((n >> 16) + (salt << 10)) & 0xFFFF
    return struct.pack("!HHHH", w1, w1 ^ 0xFFFF, w2, w2 ^ 0xFFFF)


def _csum(data):
    if len(data) & 1:
        data += b"\x00"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def udp6_frame(src_mac, dst_mac, src, dst, sport, dport, payload):
    """Ethernet + IPv6 + UDP frame (checksum filled in)."""
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    ulen = 8 + len(payload)
    pseudo = s + d + struct.pack("!IxxxB", ulen, 17)
    udp = struct.pack("!HHHH", sport, dport, ulen, 0) + payload
    c = 0xFFFF - _csum(pseudo + udp)
    if c == 0:
        c = 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    ip = struct.pack("!IHBB", 6 << 28, ulen, 17, 64) + s + d
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x86\xdd"
    return eth + ip + udp


def with_cookie(req, cookie):
    """The IKE_SA_INIT request `req` (marker-less) again, N(COOKIE) as its first payload."""
    first = req[16]
    n = bytes((first, 0)) + struct.pack("!H", 8 + len(cookie)) + b"\x00\x00" + \
        struct.pack("!H", N_COOKIE) + cookie
    body = req[28:]
    hdr = bytearray(req[:28])
    hdr[16] = PT_N
    hdr[24:28] = struct.pack("!I", 28 + len(n) + len(body))
    return bytes(hdr) + n + body


def first_notify(msg):
    """(first payload type, notify type or None, notify data) of a marker-less IKE message."""
    if len(msg) < 28:
        return None, None, b""
    np_ = msg[16]
    if np_ != PT_N or len(msg) < 36:
        return np_, None, b""
    plen = struct.unpack("!H", msg[30:32])[0]
    spisz = msg[33]
    ntype = struct.unpack("!H", msg[34:36])[0]
    return np_, ntype, bytes(msg[36 + spisz:28 + plen])


# -- roles inside the namespaces -------------------------------------------------------------

def _pin(a):
    if a.cpus:
        os.sched_setaffinity(0, {int(c) for c in a.cpus.split(",")})


def _wait_go():
    """Print ready, then read 'GO t0 t_end' (time.monotonic values) from stdin."""
    print("ready", flush=True)
    line = sys.stdin.readline().split()
    if not line or line[0] != "GO":
        sys.exit(0)
    return float(line[1]), float(line[2])


def _sleep_until(t):
    d = t - time.monotonic()
    if d > 0:
        time.sleep(d)


def role_raw(a):
    """Line-rate / single-source sender: AF_PACKET frames with spoofed sources."""
    _pin(a)
    with open(a.template, "rb") as f:
        ike = f.read()
    ports = [int(p) for p in a.ports.split(",")]
    srcs = [SINGLE_ADDR] if a.single else [spoof_addr(i) for i in range(a.sources)]
    rnd = random.Random(a.salt)
    frames = []
    for i, src in enumerate(srcs):
        port = ports[i % len(ports)] if len(srcs) > 1 else None
        for p in ([port] if port else ports):
            payload = (MARKER if p == 4500 else b"") + paired_spi(rnd.randrange(1 << 32), a.salt) + ike[8:]
            fr = bytearray(udp6_frame(a.src_mac, a.dst_mac, src, a.dst, rnd.randrange(1024, 65535),
                                      p, payload))
            frames.append((fr, 14 + 40 + 8 + (4 if p == 4500 else 0)))
    rnd.shuffle(frames)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((a.ifname, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    t0, t_end = _wait_go()
    _sleep_until(t0)
    deadline = min(t_end, t0 + a.duration)
    max_packets = a.max_packets
    pps = a.pps
    pack = struct.pack_into
    send = s.send
    nf = len(frames)
    n = errors = 0
    salt = (a.salt & 0x3F) << 10
    start = time.monotonic()
    while n < max_packets:
        for _ in range(128):
            fr, off = frames[n % nf]
            w1 = n & 0xFFFF
            w2 = ((n >> 16) + salt) & 0xFFFF
            pack("!HHHH", fr, off, w1, w1 ^ 0xFFFF, w2, w2 ^ 0xFFFF)
            try:
                send(fr)
            except OSError:
                errors += 1
            n += 1
        now = time.monotonic()
        if now >= deadline:
            break
        if pps:
            ahead = start + n / pps - now
            if ahead > 0:
                time.sleep(min(ahead, deadline - now))
    el = time.monotonic() - start
    s.close()
    with open(a.out, "w") as f:
        json.dump({"sent": n, "errors": errors, "elapsed": el, "pps": n / el if el else 0.0,
                   "frames": nf}, f)


def role_cookie_echo(a):
    """Cookie-echoing flood: real addresses that prove themselves, then fall silent."""
    _pin(a)
    with open(a.template, "rb") as f:
        ike = f.read()
    ports = [int(p) for p in a.ports.split(",")]
    socks = []
    for i in range(a.addrs):
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind((echo_addr(i), 0))
        s.setblocking(False)
        socks.append(s)
    by_fd = {s.fileno(): s for s in socks}
    ep = select.epoll()
    for s in socks:
        ep.register(s.fileno(), select.EPOLLIN)
    c = {"started": 0, "cookie_received": 0, "cookie_echoed": 0, "half_open_made": 0,
         "other_answers": {}, "send_errors": 0, "unknown": 0}
    pending = {}          # (sock fd, spi) -> request bytes (marker-less), port
    t0, t_end = _wait_go()
    _sleep_until(t0)
    deadline = min(t_end, t0 + a.duration)
    interval = 1.0 / a.rate
    nxt = time.monotonic()
    k = 0
    start = time.monotonic()

    def send(s, port, msg):
        try:
            s.sendto((MARKER if port == 4500 else b"") + msg, (a.dst, port))
        except OSError:
            c["send_errors"] += 1

    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        while nxt <= now and c["started"] < a.max_exchanges:
            s = socks[k % len(socks)]
            port = ports[k % len(ports)]
            spi = os.urandom(8)
            req = spi + ike[8:]
            if len(pending) > 100000:
                pending.clear()
            pending[(s.fileno(), spi)] = (req, port)
            send(s, port, req)
            c["started"] += 1
            k += 1
            nxt += interval
        for fd, _ev in ep.poll(max(0.0, min(nxt, deadline) - time.monotonic())):
            s = by_fd[fd]
            while True:
                try:
                    data, addr = s.recvfrom(4096)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                port = addr[1]
                if port == 4500:
                    if data[:4] != MARKER:
                        continue
                    data = data[4:]
                key = (fd, bytes(data[0:8]))
                got = pending.get(key)
                if got is None:
                    c["unknown"] += 1
                    continue
                first, ntype, ndata = first_notify(data)
                if ntype == N_COOKIE:
                    c["cookie_received"] += 1
                    req2 = with_cookie(got[0], ndata)
                    send(s, got[1], req2)
                    c["cookie_echoed"] += 1
                elif first == PT_SA:
                    c["half_open_made"] += 1          # and fall silent: no IKE_AUTH
                    del pending[key]
                else:
                    o = c["other_answers"]
                    o[str(ntype)] = o.get(str(ntype), 0) + 1
                    del pending[key]
    el = time.monotonic() - start
    c["elapsed"] = el
    c["rate"] = c["started"] / el if el else 0.0
    with open(a.out, "w") as f:
        json.dump(c, f)


def role_legit(a):
    """One legitimate client: up to `attempts` zero-config connects, cut at the flood's end."""
    _pin(a)
    import asyncio
    from pnp_hostboard.board import HostBoard
    from pnp_hostboard.storage import DirStorage
    from pnpipsec import identity, LEVEL_NAMES, ENCRYPTED
    from pnpipsec.node import Node, zero_config

    os.makedirs(a.state, exist_ok=True)
    ident, _ = identity.load_or_create(DirStorage(a.state), os.urandom)
    t0, t_end = _wait_go()
    res = {"addr": a.bind, "start": a.start, "ok": False, "time_to_encrypted": None,
           "done_at": None, "attempts": 0, "level": None, "failures": []}

    async def main():
        await asyncio.sleep(max(0.0, t0 + a.start - time.monotonic()))
        begin = time.monotonic()
        res["started_at"] = round(begin - t0, 3)
        for i in range(a.attempts):
            left = (t_end if a.until_end else begin + a.attempts * a.attempt_timeout) - time.monotonic()
            timeout = min(a.attempt_timeout, left)
            if timeout <= 0.05:
                res["failures"].append("attempt %d not made: the flood ended" % (i + 1))
                break
            res["attempts"] = i + 1
            board = HostBoard(a.state, bind6=a.bind, bind4=None)
            node = Node(board, ident, accept_any=zero_config())
            await node.start()
            t = time.monotonic()
            try:
                level = await node.connect(a.dst, timeout=timeout)
                if level >= ENCRYPTED:
                    now = time.monotonic()
                    res.update(ok=True, level=LEVEL_NAMES[level], time_to_encrypted=round(now - begin, 3),
                               attempt_time=round(now - t, 3), done_at=round(now - t0, 3))
                    return
                res["failures"].append("attempt %d: level %s" % (i + 1, LEVEL_NAMES[level]))
            except Exception as e:
                sas = sorted("%s(cookie_tries=%s)" % (sa.state, getattr(sa, "cookie_tries", "?"))
                             for sa in node.engine.sas.values())
                res["failures"].append("attempt %d after %.2f s: %s: %s; our SAs: %s; engine %s"
                                       % (i + 1, time.monotonic() - t, type(e).__name__, e,
                                          ", ".join(sas) or "none", dict(node.engine.stats)))
            finally:
                try:
                    await node.stop(timeout=0.5)
                except Exception as e:
                    res["failures"].append("stop raised %r" % e)
                await asyncio.sleep(0.05)

    asyncio.run(main())
    with open(a.out, "w") as f:
        json.dump(res, f)


def _board_queues(node):
    out = {}
    for name in ("sock_ike", "sock_natt"):
        s = getattr(node, name, None)
        if s is None:
            continue
        q = getattr(s, "_queue", None)
        d = {}
        for attr in ("dropped",):
            try:
                d[attr] = getattr(s, attr)
            except Exception:
                pass
        if q is not None:
            items = getattr(q, "items", None)
            if items is not None:
                d["len"] = len(items)
            for attr in dir(q):
                if not attr.startswith("_") and isinstance(getattr(q, attr, None), int):
                    d.setdefault(attr, getattr(q, attr))
        out[name] = d
    return out


def role_victim(a):
    """`pnp node --config FILE --echo PORT` plus a status line every `interval` s."""
    _pin(a)
    import asyncio
    from pnp import config
    from pnp.runtime import start_node

    async def _echo(node, port):            # what `pnp node --echo PORT` does, without the log
        ep = node.endpoint(port)
        while True:
            data, addr, _level = await ep.recv()
            try:
                await ep.send(data, addr)
            except Exception:
                pass

    cfg = config.load(a.config)
    track = {"half_open_max": 0, "checks": 0}

    async def main():
        node = await start_node(cfg, verbose=False)
        eng = node.engine
        orig = eng.receive

        def receive(data, peer_addr, now, via=None):
            # Instrumentation only: the exact maximum of half-open SAs, checked after
            # every IKE datagram that changed the SA table or evicted a half-open SA.
            n, ev = len(eng.sas), eng.stats.get("evict_half_open", 0)
            try:
                return orig(data, peer_addr, now, via)
            finally:
                if len(eng.sas) != n or eng.stats.get("evict_half_open", 0) != ev:
                    track["checks"] += 1
                    h = eng.half_open()
                    if h > track["half_open_max"]:
                        track["half_open_max"] = h
        eng.receive = receive
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        tasks = [asyncio.create_task(_echo(node, a.echo))] if a.echo else []
        out = open(a.status, "a")

        def sample(final=False):
            t = os.times()
            st = node.status()
            line = {"t": time.monotonic(), "cpu": t.user + t.system, "status": st,
                    "half_open_max": track["half_open_max"], "checks": track["checks"],
                    "max_half_open": getattr(eng, "max_half_open", None),
                    "cookie_threshold": getattr(eng, "cookie_threshold", None),
                    "queues": _board_queues(node), "final": final}
            out.write(json.dumps(line) + "\n")
            out.flush()

        print("ready", flush=True)
        while not stop.is_set():
            try:
                sample()
            except Exception as e:           # measuring must never stop the node
                out.write(json.dumps({"t": time.monotonic(), "error": repr(e)}) + "\n")
            try:
                await asyncio.wait_for(stop.wait(), a.interval)
            except asyncio.TimeoutError:
                pass
        sample(final=True)
        for t in tasks:
            t.cancel()
        await node.stop()
        out.close()

    asyncio.run(main())


# -- counters ---------------------------------------------------------------------------------

def _link(ns):
    r = ns.run(["ip", "-s", "-s", "-j", "link", "show", ns.ifname])
    st = json.loads(r.stdout)[0].get("stats64", {})
    return {"rx_packets": st.get("rx", {}).get("packets", 0), "rx_dropped": st.get("rx", {}).get("dropped", 0),
            "tx_packets": st.get("tx", {}).get("packets", 0), "tx_dropped": st.get("tx", {}).get("dropped", 0)}


def _snmp6(ns):
    out = {}
    for line in ns.run(["cat", "/proc/net/snmp6"]).stdout.splitlines():
        k, _, v = line.partition(" ")
        if k.startswith("Udp6") or k in ("Ip6InReceives", "Ip6InDiscards", "Ip6InDelivers"):
            out[k] = int(v.strip() or 0)
    return out


def _udp6_sockets(ns):
    """Per bound port (500, 4500, ...): (rx_queue bytes, drops) from /proc/net/udp6."""
    out = {}
    for line in ns.run(["cat", "/proc/net/udp6"]).stdout.splitlines()[1:]:
        f = line.split()
        if len(f) < 13:
            continue
        port = int(f[1].split(":")[1], 16)
        rxq = int(f[4].split(":")[1], 16)
        out[str(port)] = {"rx_queue": rxq, "drops": int(f[-1])}
    return out


def _softnet_dropped():
    tot = 0
    with open("/proc/net/softnet_stat") as f:
        for line in f:
            tot += int(line.split()[1], 16)
    return tot


def _cpu_ticks(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return int(parts[11]) + int(parts[12])
    except (OSError, IndexError, ValueError):
        return None


def _sched_ns(pid):
    """(ns on CPU, ns runnable but waiting for a CPU) from /proc/<pid>/schedstat."""
    try:
        with open("/proc/%d/schedstat" % pid) as f:
            run, wait = f.read().split()[:2]
        return int(run), int(wait)
    except (OSError, ValueError):
        return None


def _host_cpu():
    """(busy, total) jiffies of the whole host from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def _delta(after, before):
    if isinstance(after, dict):
        return {k: _delta(v, before.get(k, 0) if isinstance(before, dict) else 0) for k, v in after.items()}
    if isinstance(after, (int, float)) and not isinstance(after, bool):
        return after - (before or 0)
    return after


def _read_lines(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def _tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()[-n:]
    except OSError:
        return []


def _read_ready(p, what, timeout=30.0):
    """Wait for a role process's 'ready' line (select on its stdout)."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = p.stdout.fileno()
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or p.poll() is not None:
            raise RuntimeError("%s did not start (exit %s)" % (what, p.poll()))
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 256)
            if not chunk:
                raise RuntimeError("%s closed stdout (exit %s)" % (what, p.poll()))
            buf += chunk
    if buf.split(b"\n")[0].strip() != b"ready":
        raise RuntimeError("%s said %r" % (what, buf))


# -- the measurement --------------------------------------------------------------------------

def _batch(ns, lines):
    if lines:
        ns.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n", timeout=60)


def measure(kind="line-rate", duration=15.0, legit=6, senders=2, pps=0, sources=1024,
            ports="500,4500", addrs=32, rate=1000.0, attempts=3, attempt_timeout=10.0,
            legit_window=None, interval=0.25, pin=True, keep=None):
    """Run one flood of `kind` for `duration` s with `legit` clients; return the figures."""
    if kind not in ("line-rate", "cookie-echo", "single"):
        raise ValueError("kind must be line-rate, cookie-echo or single")
    work = keep or tempfile.mkdtemp(prefix="flood-")
    os.makedirs(work, exist_ok=True)
    me = os.path.abspath(__file__)
    role = ["-m", "host_tests.peers.flood"] if me.startswith(nn.REPO) else [me]
    ncpu = len(os.sched_getaffinity(0))
    cpus = sorted(os.sched_getaffinity(0))
    # Pinned, the victim owns one core and the flood (senders, their kernel work on the
    # veth, the legitimate clients) the others: on a small host the flood must not win
    # by starving the victim of CPU, which a real attacker across a link cannot do.
    pin_victim = ["--cpus", str(cpus[-1])] if pin and ncpu >= 2 else []
    pin_flood = ["--cpus", ",".join(str(c) for c in cpus[:-1])] if pin and ncpu >= 2 else []
    try:
        with nn.Netns(2, net_id=NET_ID) as net:
            a, b = net.ns
            mac_a, mac_b = net.mac(a), net.mac(b)
            own = [legit_addr(k) for k in range(legit)]
            if kind == "cookie-echo":
                own += [echo_addr(i) for i in range(addrs)]
            _batch(a, ["addr add %s/128 dev veth0 nodad" % x for x in own])
            spoofed = [spoof_addr(i) for i in range(sources)] if kind == "line-rate" else \
                ([SINGLE_ADDR] if kind == "single" else [])
            _batch(b, ["neigh replace %s lladdr %s dev veth0 nud permanent" % (x, mac_a)
                       for x in own + spoofed])
            # the victim
            vcfg = os.path.join(work, "v.toml")
            with open(vcfg, "w") as f:
                f.write('state = "%s"\nzero_config = true\n' % os.path.join(work, "v-state"))
            status = os.path.join(work, "victim-status.jsonl")
            verr = os.path.join(work, "victim.err")
            with open(verr, "w") as err:
                victim = b.popen_python(list(role) + ["--role", "victim", "--config", vcfg, "--echo",
                                                      str(ECHO_PORT), "--status", status,
                                                      "--interval", str(interval)] + pin_victim,
                                        stdout=subprocess.PIPE, stderr=err)
            _read_ready(victim, "victim")
            # flood senders and legitimate clients: started, then told when to go
            tmpl = os.path.join(work, "init.bin")
            with open(tmpl, "wb") as f:
                f.write(genuine_init(b.ip6))
            procs = []          # (what, Popen, out path)
            for i in range(senders if kind != "cookie-echo" else 1):
                out = os.path.join(work, "sender%d.json" % i)
                if kind == "cookie-echo":
                    args = ["--role", "cookie-echo", "--addrs", str(addrs), "--rate", str(rate),
                            "--max-exchanges", str(int(rate * duration * 1.1) + 10)]
                else:
                    args = ["--role", "raw", "--ifname", a.ifname, "--src-mac", mac_a, "--dst-mac", mac_b,
                            "--sources", str(sources), "--salt", str(i),
                            "--pps", str(pps / senders if pps else 0),
                            "--max-packets", str(int(duration * 400000))]
                    if kind == "single":
                        args.append("--single")
                args += ["--template", tmpl, "--dst", b.ip6, "--ports", ports,
                         "--duration", str(duration), "--out", out] + pin_flood
                with open(out + ".err", "w") as err:
                    p = a.popen_python(list(role) + args, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=err)
                procs.append(("sender%d" % i, p, out))
            window = legit_window if legit_window is not None else max(0.0, duration / 2.0)
            starts = [round(0.5 + (window * k / max(1, legit - 1) if legit > 1 else 0.0), 2)
                      for k in range(legit)]
            for k in range(legit):
                out = os.path.join(work, "legit%d.json" % k)
                args = ["--role", "legit", "--bind", legit_addr(k), "--dst", b.ip6,
                        "--start", str(starts[k]), "--attempts", str(attempts),
                        "--attempt-timeout", str(attempt_timeout), "--until-end",
                        "--state", os.path.join(work, "legit%d-state" % k), "--out", out] + pin_flood
                with open(out + ".err", "w") as err:
                    p = a.popen_python(list(role) + args, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=err)
                procs.append(("legit%d" % k, p, out))
            for what, p, _ in procs:
                _read_ready(p, what, timeout=60)
            before = {"a": _link(a), "b": _link(b), "snmp6": _snmp6(b), "sockets": _udp6_sockets(b),
                      "softnet_dropped": _softnet_dropped()}
            t0 = time.monotonic() + 0.3
            t_end = t0 + duration
            for _, p, _ in procs:
                p.stdin.write(b"GO %.6f %.6f\n" % (t0, t_end))
                p.stdin.flush()
            _sleep_until(t0)
            cpu0, w0 = _cpu_ticks(victim.pid), time.monotonic()
            sch0, host0 = _sched_ns(victim.pid), _host_cpu()
            _sleep_until(t_end)
            cpu1, w1 = _cpu_ticks(victim.pid), time.monotonic()
            sch1, host1 = _sched_ns(victim.pid), _host_cpu()
            after = {"a": _link(a), "b": _link(b), "snmp6": _snmp6(b), "sockets": _udp6_sockets(b),
                     "softnet_dropped": _softnet_dropped()}
            for what, p, _ in procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    nn.stop_process(p, grace=2)
            time.sleep(2 * interval)
            alive = victim.poll() is None
            samples = [s for s in _read_lines(status) if "status" in s]
            nn.stop_process(victim, grace=5)
            final = [s for s in _read_lines(status) if s.get("final")]
            tick = os.sysconf("SC_CLK_TCK")
            res = {"kind": kind, "duration": duration, "work": work,
                   "params": {"pinned": bool(pin_victim), "victim_cpu": pin_victim[1:], "senders": senders, "pps": pps, "sources": sources, "ports": ports,
                              "addrs": addrs, "rate": rate, "attempts": attempts,
                              "attempt_timeout": attempt_timeout, "legit_starts": starts}}
            senders_out = [json.load(open(out)) if os.path.exists(out) else {"missing": _tail(out + ".err")}
                           for what, _, out in procs if what.startswith("sender")]
            sent = sum(s.get("sent", s.get("started", 0)) for s in senders_out)
            link = {"a_tx": after["a"]["tx_packets"] - before["a"]["tx_packets"],
                    "b_rx": after["b"]["rx_packets"] - before["b"]["rx_packets"],
                    "b_rx_dropped": after["b"]["rx_dropped"] - before["b"]["rx_dropped"],
                    "a_tx_dropped": after["a"]["tx_dropped"] - before["a"]["tx_dropped"],
                    "b_tx": after["b"]["tx_packets"] - before["b"]["tx_packets"]}
            res["flood"] = {"senders": senders_out, "sent": sent, "sent_per_s": round(sent / duration),
                            "link": link, "b_rx_per_s": round(link["b_rx"] / duration),
                            "b_tx_per_s": round(link["b_tx"] / duration)}
            # the victim's counters over the flood: the first sample after t0 .. the last before t_end
            during = [s for s in samples if t0 - interval <= s["t"] <= t_end + interval]
            first = max([s for s in samples if s["t"] <= t0] or samples[:1], key=lambda s: s["t"]) if samples else None
            last = min([s for s in samples if s["t"] >= t_end] or samples[-1:], key=lambda s: s["t"]) if samples else None
            v = {"alive": alive, "exit": victim.returncode, "stderr_tail": _tail(verr, 10)}
            if cpu0 is not None and cpu1 is not None:
                v["cpu_fraction"] = round((cpu1 - cpu0) / tick / (w1 - w0), 3)
            if sch0 and sch1:
                # time the victim was runnable but another task had its CPU (a shared host)
                v["cpu_wait_fraction"] = round((sch1[1] - sch0[1]) / 1e9 / (w1 - w0), 3)
                # on CPU or waiting for one: 1.0 = the victim always had work (saturated)
                v["cpu_demand"] = round((sch1[0] - sch0[0] + sch1[1] - sch0[1]) / 1e9 / (w1 - w0), 3)
            res["host"] = {"cpus": ncpu, "busy_fraction": round((host1[0] - host0[0]) / max(1, host1[1] - host0[1]), 3),
                           "loadavg_1min_at_end": os.getloadavg()[0]}
            if first and last:
                v["cpu_fraction_self"] = round((last["cpu"] - first["cpu"]) / max(1e-6, last["t"] - first["t"]), 3)
                v["engine"] = _delta(last["status"]["engine"], first["status"]["engine"])
                v["node"] = {k: x for k, x in _delta(last["status"]["node"], first["status"]["node"]).items() if x}
                v["queues"] = _delta(last["queues"], first["queues"])
                v["queues_now"] = last["queues"]
            v["half_open_max"] = max([s["half_open_max"] for s in samples] or [None])
            v["half_open_sampled_max"] = max([s["status"]["half_open"] for s in during] or [None])
            v["half_open_series"] = [s["status"]["half_open"] for s in during]
            v["max_half_open"] = samples[-1]["max_half_open"] if samples else None
            v["cookie_threshold"] = samples[-1]["cookie_threshold"] if samples else None
            v["ike_sas_end"] = last["status"]["ike_sas"] if last else None
            v["samples"] = len(during)
            v["final_status"] = final[-1]["status"] if final else None
            res["victim"] = v
            res["kernel_b"] = {"snmp6": {k: x for k, x in _delta(after["snmp6"], before["snmp6"]).items() if x},
                               "sockets": {p: _delta(after["sockets"][p], before["sockets"].get(p, {}))
                                           for p in after["sockets"] if p in ("500", "4500")},
                               "softnet_dropped_global": after["softnet_dropped"] - before["softnet_dropped"]}
            clients = []
            for what, p, out in procs:
                if what.startswith("legit"):
                    if os.path.exists(out):
                        clients.append(json.load(open(out)))
                    else:
                        clients.append({"ok": False, "failures": ["no result: " + " | ".join(_tail(out + ".err", 5))]})
            res["legit"] = {"n": legit, "ok": sum(1 for c in clients if c.get("ok")),
                            "times": [c.get("time_to_encrypted") for c in clients],
                            "attempts": [c.get("attempts") for c in clients], "clients": clients}
        res["leftover_namespaces"] = nn.leftover_namespaces()
        return res
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def summary(r):
    f, v, k, lg = r["flood"], r["victim"], r["kernel_b"], r["legit"]
    e = v.get("engine", {})
    drops = {x: n for x, n in e.items() if x.startswith("drop") and n}
    lines = [
        "%s flood, %.0f s: sent %d (%d/s), B received %d/s, B sent %d/s" % (
            r["kind"], r["duration"], f["sent"], f["sent_per_s"], f["b_rx_per_s"], f["b_tx_per_s"]),
        "host: %s CPUs, %.0f %% busy during the flood, load %.2f" % (
            r["host"]["cpus"], 100 * r["host"]["busy_fraction"], r["host"]["loadavg_1min_at_end"]),
        "victim: alive %s, CPU %.2f core (self %.2f, waiting for a CPU %.2f), engine took %d IKE msgs/s, "
        "half-open max %s (budget %s), cookies sent %s, evicted %s, drop_full %s" % (v["alive"], v.get("cpu_fraction", -1), v.get("cpu_fraction_self", -1),
                                      v.get("cpu_wait_fraction", -1), e.get("rx", 0) / r["duration"],
                                      v["half_open_max"], v["max_half_open"], e.get("cookie_sent", 0),
                                      e.get("evict_half_open", 0), e.get("drop_full", 0)),
        "drops: veth A->B %s, kernel Udp6RcvbufErrors %s (per socket %s), board queues %s, engine %s" % (
            f["link"]["a_tx"] - f["link"]["b_rx"] + f["link"]["b_rx_dropped"],
            k["snmp6"].get("Udp6RcvbufErrors", 0), k["sockets"],
            {q: x.get("dropped") for q, x in (v.get("queues") or {}).items()}, drops),
        "legit: %d/%d, times %s, attempts %s" % (lg["ok"], lg["n"], lg["times"], lg["attempts"]),
    ]
    if r["kind"] == "cookie-echo" and f["senders"]:
        lines.insert(1, "cookie-echo sender: %s" % {x: n for x, n in f["senders"][0].items() if x != "elapsed"})
    for c in lg["clients"]:
        for fl in c.get("failures", []):
            lines.append("  %s: %s" % (c.get("addr"), fl))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m host_tests.peers.flood", description=__doc__.split("\n")[0])
    p.add_argument("--role", choices=["victim", "raw", "cookie-echo", "legit"], help=argparse.SUPPRESS)
    p.add_argument("--kind", default="line-rate", choices=["line-rate", "cookie-echo", "single"])
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument("--legit", type=int, default=6)
    p.add_argument("--senders", type=int, default=2, help="line-rate/single sender processes")
    p.add_argument("--pps", type=float, default=0, help="cap in packets/s for all senders (0: as fast as possible)")
    p.add_argument("--sources", type=int, default=1024, help="spoofed source addresses (line-rate)")
    p.add_argument("--ports", default="500,4500", help="victim ports to flood (4500 with the non-ESP marker)")
    p.add_argument("--addrs", type=int, default=32, help="cookie-echo: real source addresses")
    p.add_argument("--rate", type=float, default=1000.0, help="cookie-echo: exchanges started per second")
    p.add_argument("--attempts", type=int, default=3)
    p.add_argument("--attempt-timeout", type=float, default=10.0)
    p.add_argument("--legit-window", type=float, default=None,
                   help="legit clients start spread over 0.5 .. 0.5+this s (default duration/2)")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin the victim to its own core (flood and victim then share all)")
    p.add_argument("--keep", help="keep the work directory here")
    p.add_argument("--json", action="store_true")
    # role arguments
    for opt in ("--config", "--status", "--template", "--dst", "--out", "--ifname", "--src-mac",
                "--dst-mac", "--bind", "--state"):
        p.add_argument(opt, help=argparse.SUPPRESS)
    p.add_argument("--echo", type=int, default=ECHO_PORT, help=argparse.SUPPRESS)
    p.add_argument("--interval", type=float, default=0.25, help=argparse.SUPPRESS)
    p.add_argument("--cpus", default="", help=argparse.SUPPRESS)
    p.add_argument("--salt", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--max-packets", type=int, default=10_000_000, help=argparse.SUPPRESS)
    p.add_argument("--max-exchanges", type=int, default=1_000_000, help=argparse.SUPPRESS)
    p.add_argument("--start", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--until-end", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.role:
        {"victim": role_victim, "raw": role_raw, "cookie-echo": role_cookie_echo,
         "legit": role_legit}[a.role](a)
        return 0
    ok, why = nn.can_use_netns()
    if not ok:
        print("flood: needs root and network namespaces: %s" % why, file=sys.stderr)
        return 2
    r = measure(a.kind, a.duration, a.legit, senders=a.senders, pps=a.pps, sources=a.sources,
                ports=a.ports, addrs=a.addrs, rate=a.rate, attempts=a.attempts,
                attempt_timeout=a.attempt_timeout, legit_window=a.legit_window, pin=not a.no_pin,
                keep=a.keep)
    print(json.dumps(r, indent=1) if a.json else summary(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
