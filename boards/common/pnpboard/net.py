"""Network bring-up helpers shared by the ESP32 and RP2 boards.

* load_wifi(path): the Wi-Fi credentials file the user writes once, e.g. /wifi.json
      {"ssid": "home", "key": "secret"}      optional: "country": "DE", "hostname": "cam1",
                                              "timeout": 30 (seconds)
  Missing or corrupt files raise WifiConfigError with a message saying what to write.
* connect(wlan, cfg, ...): station bring-up with a deadline (async, asyncio sleeps).
* addresses4(wlan) / addresses6(wlan): the interface's addresses, parsed from
  WLAN.ipconfig('addr4') (or the older ifconfig()) and WLAN.ipconfig('addr6'), whose
  entries are (address, state, preferred_lifetime, valid_lifetime) with lwIP's state
  numbers (extmod/network_lwip.c; lwIP ip6_addr.h: PREFERRED 0x30, DEPRECATED = VALID
  0x10, TENTATIVE 0x08..0x0f, DUPLICATED 0x40).
* detect_ipv6(wlan, socket_module): (True, "...") or (False, reason), decided at run time.
* AddressWatcher: polls the address list and reports address events ("added",
  "deprecated", "removed" with lifetimes and flags) to callbacks (SLAAC renumbering,
  DHCP changes); order_addresses (stable first), follow(board, node, report) (the
  board -> node glue) and node_addresses (the MOBIKE hook, where the node has it).
"""

try:
    import json
except ImportError:  # pragma: no cover
    import ujson as json

try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio

WIFI_FILE = "/wifi.json"
_EXAMPLE = '{"ssid": "your-network", "key": "your-password"}'

# lwIP IPv6 address states (lwip/ip6_addr.h)
ST_TENTATIVE = 0x08
ST_VALID = 0x10
ST_PREFERRED = 0x30
ST_DUPLICATED = 0x40


class WifiConfigError(Exception):
    pass


class NetworkError(Exception):
    pass


def _sleep_ms(ms):
    f = getattr(asyncio, "sleep_ms", None)
    if f is not None:
        return f(ms)
    return asyncio.sleep(ms / 1000)


def load_wifi(path=WIFI_FILE, opener=open):
    """The credentials dict {"ssid", "key", ...} or WifiConfigError saying how to fix it."""
    try:
        with opener(path) as f:
            text = f.read()
    except OSError:
        raise WifiConfigError("Wi-Fi: no credentials file %s; write one, e.g. with\n"
                              "  mpremote fs cp wifi.json :%s\nholding %s" % (path, path, _EXAMPLE))
    if isinstance(text, (bytes, bytearray)):
        try:
            text = text.decode()
        except UnicodeError:
            raise WifiConfigError("Wi-Fi: %s is not UTF-8 text" % path)
    try:
        cfg = json.loads(text)
    except ValueError:
        raise WifiConfigError("Wi-Fi: %s is not valid JSON; expected %s" % (path, _EXAMPLE))
    if not isinstance(cfg, dict):
        raise WifiConfigError("Wi-Fi: %s must hold a JSON object like %s" % (path, _EXAMPLE))
    ssid = cfg.get("ssid")
    if not isinstance(ssid, str) or not ssid:
        raise WifiConfigError("Wi-Fi: %s has no \"ssid\" (a non-empty string)" % path)
    key = cfg.get("key", cfg.get("password"))
    if key is None:
        key = ""
    if not isinstance(key, str):
        raise WifiConfigError("Wi-Fi: \"key\" in %s must be a string" % path)
    out = {"ssid": ssid, "key": key}
    t = cfg.get("timeout", 30)
    if not isinstance(t, (int, float)) or isinstance(t, bool) or t <= 0:
        raise WifiConfigError("Wi-Fi: \"timeout\" in %s must be a positive number of seconds" % path)
    out["timeout"] = t
    for opt in ("country", "hostname"):
        v = cfg.get(opt)
        if v is not None:
            if not isinstance(v, str) or not v:
                raise WifiConfigError("Wi-Fi: \"%s\" in %s must be a non-empty string" % (opt, path))
            out[opt] = v
    return out


def apply_globals(network_module, cfg):
    """Country and hostname are module-level settings (network.country/hostname, 1.20+);
    they must be set before the interface is activated."""
    for opt in ("country", "hostname"):
        v = cfg.get(opt)
        f = getattr(network_module, opt, None)
        if v and f is not None:
            try:
                f(v)
            except (OSError, ValueError):
                pass


