"""`pnp sim`: the demo. Plug and play on loopback, no root, one process.

    pnp sim [--duration S] [--out DIR] [--json] [--quiet] [--seed N]

Three pnpipsec nodes run in one asyncio process, each on its own address of a free
127.x.y.0/24 with real UDP sockets (HostBoard, IPv4 only): "camera" and "display"
(appliances) and "laptop" (a host node). All use zero configuration
(`accept_any=zero_config()`: NULL authentication, then the channel-bound proof of each
node's Ed25519 key, trusted on first use) and an identity created on first start in
OUT/<name>/identity (a second run reuses it). A fourth device, "thermostat", is a
plain UDP socket that knows nothing of IPsec.

Scenario (times from the start; traffic stops 0.4 s before the end, then in-flight
datagrams are drained):

    0.0 s  camera streams "frame N" to display:7000 every 0.2 s; display acks each one
    0.8 s  laptop polls camera and thermostat ("status?") every 0.5 s; both answer
    1.5 s  laptop sends a command to display:7001 with min_level=AUTHENTICATED: the
           send is held (nothing leaves in clear) until the SA is AUTHENTICATED; the
           display executes commands only when they arrive at AUTHENTICATED

The first datagram to each peer leaves in clear at once (level CLEAR) and starts IKE in
parallel; the SA comes up (ENCRYPTED), the proof lifts it to AUTHENTICATED. The
thermostat is probed (a bounded IKE_SA_INIT probe gets no answer: legacy) and keeps
getting exactly the datagrams the laptop's app sent it, in clear.

Output folder OUT (default ./out/sim):
    sim.pcap      every datagram the nodes and the thermostat sent, recorded at the
                  board's sockets, as raw IPv4/UDP packets (LINKTYPE_RAW)
    keys/         Wireshark configuration directory: the key log (esp_sa,
                  ikev2_decryption_table, written by pnp.keylogdir.KeylogDir) and the
                  preferences that switch ESP decryption and ICV checking on
    view.json     the final view (the JSON below)
    README.txt    how to open the capture in Wireshark / tshark
    <node>/identity  the node's Ed25519 identity (created once)

Without --json / --quiet a table of peers and levels is redrawn every 0.5 s (printed
every second when stdout is not a terminal), with the log of level changes.

`--json` prints only the final view on stdout:

    {"nodes": {NODE: {PEER: {"level": "AUTHENTICATED", "clear_in": n, "clear_out": n,
                              "esp_in": n, "esp_out": n, "discovery": STATE,
                              "first_datagram_s": t | null,
                              "encrypted_after_ms": ms | null,
                              "authenticated_after_ms": ms | null}}},
     "legacy": {"thermostat": {"address": a, "sent_to": n, "received": n,
                               "legacy_after_s": t | null, "exact": bool, "replied": n,
                               "replies_at_laptop": n, "ike_probes": n}},
     "timeline": [{"t": s, "node": NODE, "peer": PEER, "from": LEVEL, "to": LEVEL}],
     "discovery": [{"t": s, "node": NODE, "peer": PEER, "from": STATE, "to": STATE}],
     "app": {...per-node application counters...},
     "identities": {NODE: {"fingerprint": f, "created": bool}},
     "addresses": {NAME: ip}, "natt_port": p, "app_port": 7000, "command_port": 7001,
     "duration_s": s, "out": OUT, "pcap_packets": n,
     "expectations": [{"name": text, "ok": bool, "detail": text}], "ok": bool}
    (plus "interrupted": true after Ctrl-C, "errors": [...] if an app send failed)

NODE/PEER are names (camera, display, laptop, thermostat). Counters are datagrams the
application sent/received to/from that peer, by how they travelled (node.view());
STATE is the node's discovery state of the peer (unknown, probing, ipsec, legacy);
"t" values are seconds since the scenario started. "ike_probes": datagrams sent to
the thermostat other than on its app port (the bounded IKE_SA_INIT probe).
`first_datagram_s`: time of the first application datagram between the pair (either
direction); `encrypted_after_ms` / `authenticated_after_ms`: from that datagram until
NODE saw PEER at that level (negative when the SA was up before NODE's pair spoke).

Exit status: 0 when every expectation held (appliances AUTHENTICATED with each other;
laptop and appliances at least ENCRYPTED both ways; the first camera->display datagram
in clear, ESP after; the thermostat received exactly what was sent to it and answered;
the command reached the display at AUTHENTICATED), 1 otherwise (one line on stderr per
failed expectation), 2 on a usage or setup error, 130 when interrupted (outputs are
still written).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sys
import time

from pnp_hostboard.board import HostBoard
from pnp_hostboard.storage import DirStorage, StoreError
from pnpipsec import AUTHENTICATED, CLEAR, ENCRYPTED, LEVEL_NAMES, identity, inet
from pnpipsec.node import Node, NodeError, zero_config

from pnp.keylogdir import KeylogDir
from pnp.pcapwriter import PcapWriter

APP = 7000
CMD = 7001
NODES = ("camera", "display", "laptop")
LEGACY = "thermostat"
HOSTS = {"camera": 11, "display": 12, "laptop": 13, "thermostat": 29}
FRAME_EVERY = 0.2
POLL_START, POLL_EVERY = 0.8, 0.5
CMD_AT = 1.5
DRAIN = 0.4
MIN_DURATION = 2.5


def add_arguments(p):
    p.add_argument("--duration", type=float, default=8.0, metavar="S",
                   help="length of the scenario in seconds (default 8, at least %.1f)" % MIN_DURATION)
    p.add_argument("--out", default=os.path.join(".", "out", "sim"), metavar="DIR",
                   help="output folder: pcap, key log, identities, view.json (default ./out/sim)")
    p.add_argument("--json", action="store_true", help="print only the final view as JSON")
    p.add_argument("--quiet", action="store_true", help="no live table; print only the summary")
    p.add_argument("--seed", type=int, metavar="N",
                   help="seed for the choice of loopback network and ports (not for keys)")


def level_name(lv):
    return LEVEL_NAMES[lv] if 0 <= lv < len(LEVEL_NAMES) else str(lv)


# -- capture at the board's sockets -------------------------------------------------
class Tap:
    """Records every datagram handed to a socket's sendto: into the pcap and a list."""

    def __init__(self, pcap_path):
        self.pcap = PcapWriter(pcap_path)
        self.records = []      # (src, sport, dst, dport, length)

    def record(self, src, sport, addr, data):
        if self.pcap is None:
            return
        self.pcap.udp(time.time(), src, sport, addr[0], addr[1], data)
        self.records.append((src, sport, addr[0], addr[1], len(data)))

    def close(self):
        if self.pcap is not None:
            self.pcap.close()
            self.pcap = None


