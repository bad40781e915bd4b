"""TOML node configuration for `pnp node` / `pnp send`, turned into engine objects.

Every problem is a ConfigError naming the file and the key, so a user can fix it
without reading code: a file that is missing, unreadable, not a regular file or not
UTF-8, TOML syntax errors, values of the wrong type, unknown keys. The commands print it
as one line and exit 2.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field

from pnpipsec import inet, policy
from pnpipsec.identity import IdentityError, public_from_pem
from pnpipsec.ike.engine import PeerConfig
from pnpipsec.node import PeerEntry, zero_config

SUPPORTED_IKE = ("aes128-sha256-x25519",)
SUPPORTED_ESP = ("aes128-sha256",)
ID_TYPES = {"ipv4": 1, "fqdn": 2, "email": 3, "ipv6": 5, "keyid": 11}
ID_NULL = 13
PEER_KEYS = {"address", "auth", "psk", "local_id", "remote_id", "peer_pubkey", "mode",
             "local_ts", "remote_ts", "proposals", "esp_proposals", "childless",
             "ike_port", "natt_port"}
TOP_KEYS = {"state", "addresses", "bind", "ike_port", "natt_port", "keylog", "peer", "accept_any",
            "zero_config", "tofu", "spd"}
# [accept_any] describes any peer, so it has no address or ports of its own.
ACCEPT_ANY_KEYS = PEER_KEYS - {"address", "ike_port", "natt_port"}
MAX_CONFIG = 1 << 20
# A PSK shorter than this is refused: IKEv2 PSK authentication falls to an offline
# dictionary attack by anyone who sees (or is) the other end of one handshake, so the
# key must carry real entropy. 16 bytes (of UTF-8) is the floor, not a target:
# use a long random secret (`openssl rand -base64 24`).
MIN_PSK = 16


class ConfigError(Exception):
    """A config problem; the text starts with the config file's path."""


@dataclass
class NodeConfig:
    path: str
    state: str
    addresses: list = field(default_factory=list)
    bind: list = field(default_factory=list)    # addresses to bind (empty: all, both families)
    ike_port: int = 500
    natt_port: int = 4500
    keylog: str | None = None
    peers: list = field(default_factory=list)
    accept_any: PeerConfig | None = None
    tofu: bool = True
    spd: object = None


def _read(path: str) -> bytes:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config: {_why(e)}") from None
    if not stat.S_ISREG(st.st_mode):
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a file"
        raise ConfigError(f"{path}: not a regular file ({what})")
    if st.st_size > MAX_CONFIG:
        raise ConfigError(f"{path}: too large for a config ({st.st_size} bytes)")
    try:
        with open(path, "rb") as f:
            return f.read(MAX_CONFIG + 1)
    except PermissionError:
        raise ConfigError(f"{path}: permission denied (cannot read the config)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config: {_why(e)}") from None


def _why(e):
    text = e.strerror or str(e)
    return text[:1].lower() + text[1:]