async def connect(wlan, cfg, clock_ms, log=None, poll_ms=200):
    """Activate the station interface and join cfg["ssid"]; NetworkError on timeout.
    clock_ms() -> int milliseconds (monotonic)."""
    log = log or (lambda m: None)
    wlan.active(True)
    if wlan.isconnected():
        return
    log("Wi-Fi: joining %r" % cfg["ssid"])
    wlan.connect(cfg["ssid"], cfg["key"])
    deadline = clock_ms() + int(cfg.get("timeout", 30) * 1000)
    while not wlan.isconnected():
        if clock_ms() >= deadline:
            st = None
            try:
                st = wlan.status()
            except (OSError, AttributeError, TypeError):
                pass
            raise NetworkError("Wi-Fi: could not join %r within %s s (status %r)"
                               % (cfg["ssid"], cfg.get("timeout", 30), st))
        await _sleep_ms(poll_ms)
    log("Wi-Fi: joined %r" % cfg["ssid"])


def addresses4(wlan):
    """[(address, netmask)] for IPv4 ([] while unconfigured)."""
    addr = mask = None
    try:
        addr, mask = wlan.ipconfig("addr4")[:2]
    except (AttributeError, ValueError, TypeError, OSError):
        try:
            cfg = wlan.ifconfig()
            addr, mask = cfg[0], cfg[1]
        except (AttributeError, OSError, TypeError, IndexError):
            return []
    if not addr or addr == "0.0.0.0":
        return []
    return [(addr, mask)]


def state_name(state):
    if state & ST_DUPLICATED:
        return "duplicated"
    if (state & ST_PREFERRED) == ST_PREFERRED:
        return "preferred"
    if state & ST_VALID:
        return "deprecated"
    if state & ST_TENTATIVE:
        return "tentative"
    return "invalid"


def parse_addr6(entries):
    """Normalise WLAN.ipconfig('addr6') output: [(addr, state_name, preferred_s, valid_s)].
    Accepts the 4-tuples of extmod/network_lwip.c and bare strings (other firmwares)."""
    out = []
    for e in entries or ():
        if isinstance(e, str):
            out.append((e.split("%")[0].lower(), "preferred", None, None))
            continue
        addr = e[0]
        st = e[1] if len(e) > 1 else ST_PREFERRED
        pref = e[2] if len(e) > 2 else None
        valid = e[3] if len(e) > 3 else None
        out.append((addr.split("%")[0].lower(), state_name(st) if isinstance(st, int) else str(st),
                    pref, valid))
    return out


def addresses6(wlan):
    """parse_addr6(wlan.ipconfig('addr6')), or [] when the firmware has no 'addr6'."""
    try:
        return parse_addr6(wlan.ipconfig("addr6"))
    except (AttributeError, ValueError, TypeError, OSError):
        return []


def is_link_local(addr):
    return addr.lower().startswith("fe8") or addr.lower().startswith("fe9") \
        or addr.lower().startswith("fea") or addr.lower().startswith("feb")


def detect_ipv6(wlan, socket_module):
    """(True, detail) when this firmware can do IPv6 UDP, else (False, reason).

    Three run-time checks, each of which the stock ESP32 firmware fails at least one of:
    WLAN.ipconfig('addr6') must answer (the ESP32 port raises ValueError "unexpected
    key": ports/esp32/network_common.c), socket must have AF_INET6, and an AF_INET6
    UDP socket must bind to ("::", 0)."""
    try:
        wlan.ipconfig("addr6")
    except (AttributeError, ValueError, TypeError, OSError) as e:
        return False, "WLAN.ipconfig('addr6') not available (%s)" % (e.__class__.__name__,)
    af6 = getattr(socket_module, "AF_INET6", None)
    if af6 is None:
        return False, "socket has no AF_INET6"
    s = None
    try:
        s = socket_module.socket(af6, socket_module.SOCK_DGRAM)
        s.bind(("::", 0))
    except (OSError, ValueError, TypeError) as e:
        return False, "cannot bind an AF_INET6 UDP socket (%s: %s)" % (e.__class__.__name__, e)
    finally:
        if s is not None:
            try:
                s.close()
            except OSError:
                pass
    return True, "IPv6 UDP available"


def ipv6_line(ok, reason):
    if ok:
        return "IPv6: supported by this firmware"
    return "IPv6: not supported by this firmware (%s); running IPv4 only" % reason


# Address events (every board reports these; boards/host/netlink.py builds the same):
#     (kind, address, zone, preferred_s, valid_s, flags)
# kind "added" (usable now: new, or back from deprecated/tentative), "deprecated" (still
# valid, no longer preferred: keep existing SAs, start nothing new on it) or "removed"
# (gone, duplicated, or expired). zone: the interface (name or index) or None where the
# board has one interface; lifetimes in seconds (None when the board does not say;
# 0xFFFFFFFF or lwIP's 0 for "forever"); flags a tuple of words: "temporary" (RFC 8981
# privacy address), "stable" (any other global IPv6 address), "link-local", "ipv4".
ADDED = "added"
DEPRECATED = "deprecated"
REMOVED = "removed"


def addr_flags(addr, temporary=False):
    if ":" not in addr:
        return ("ipv4",)
    if is_link_local(addr):
        return ("link-local",)
    return ("temporary",) if temporary else ("stable",)