class TapSocket:
    """A board socket whose sendto is also recorded by the Tap."""

    def __init__(self, sock, src, tap):
        self._sock = sock
        self._src = src
        self._tap = tap
        self.port = sock.port

    async def recvfrom(self):
        return await self._sock.recvfrom()

    def sendto(self, data, addr):
        self._sock.sendto(data, addr)
        self._tap.record(self._src, self.port, addr, data)

    def close(self):
        self._sock.close()

    def __getattr__(self, name):
        return getattr(self._sock, name)


class SimBoard(HostBoard):
    """HostBoard on one IPv4 loopback address, with its sockets tapped."""

    def __init__(self, addr, tap):
        super().__init__(state_dir=None, bind6=None, bind4=addr)
        self.addr = addr
        self.tap = tap
        self.socks = []

    async def udp(self, port):
        s = TapSocket(await super().udp(port), self.addr, self.tap)
        self.socks.append(s)
        return s


class _LegacyProtocol(asyncio.DatagramProtocol):
    def __init__(self, dev):
        self.dev = dev

    def datagram_received(self, data, addr):
        self.dev.received(data, addr)


class Thermostat:
    """A legacy UDP device: answers "status?" on the app port; no IPsec at all."""

    def __init__(self, addr, tap):
        self.addr = addr
        self.tap = tap
        self.got = []          # (data, addr) in arrival order
        self.replied = 0
        self.transport = None

    async def start(self):
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: _LegacyProtocol(self), local_addr=(self.addr, APP), family=socket.AF_INET)

    def received(self, data, addr):
        self.got.append((data, addr))
        if data.startswith(b"status?"):
            reply = b"thermostat: 21.5 C (" + data + b")"
            self.transport.sendto(reply, addr)
            self.tap.record(self.addr, APP, addr, reply)
            self.replied += 1

    def close(self):
        if self.transport is not None:
            self.transport.close()