def load(path: str) -> NodeConfig:
    data = _read(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 (byte {e.start})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    try:
        return _load(path, raw)
    except ConfigError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as e:
        # Every value is checked above; this is the net for a combination we missed,
        # so that the user still gets one line naming the file instead of a traceback.
        raise ConfigError(f"{path}: invalid configuration: {e}") from None


def _load(path, raw) -> NodeConfig:
    base = os.path.dirname(os.path.abspath(path))
    where = lambda key: f"{path}: {key}"  # noqa: E731
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise ConfigError(where(f"unknown key(s) {sorted(unknown)}; known: {sorted(TOP_KEYS)}"))
    cfg = NodeConfig(path=path, state=_path(base, _str(raw.get("state", "state"), where("state"))))
    cfg.addresses = [_addr(a, where("addresses")) for a in _list(raw.get("addresses", []), where("addresses"))]
    cfg.bind = [_addr(a, where("bind")) for a in _list(raw.get("bind", []), where("bind"))]
    fams = [len(inet.pton(a)) for a in cfg.bind]
    if len(set(fams)) != len(fams):
        raise ConfigError(where("bind: at most one IPv6 and one IPv4 address (%s)" % ", ".join(cfg.bind)))
    cfg.ike_port = _port(raw.get("ike_port", 500), where("ike_port"))
    cfg.natt_port = _port(raw.get("natt_port", 4500), where("natt_port"))
    if raw.get("keylog") is not None:
        cfg.keylog = _path(base, _str(raw["keylog"], where("keylog")))
    peers = raw.get("peer", [])
    if not isinstance(peers, list):
        raise ConfigError(where("peer must be an array of tables: [[peer]]"))
    seen = {}
    for i, p in enumerate(peers):
        entry = _peer(p, base, f"{path}: peer[{i}]", cfg)
        if entry.host in seen:
            raise ConfigError(f"{path}: peer[{i}].address: {entry.host} is already peer[{seen[entry.host]}]"
                              " (one [[peer]] per address)")
        if entry.host in cfg.bind:
            raise ConfigError(f"{path}: peer[{i}].address: {entry.host} is our own address (in 'bind')")
        seen[entry.host] = i
        cfg.peers.append(entry)
    if raw.get("accept_any") is not None:
        aa = raw["accept_any"]
        if not isinstance(aa, dict):
            raise ConfigError(where("accept_any: must be a table: [accept_any]"))
        unknown = set(aa) - ACCEPT_ANY_KEYS
        if unknown:
            raise ConfigError(where(f"accept_any: unknown key(s) {sorted(unknown)}; known: {sorted(ACCEPT_ANY_KEYS)}"))
        cfg.accept_any = _peer_cfg(aa, base, where("accept_any"), cfg, None)
    # Plug and play: zero_config is on unless the file says otherwise (or describes
    # unknown peers itself with [accept_any]).
    zc = raw.get("zero_config", cfg.accept_any is None)
    if not isinstance(zc, bool):
        raise ConfigError(where("zero_config must be true or false"))
    if zc:
        if cfg.accept_any is not None:
            raise ConfigError(where("zero_config = true and [accept_any] both set: choose one"))
        cfg.accept_any = zero_config()
    tofu = raw.get("tofu", True)
    if not isinstance(tofu, bool):
        raise ConfigError(where("tofu must be true or false"))
    cfg.tofu = tofu
    spd = raw.get("spd", [])
    if not isinstance(spd, list):
        raise ConfigError(where("spd must be an array of tables: [[spd]]"))
    for i, entry in enumerate(spd):
        if not isinstance(entry, dict):
            raise ConfigError(where(f"spd[{i}]: must be a table"))
    try:
        cfg.spd = policy.Spd.from_dicts(spd)
    except ValueError as e:
        raise ConfigError(where(str(e)))
    return cfg


def _peer(p, base, where, cfg):
    if not isinstance(p, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = set(p) - PEER_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(PEER_KEYS)}")
    if "address" not in p:
        raise ConfigError(f"{where}: missing 'address'")
    host = _addr(p["address"], f"{where}.address")
    if host in ("::", "0.0.0.0"):
        raise ConfigError(f"{where}.address: {host} is the unspecified address, not a peer")
    pc = _peer_cfg(p, base, where, cfg, host)
    ike_port = _port(p.get("ike_port", 500), f"{where}.ike_port")
    natt_port = _port(p.get("natt_port", 4500), f"{where}.natt_port")
    return PeerEntry(host, pc, ike_port=ike_port, natt_port=natt_port)


def _peer_cfg(p, base, where, cfg, host):
    auth = p.get("auth", "null")
    if not isinstance(auth, str) or auth not in ("null", "psk", "pubkey"):
        raise ConfigError(f"{where}.auth: {auth!r} is not one of null, psk, pubkey")
    for key, supported in (("proposals", SUPPORTED_IKE), ("esp_proposals", SUPPORTED_ESP)):
        for prop in _list(p.get(key, list(supported)), f"{where}.{key}"):
            if prop not in supported:
                raise ConfigError(f"{where}.{key}: {prop!r} unsupported; supported: {', '.join(supported)}")
    psk = None
    if auth == "psk":
        if "psk" not in p or p["psk"] == "":
            raise ConfigError(f"{where}.psk: auth = \"psk\" needs a non-empty psk")
        psk = _str(p["psk"], f"{where}.psk").encode()
        if len(psk) < MIN_PSK:
            raise ConfigError(f"{where}.psk: too short ({len(psk)} bytes; at least {MIN_PSK}: "
                              "use a long random secret)")
    elif "psk" in p:
        raise ConfigError(f"{where}.psk: set, but auth is {auth!r} (psk needs auth = \"psk\")")
    pub = None
    if auth == "pubkey":
        if not p.get("peer_pubkey"):
            raise ConfigError(f"{where}.peer_pubkey: auth = \"pubkey\" needs the peer's public key file")
        pub = _pubkey(_path(base, _str(p["peer_pubkey"], f"{where}.peer_pubkey")), f"{where}.peer_pubkey")
    mode = p.get("mode", "transport")
    if not isinstance(mode, str) or mode not in ("transport", "tunnel"):
        raise ConfigError(f"{where}.mode: {mode!r} is not transport or tunnel")
    default_id = "null" if auth == "null" else None
    local_id = _id(p.get("local_id", default_id), f"{where}.local_id", cfg, host)
    remote_id = _id(p.get("remote_id", default_id), f"{where}.remote_id", cfg, host)
    local_ts = [_prefix(t, f"{where}.local_ts") for t in _list(p.get("local_ts", []), f"{where}.local_ts")]
    remote_ts = [_prefix(t, f"{where}.remote_ts") for t in _list(p.get("remote_ts", []), f"{where}.remote_ts")]
    if mode == "tunnel" and host is not None and not local_ts:
        fam = len(inet.pton(host))
        mine = [a for a in cfg.addresses if len(inet.pton(a)) == fam]
        if not mine:
            raise ConfigError(f"{where}: tunnel mode needs local_ts or an address of the peer's family in 'addresses'")
        local_ts = [_prefix(mine[0], f"{where}.local_ts")]
    if mode == "tunnel" and host is not None and not remote_ts:
        remote_ts = [_prefix(host, f"{where}.remote_ts")]
    childless = p.get("childless", False)
    if not isinstance(childless, bool):
        raise ConfigError(f"{where}.childless: must be true or false")
    return PeerConfig(auth=auth, local_id=local_id, remote_id=remote_id, psk=psk,
                      peer_pubkey=pub, mode=mode, local_ts=local_ts or None,
                      remote_ts=remote_ts or None, childless=childless)


def _id(text, where, cfg, host):
    """'null', 'fqdn:x', 'email:x', 'ipv4:a', 'ipv6:a', 'keyid:hex'; None = our own address."""
    if text is None:
        fam = len(inet.pton(host)) if host else 16
        mine = [a for a in cfg.addresses if len(inet.pton(a)) == fam]
        if not mine:
            return None
        return (5 if fam == 16 else 1, inet.pton(mine[0]))
    if text == "null":
        return (ID_NULL, b"")
    kind, sep, value = _str(text, where).partition(":")
    if not sep or kind not in ID_TYPES:
        raise ConfigError(f"{where}: {text!r} must be null or one of {', '.join(k + ':...' for k in ID_TYPES)}")
    if kind in ("ipv4", "ipv6"):
        b = _pton(value, where)
        if len(b) != (4 if kind == "ipv4" else 16):
            raise ConfigError(f"{where}: {value!r} is not an {kind} address")
        return (ID_TYPES[kind], b)
    if kind == "keyid":
        try:
            return (ID_TYPES[kind], bytes.fromhex(value))
        except ValueError:
            raise ConfigError(f"{where}: keyid must be hex")
    return (ID_TYPES[kind], value.encode())


def _pubkey(path, where):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {path}: {e.strerror}")
    try:
        return public_from_pem(data)
    except IdentityError as e:
        raise ConfigError(f"{where}: {path}: {e}")


def _prefix(text, where):
    addr, _, plen = str(text).partition("/")
    b = _pton(addr, where)
    bits = len(b) * 8
    try:
        n = int(plen) if plen else bits
    except ValueError:
        raise ConfigError(f"{where}: bad prefix length in {text!r}")
    if not 0 <= n <= bits:
        raise ConfigError(f"{where}: prefix length {n} out of range in {text!r}")
    v = int.from_bytes(b, "big")
    host_mask = (1 << (bits - n)) - 1
    start = (v & ~host_mask).to_bytes(len(b), "big")
    end = (v | host_mask).to_bytes(len(b), "big")
    return (start, end)


def _pton(text, where):
    try:
        return inet.pton(str(text))
    except (ValueError, IndexError):
        raise ConfigError(f"{where}: {text!r} is not an IPv4 or IPv6 address")


def _addr(text, where):
    if not isinstance(text, str):
        raise ConfigError(f"{where}: {text!r} is not an IPv4 or IPv6 address (a string)")
    b = _pton(text, where)
    if len(b) == 16 and b[:12] == bytes(10) + b"\xff\xff":
        raise ConfigError(f"{where}: {text!r} is an IPv4-mapped address: write the IPv4 address")
    return inet.ntop(b)


def _port(v, where):
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 65535:
        raise ConfigError(f"{where}: {v!r} is not a port number 1-65535")
    return v


def _str(v, where):
    if not isinstance(v, str):
        raise ConfigError(f"{where}: must be a string, not {v!r}")
    return v


def _list(v, where):
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list):
        raise ConfigError(f"{where}: must be a list")
    return v


def _path(base, p):
    return p if os.path.isabs(p) else os.path.join(base, p)