def order_addresses(entries):
    """Addresses to use for IKE, best first, from [(addr, state, ..., flags?)]: only
    preferred ones; stable global IPv6, then temporary global IPv6, then link-local IPv6,
    then IPv4. A stable address outlives temporaries, so SAs set up on it move less."""
    out = [[], [], [], []]
    for e in entries:
        if e[1] != "preferred":
            continue
        a = e[0]
        fl = e[5] if len(e) > 5 else addr_flags(a)
        if ":" not in a:
            out[3].append(a)
        elif is_link_local(a):
            out[2].append(a)
        elif "temporary" in fl:
            out[1].append(a)
        else:
            out[0].append(a)
    return out[0] + out[1] + out[2] + out[3]


def node_addresses(node, addrs):
    """Give the node its current local addresses through
    node.local_addresses_changed(addrs), which sets node.addresses and moves MOBIKE SAs
    off addresses that are gone (a node without it just gets node.addresses). Returns
    True when the hook ran."""
    addrs = list(addrs)
    hook = getattr(node, "local_addresses_changed", None)
    if hook is None:
        node.addresses = addrs
        return False
    hook(addrs)
    return True


def follow(board, node, report=None, log=None):
    """Glue a board's address events to a node (pnpboard.app and custom apps): on every
    change the node gets board.address_list() (stable first) through node_addresses,
    then report(events) -- the app's callback -- runs. Errors are logged, never raised
    into the board's watcher."""
    log = log or (lambda m: None)

    def changed(events):
        try:
            node_addresses(node, board.address_list())
        except Exception as e:  # noqa: BLE001 - the watcher keeps running
            log("address change: node update failed: %r" % (e,))
        if report is not None:
            report(events)
    board.on_address_change(changed)
    return changed


def diff_states(old, new):
    """Events between two snapshots {addr: (state, zone, preferred, valid, flags)}."""
    events = []
    for addr in sorted(new):
        st, zone, pref, valid, fl = new[addr]
        was = old.get(addr)
        was_st = was[0] if was is not None else None
        if st == "preferred" and was_st != "preferred":
            events.append((ADDED, addr, zone, pref, valid, fl))
        elif st == "deprecated" and was_st != "deprecated":
            events.append((DEPRECATED, addr, zone, pref, valid, fl))
        elif st not in ("preferred", "deprecated") and was_st in ("preferred", "deprecated"):
            events.append((REMOVED, addr, zone, pref, valid, fl))    # duplicated, invalid
    for addr in sorted(old):
        if addr not in new and old[addr][0] in ("preferred", "deprecated"):
            st, zone, pref, valid, fl = old[addr]
            events.append((REMOVED, addr, zone, 0, 0, fl))
    return events


class AddressWatcher:
    """Polls get_addrs() -> [(addr, state, preferred, valid[, zone, flags])] and reports
    changes as address events (above): "added", "deprecated", "removed". Tentative
    addresses are reported once they become preferred. Lifetimes alone changing (they
    count down) is not a change. Callbacks registered with on_change(cb) get the list
    of events of one poll; a callback that raises is logged and never stops the
    watcher."""

    def __init__(self, get_addrs, interval=5.0, log=None):
        self.get_addrs = get_addrs
        self.interval = interval
        self.log = log or (lambda m: None)
        self.current = {}
        self.entries = []
        self._cbs = []
        self._task = None

    def on_change(self, cb):
        self._cbs.append(cb)

    def emit(self, events):
        for cb in self._cbs:
            try:
                cb(events)
            except Exception as e:  # a broken consumer must not stop the reports
                self.log("address callback failed: %r" % (e,))

    def poll(self):
        """Read the addresses now; returns (and reports) the list of change events."""
        now = {}
        entries = []
        for a in self.get_addrs():
            zone = a[4] if len(a) > 4 else None
            fl = a[5] if len(a) > 5 else addr_flags(a[0])
            now[a[0]] = (a[1], zone, a[2] if len(a) > 2 else None, a[3] if len(a) > 3 else None, fl)
            entries.append((a[0], a[1], now[a[0]][2], now[a[0]][3], zone, fl))
        events = diff_states(self.current, now)
        self.current = now
        self.entries = entries
        if events:
            self.emit(events)
        return events

    def usable(self):
        """Addresses a node should use now (not tentative, deprecated or duplicated)."""
        return [a for a in sorted(self.current) if self.current[a][0] == "preferred"]

    def ordered(self):
        """usable(), best for IKE first (order_addresses)."""
        return order_addresses(self.entries)

    async def run(self):
        while True:
            try:
                self.poll()
            except Exception as e:
                self.log("address poll failed: %r" % (e,))
            await _sleep_ms(int(self.interval * 1000))

    def start(self):
        if self._task is None:
            self._task = asyncio.create_task(self.run())
        return self._task

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None