# -- network choice -------------------------------------------------------------------
def _free(hosts, ports):
    socks = []
    try:
        for h in hosts:
            for port in ports:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((h, port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def pick_network(rng):
    """({name: address}, natt_port): a 127.x.y.0/24 and a NAT-T port free on all of
    its addresses (4500 when free, so Wireshark decodes it without Decode As), with the
    app and command ports free too."""
    for _ in range(64):
        net = "127.%d.%d." % (rng.randint(1, 254), rng.randint(1, 254))
        addrs = {name: net + str(h) for name, h in HOSTS.items()}
        if not _free(addrs.values(), (APP, CMD)):
            continue
        for port in [4500] + [rng.randint(20000, 60000) for _ in range(8)]:
            if _free(addrs.values(), (port,)):
                return addrs, port
    raise OSError("no free loopback network and port found")


# -- the simulation -------------------------------------------------------------------
class Sim:
    def __init__(self, args):
        self.args = args
        self.out = os.path.abspath(args.out)
        self.duration = args.duration
        self.live = not (args.json or args.quiet)
        self.tty = sys.stdout.isatty()
        self.rng = random.Random(args.seed)
        self.addrs, self.port = pick_network(self.rng)
        self.names = {a: n for n, a in self.addrs.items()}
        self.nodes = {}
        self.idents = {}
        self.timeline = []
        self.stopping = False
        self.discovery = []    # discovery state changes: probing, legacy, ipsec
        self._disc_state = {}
        self.first = {}        # frozenset({a, b}) -> time of the first app datagram between them
        self.reached = {}      # (node, peer) -> {level: first time node saw peer at >= level}
        self.legacy_sent = []  # payloads the laptop's app sent to the thermostat
        self.app = {
            "camera": {"frames_sent": 0, "acks_received": 0, "status_replies_sent": 0},
            "display": {"frames_received": {}, "acks_sent": 0, "commands_done": 0,
                        "commands_refused": 0},
            "laptop": {"polls_sent": 0, "replies_received": {}, "command_sent_level": None,
                       "command_held_ms": None, "command_result": None},
        }
        self.errors = []
        self.thermostat = None
        self.elapsed = 0.0
        self.t0 = None
        self.interrupted = False
        self.final_view = None     # (nodes, legacy) when the scenario ended

    def t(self):
        return time.monotonic() - self.t0

    def name(self, host):
        return self.names.get(host, host)

    # -- setup / teardown ---------------------------------------------------------------
    def _prepare_out(self):
        os.makedirs(self.out, exist_ok=True)
        keys = os.path.join(self.out, "keys")
        os.makedirs(keys, exist_ok=True)
        for f in ("esp_sa", "ikev2_decryption_table"):   # keys of this run's capture only
            try:
                os.remove(os.path.join(keys, f))
            except FileNotFoundError:
                pass
        with open(os.path.join(keys, "preferences"), "w") as f:
            f.write("# pnp sim: decrypt ESP and check its ICV with the keys in esp_sa\n"
                    "esp.enable_encryption_decode: TRUE\n"
                    "esp.enable_authentication_check: TRUE\n")
        dec = os.path.join(keys, "decode_as_entries")
        if self.port != 4500:
            with open(dec, "w") as f:
                f.write("# pnp sim: the NAT-T port of this run is not 4500\n"
                        "decode_as_entry: udp.port,%d,(none),UDPENCAP\n" % self.port)
        elif os.path.exists(dec):
            os.remove(dec)
        return KeylogDir(keys)

    async def start(self):
        keylog = self._prepare_out()
        self.tap = Tap(os.path.join(self.out, "sim.pcap"))
        self.t0 = time.monotonic()
        for n in NODES:
            store = DirStorage(os.path.join(self.out, n))
            ident, created = identity.load_or_create(store, os.urandom)
            store.check_private(identity.FILE)
            self.idents[n] = {"fingerprint": ident.fingerprint, "created": created}
            node = Node(SimBoard(self.addrs[n], self.tap), ident, ike_port=self.port,
                        natt_port=self.port, keylog=keylog, accept_any=zero_config())
            node.on_level(self._on_level(n))
            self.nodes[n] = node
        for node in self.nodes.values():
            await node.start()
        self.thermostat = Thermostat(self.addrs[LEGACY], self.tap)
        await self.thermostat.start()
        self.ep = {n: self.nodes[n].endpoint(APP) for n in NODES}
        self.cmd = {"display": self.nodes["display"].endpoint(CMD, min_level=AUTHENTICATED),
                    "laptop": self.nodes["laptop"].endpoint(CMD)}
        for e in list(self.ep.values()) + list(self.cmd.values()):
            await e._opened.wait()
            if e.sock is None:
                raise OSError("port %d: %s" % (e.port, e.error))
        self.t0 = time.monotonic()

    def _on_level(self, n):
        def cb(host, old, new, now):
            if self.stopping:
                return      # the nodes' DELETEs at shutdown are not the scenario's
            peer = self.name(host)
            t = self.t()        # (`now` is the core's ms tick)
            self.timeline.append({"t": round(t, 4), "node": n, "peer": peer,
                                  "from": level_name(old), "to": level_name(new)})
            r = self.reached.setdefault((n, peer), {})
            for lv in range(old + 1, new + 1):
                r.setdefault(lv, t)
        return cb

    async def stop(self):
        self.stopping = True
        tasks = []
        for node in self.nodes.values():
            tasks += list(node._tasks)
            await node.stop()
        if getattr(self, "thermostat", None) is not None:
            self.thermostat.close()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)     # let the transports finish closing
        self.tap.close()

    # -- applications -------------------------------------------------------------------
    async def send(self, n, ep, data, peer, port, **kw):
        host = self.addrs[peer]
        key = frozenset((n, peer))
        self.first.setdefault(key, self.t())
        return await ep.send(data, (host, port), **kw)

    async def camera_stream(self):
        i = 0
        while True:
            try:
                await self.send("camera", self.ep["camera"], b"frame %d" % i, "display", APP)
                self.app["camera"]["frames_sent"] += 1
            except NodeError as e:
                self.errors.append("camera frame %d: %s" % (i, e))
            i += 1
            await asyncio.sleep(FRAME_EVERY)

    async def camera_rx(self):
        ep = self.ep["camera"]
        while True:
            data, addr, lv = await ep.recv()
            if data.startswith(b"ack"):
                self.app["camera"]["acks_received"] += 1
            elif data.startswith(b"status?"):
                reply = b"camera: streaming, %d frames sent" % self.app["camera"]["frames_sent"]
                try:
                    await self.send("camera", ep, reply, self.name(addr[0]), addr[1])
                    self.app["camera"]["status_replies_sent"] += 1
                except NodeError as e:
                    self.errors.append("camera reply: %s" % e)

    async def display_rx(self):
        ep = self.ep["display"]
        frames = self.app["display"]["frames_received"]
        while True:
            data, addr, lv = await ep.recv()
            if data.startswith(b"frame"):
                frames[level_name(lv)] = frames.get(level_name(lv), 0) + 1
                try:
                    await self.send("display", ep, b"ack " + data[6:], self.name(addr[0]), addr[1])
                    self.app["display"]["acks_sent"] += 1
                except NodeError as e:
                    self.errors.append("display ack: %s" % e)

    async def display_commands(self):
        ep = self.cmd["display"]
        while True:
            data, addr, lv = await ep.recv()
            if lv < AUTHENTICATED:        # the app reads each datagram's level
                self.app["display"]["commands_refused"] += 1
                continue
            self.app["display"]["commands_done"] += 1
            try:
                await self.send("display", ep, b"done: " + data, self.name(addr[0]), addr[1], timeout=2)
            except NodeError as e:
                self.errors.append("display command reply: %s" % e)

    async def laptop_poll(self):
        await asyncio.sleep(POLL_START)
        ep = self.ep["laptop"]
        i = 0
        while True:
            for peer in ("camera", LEGACY):
                data = b"status? %d" % i
                try:
                    await self.send("laptop", ep, data, peer, APP)
                    self.app["laptop"]["polls_sent"] += 1
                    if peer == LEGACY:
                        self.legacy_sent.append(data)
                except NodeError as e:
                    self.errors.append("laptop poll %s: %s" % (peer, e))
            i += 1
            await asyncio.sleep(POLL_EVERY)

    async def laptop_rx(self):
        ep = self.ep["laptop"]
        got = self.app["laptop"]["replies_received"]
        while True:
            data, addr, lv = await ep.recv()
            key = "%s@%s" % (self.name(addr[0]), level_name(lv))
            got[key] = got.get(key, 0) + 1

    async def laptop_command(self):
        await asyncio.sleep(CMD_AT)
        lap = self.app["laptop"]
        t = self.t()
        try:
            lv = await self.send("laptop", self.cmd["laptop"], b"show laptop screen", "display", CMD,
                                 min_level=AUTHENTICATED, timeout=5)
        except NodeError as e:
            lap["command_result"] = "not sent: %s" % e
            return
        lap["command_sent_level"] = level_name(lv)
        lap["command_held_ms"] = round((self.t() - t) * 1e3, 1)
        data, addr, lv = await self.cmd["laptop"].recv()
        lap["command_result"] = "%s (at %s)" % (data.decode(errors="replace"), level_name(lv))

    async def watch_discovery(self):
        """Record each node's discovery verdicts (a probe unanswered: legacy) with times."""
        while True:
            for n in NODES:
                node = self.nodes[n]
                for host in list(node.peer_stats):
                    st = node.discovery.state(inet.pton(host), node.board.now_ms())
                    old = self._disc_state.get((n, host), "unknown")
                    if st != old:
                        self._disc_state[(n, host)] = st
                        self.discovery.append({"t": round(self.t(), 3), "node": n, "peer": self.name(host),
                                               "from": old, "to": st})
            await asyncio.sleep(0.05)

    # -- views ------------------------------------------------------------------------
    def view(self):
        nodes = {}
        for n in NODES:
            peers = {}
            for host, d in sorted(self.nodes[n].view().items(), key=lambda kv: self._order(self.name(kv[0]))):
                peer = self.name(host)
                e = {"level": level_name(d.get("level", CLEAR))}
                for k in ("clear_in", "clear_out", "esp_in", "esp_out"):
                    e[k] = d.get(k, 0)
                node = self.nodes[n]
                e["discovery"] = node.discovery.state(inet.pton(host), node.board.now_ms())
                first = self.first.get(frozenset((n, peer)))
                e["first_datagram_s"] = None if first is None else round(first, 4)
                r = self.reached.get((n, peer), {})
                for lv, key in ((ENCRYPTED, "encrypted_after_ms"), (AUTHENTICATED, "authenticated_after_ms")):
                    e[key] = None if lv not in r or first is None else round((r[lv] - first) * 1e3, 1)
                peers[peer] = e
            nodes[n] = peers
        return nodes

    @staticmethod
    def _order(name):
        order = list(NODES) + [LEGACY]
        return (order.index(name) if name in order else len(order), name)

    def legacy_view(self):
        th = self.thermostat
        got = [d for d, _ in th.got]
        lap = self.addrs["laptop"]
        probes = sum(1 for r in self.tap.records if r[2] == th.addr and r[3] != APP)
        at_laptop = sum(v for k, v in self.app["laptop"]["replies_received"].items()
                        if k.startswith(LEGACY + "@"))
        marked = [e["t"] for e in self.discovery if e["node"] == "laptop" and e["peer"] == LEGACY
                  and e["to"] == "legacy"]
        return {LEGACY: {"address": th.addr, "sent_to": len(self.legacy_sent), "received": len(got),
                         "legacy_after_s": marked[0] if marked else None,
                         "exact": got == self.legacy_sent and all(a == (lap, APP) for _, a in th.got),
                         "replied": th.replied, "replies_at_laptop": at_laptop, "ike_probes": probes}}

    def table(self, final=False):
        # The final table is the view taken when the scenario ended, before the nodes
        # stopped: stopping deletes every SA, so the live nodes would then read CLEAR.
        nodes = self.final_view[0] if final and self.final_view else self.view()
        head = "pnp sim  %s  t=%.1f s of %.1f s   NAT-T port %d   out: %s" % (
            "final" if final else "live ", self.elapsed if final and self.final_view else self.t(), self.duration, self.port, self.out)
        lines = [head, "%-8s %-11s %-18s %13s %13s" % ("NODE", "PEER", "LEVEL", "CLEAR in/out", "ESP in/out")]
        for n in NODES:
            for peer, e in nodes[n].items():
                lvl = e["level"]
                if e["level"] == "CLEAR" and e["discovery"] in ("probing", "legacy"):
                    lvl += " (%s)" % e["discovery"]
                lines.append("%-8s %-11s %-18s %6d/%-6d %6d/%-6d" % (
                    n, peer, lvl, e["clear_in"], e["clear_out"], e["esp_in"], e["esp_out"]))
        lg = (self.final_view[1] if final and self.final_view else self.legacy_view())[LEGACY]
        lines.append("%-8s %s: got %d of the %d datagrams sent to it, replied %d; IKE probes sent to it %d"
                     % ("legacy", LEGACY, lg["received"], lg["sent_to"], lg["replied"], lg["ike_probes"]))
        lines.append("events:")
        events = sorted(self.timeline + [e for e in self.discovery if e["to"] == "legacy"],
                        key=lambda e: e["t"])
        if not final:
            events = events[-8:]
        if not events:
            lines.append("  (none yet)")
        for ev in events:
            if ev["to"] == "legacy":
                what = "no answer to the IKE probe: legacy, stays CLEAR"
            else:
                what = "%s -> %s" % (ev["from"], ev["to"])
            lines.append("  +%7.3f s  %-8s sees %-10s %s" % (ev["t"], ev["node"], ev["peer"], what))
        return "\n".join(lines)

    async def live_table(self):
        every = 0.5 if self.tty else 1.0
        first = True
        while True:
            if not first:
                await asyncio.sleep(every)
            first = False      # the first table right after the first datagram: still CLEAR
            text = self.table()
            if self.tty:
                sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
            else:
                sys.stdout.write(text + "\n\n")
            sys.stdout.flush()

    # -- expectations -------------------------------------------------------------------
    def expectations(self, nodes, legacy):
        out = []

        def expect(name, ok, detail=""):
            out.append({"name": name, "ok": bool(ok), "detail": detail})

        def lv(a, b):
            return nodes.get(a, {}).get(b, {}).get("level", "CLEAR")

        for a, b in (("camera", "display"), ("display", "camera")):
            expect("%s sees %s AUTHENTICATED" % (a, b), lv(a, b) == "AUTHENTICATED", "level %s" % lv(a, b))
        for a, b in (("laptop", "camera"), ("camera", "laptop"), ("laptop", "display"), ("display", "laptop")):
            ok = LEVEL_NAMES.index(lv(a, b)) >= ENCRYPTED
            expect("%s sees %s at least ENCRYPTED" % (a, b), ok, "level %s" % lv(a, b))
        cd = nodes.get("camera", {}).get("display", {})
        expect("first camera->display datagrams in clear, then ESP",
               cd.get("clear_out", 0) > 0 and cd.get("esp_out", 0) > 0,
               "clear_out %d, esp_out %d" % (cd.get("clear_out", 0), cd.get("esp_out", 0)))
        th = legacy[LEGACY]
        expect("thermostat received exactly what was sent to it",
               th["exact"] and th["sent_to"] > 0,
               "sent %d, received %d" % (th["sent_to"], th["received"]))
        expect("thermostat answered in clear and the laptop got it",
               th["replies_at_laptop"] > 0 and lv("laptop", LEGACY) == "CLEAR",
               "%d replies at laptop, level %s" % (th["replies_at_laptop"], lv("laptop", LEGACY)))
        lap = self.app["laptop"]
        expect("command reached the display at AUTHENTICATED (held, never in clear)",
               lap["command_sent_level"] == "AUTHENTICATED" and self.app["display"]["commands_done"] == 1
               and self.app["display"]["commands_refused"] == 0,
               "sent at %s, result %s" % (lap["command_sent_level"], lap["command_result"]))
        return out

    # -- main ---------------------------------------------------------------------------
    async def main(self):
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            await self.start()
            receivers = [asyncio.create_task(c()) for c in
                         (self.camera_rx, self.display_rx, self.display_commands, self.laptop_rx,
                          self.watch_discovery)]
            senders = [asyncio.create_task(c()) for c in
                       (self.camera_stream, self.laptop_poll, self.laptop_command)]
            shows = [asyncio.create_task(self.live_table())] if self.live else []
            try:
                await asyncio.wait_for(stop.wait(), max(0.1, self.duration - DRAIN))
                self.interrupted = True
            except asyncio.TimeoutError:
                pass
            for tk in senders:
                tk.cancel()
            if not self.interrupted:
                await asyncio.sleep(DRAIN)
            self.elapsed = self.t()
            nodes, legacy = self.view(), self.legacy_view()
            # The scenario ends here: what the levels do from now on (the SAs deleted as
            # the nodes stop) is shutdown, not a level change of the run.
            self.stopping = True
            self.final_view = (nodes, legacy)
            for tk in receivers + shows:
                tk.cancel()
            await asyncio.gather(*(senders + receivers + shows), return_exceptions=True)
        finally:
            if self.nodes:
                await self.stop()
            for sig in installed:
                loop.remove_signal_handler(sig)
        return nodes, legacy


def _readme(sim, result):
    decode = ""
    if sim.port != 4500:
        decode = (" -d udp.port==%d,udpencap" % sim.port)
    return """pnp sim output
==============

sim.pcap   every UDP datagram the three nodes (camera %(camera)s, display %(display)s,
           laptop %(laptop)s) and the legacy thermostat (%(thermostat)s) sent, recorded
           at their sockets (raw IPv4 + UDP, headers synthesized). IKE and ESP use UDP
           port %(port)d (RFC 3948 encapsulation); applications use ports 7000 and 7001.
keys/      a Wireshark configuration folder with this run's keys: esp_sa and
           ikev2_decryption_table (secret keys: demo only!) and preferences that turn
           ESP decryption and ICV checking on.
view.json  the final view (levels and datagram counts per node and peer, timeline).
camera/ display/ laptop/   each node's identity (made on the first run, then reused).

Open the capture in Wireshark with these keys:

    WIRESHARK_CONFIG_DIR=%(keys)s wireshark %(pcap)s

or in tshark:

    WIRESHARK_CONFIG_DIR=%(keys)s tshark -r %(pcap)s%(decode)s \\
        -o esp.enable_encryption_decode:TRUE -o esp.enable_authentication_check:TRUE

Useful display filters: "isakmp" (IKE: IKE_SA_INIT, IKE_AUTH and the INFORMATIONAL
carrying the identity proof, decrypted), "esp" (ESP, decrypted; the ICV is checked),
"udp.port == 7000 && !esp" (what travelled in clear: the first datagrams and all of
the thermostat's traffic).

Wireshark 4.0 does not know the NULL identity type of RFC 7619 (ID_NULL, 13): it
shows the IKE_AUTH identification as "Future use (13)" followed by a "Dissector bug
... len > 0" note. The message is decrypted and its integrity checked all the same
("Integrity Checksum Data ... [correct]").

Result of this run: %(result)s
""" % {"camera": sim.addrs["camera"], "display": sim.addrs["display"], "laptop": sim.addrs["laptop"],
       "thermostat": sim.addrs[LEGACY], "port": sim.port, "keys": os.path.join(sim.out, "keys"),
       "pcap": os.path.join(sim.out, "sim.pcap"), "decode": decode, "result": result}


def run(args) -> int:
    if args.duration < MIN_DURATION:
        print("pnp sim: --duration must be at least %.1f s" % MIN_DURATION, file=sys.stderr)
        return 2
    try:
        sim = Sim(args)
    except (OSError, StoreError) as e:
        print("pnp sim: %s" % e, file=sys.stderr)
        return 2
    try:
        nodes, legacy = asyncio.run(sim.main())
    except (identity.IdentityError, StoreError) as e:
        print("pnp sim: %s" % e, file=sys.stderr)
        return 2
    except OSError as e:
        print("pnp sim: %s" % e, file=sys.stderr)
        return 2
    exp = [] if sim.interrupted else sim.expectations(nodes, legacy)
    ok = not sim.interrupted and all(e["ok"] for e in exp)
    result = {"nodes": nodes, "legacy": legacy, "timeline": sim.timeline, "discovery": sim.discovery,
              "app": sim.app,
              "identities": sim.idents, "addresses": sim.addrs, "natt_port": sim.port,
              "app_port": APP, "command_port": CMD, "duration_s": round(sim.elapsed, 3),
              "out": sim.out, "pcap_packets": len(sim.tap.records),
              "expectations": exp, "ok": ok}
    if sim.interrupted:
        result["interrupted"] = True
    if sim.errors:
        result["errors"] = sim.errors[:20]
    with open(os.path.join(sim.out, "view.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    verdict = "interrupted" if sim.interrupted else ("all expectations met" if ok else "FAILED")
    with open(os.path.join(sim.out, "README.txt"), "w") as f:
        f.write(_readme(sim, verdict))

    try:
        _report(sim, args, result, exp, verdict)
    except BrokenPipeError:      # `pnp sim | head`: the reader left; the files are written
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    for e in exp:
        if not e["ok"]:
            print("pnp sim: expectation failed: %s (%s)" % (e["name"], e["detail"]), file=sys.stderr)
    if sim.interrupted:
        print("pnp sim: interrupted; outputs written to %s" % sim.out, file=sys.stderr)
        return 130
    return 0 if ok else 1


def _report(sim, args, result, exp, verdict):
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        if sim.live:
            if sim.tty:
                sys.stdout.write("\x1b[H\x1b[2J")
            print(sim.table(final=True))
            print()
        for n in NODES:
            for peer, e in result["nodes"][n].items():
                if e["encrypted_after_ms"] is not None:
                    print("%-8s sees %-8s first datagram at %.3f s, ENCRYPTED %+.1f ms, AUTHENTICATED %s"
                          % (n, peer, e["first_datagram_s"], e["encrypted_after_ms"],
                             "never" if e["authenticated_after_ms"] is None else "%+.1f ms" % e["authenticated_after_ms"]))
        for n in NODES:
            i = sim.idents[n]
            print("%-8s identity %s (%s)" % (n, i["fingerprint"], "created" if i["created"] else "reused"))
        for e in exp:
            print("%s %s: %s" % ("ok  " if e["ok"] else "FAIL", e["name"], e["detail"]))
        print("wrote %s (%d packets), %s, %s, %s" % (
            os.path.join(sim.out, "sim.pcap"), len(sim.tap.records), os.path.join(sim.out, "keys") + "/",
            os.path.join(sim.out, "view.json"), os.path.join(sim.out, "README.txt")))
        print("open it: see %s" % os.path.join(sim.out, "README.txt"))
        print("pnp sim: %s" % verdict)
    sys.stdout.flush()
