"""What a running node is doing, as a dict (`pnp status --json`) and as text (`pnp status`),
read from the node's own records (pnpipsec.node.Peer, the engine's SAs, ESP counters,
discovery, pins). Host only: a board has no control socket.

    describe(node) -> {"identity", "ike_port", "natt_port", "addresses", "counters",
                       "peers": [peer, ...]}
    peer: {"address", "configured", "identity", "level", "level_for_s", "natt_port",
           "pin": {"state", "pinned", "presents"} or None, "proved",
           "ike": {...} or None, "children": [{...}], "discovery": {...},
           "traffic": the record's counters, "failed": the last failure or None,
           "why": why the level is not higher (None when nothing holds it back)}

`why` is one line: "no answer (timeout)", "legacy: no IKE answer ...",
"NO_PROPOSAL_CHOSEN (from the peer)", "key changed: awaiting approval ...",
"refused by policy (we refused)", ... (see why_not).
"""

from __future__ import annotations

import binascii

from pnpipsec import AUTHENTICATED, CLEAR, ENCRYPTED, LEVEL_NAMES, inet
from pnpipsec.discovery import LEGACY
from pnpipsec.identity import fingerprint
from pnpipsec.ticks import diff


def _hex(b):
    return binascii.hexlify(b).decode()


def _secs(t, now, past=False):
    """Seconds from now to tick t (from t to now when past), or None."""
    if t is None:
        return None
    d = diff(now, t) if past else diff(t, now)
    return round(d / 1000, 1)


def _norm(host):
    return inet.ntop(inet.pton(host))


def _pin(node, host):
    try:
        got = node.pins.get(inet.pton(host))
    except Exception:  # noqa: BLE001 - a status never fails on the store
        return None
    if got is None:
        return None
    key, state, pending = got
    return {"state": state, "pinned": fingerprint(key),
            "presents": fingerprint(pending) if pending is not None else None}


def why_not(node, host) -> str | None:
    """Why `host` is not at a higher level than it is now (one line), or None."""
    host = _norm(host)
    p = node.by_host.get(host)
    lv = node.level(host)
    if lv >= AUTHENTICATED:
        return None
    if lv == ENCRYPTED and p is not None and p.out is not None:
        sa = p.out.child.ike
        key = node._proved_key(host, sa)
        if key is None:
            return "no identity proof from the peer on this SA (NULL authentication only)"
        pin = _pin(node, host)
        if pin is not None and pin["presents"] == fingerprint(key):
            return ("key changed: awaiting approval (pnp pins approve %s --pending), pinned %s, "
                    "now presents %s" % (host, pin["pinned"], pin["presents"]))
        if pin is None:
            if len(node.pins) >= node.pins.limit:
                return "pin store full: its key is not pinned"
            return "awaiting approval: its key is not pinned (pnp pins approve %s --key ...)" % host
        if not node.tofu and pin["state"] != "approved":
            return "awaiting approval: tofu = false (pnp pins approve %s --key ...)" % host
        return "its proved key is not the pinned one"
    if p is None:
        return None if node.peer_for(host) is None else "no SA yet"
    if p.failed in ("deleted", "deleted by peer"):
        return "no SA (the last one was %s)" % p.failed
    if p.failed:
        return p.failed
    sa = p.initiating
    if sa is not None:
        err = getattr(sa, "init_error", None)
        if err:
            return "%s (from the peer, unauthenticated: still waiting for another answer)" % err
        return "handshake under way (%s)" % sa.state
    if p.ike is not None and p.out is None:
        return "IKE SA up without a CHILD SA"
    d = p.disc
    if d is not None and d.state == LEGACY:
        return "legacy: no IKE answer (probed again after %s s)" % _secs(d.legacy_until, node._now())
    return "no SA"


def _ike(sa, now):
    return {"spi_i": _hex(sa.spi_i), "spi_r": _hex(sa.spi_r), "initiator": sa.initiator,
            "auth": sa.auth, "state": sa.state, "age_s": _secs(getattr(sa, "up_at", None), now, True),
            "rekey_in_s": _secs(sa.rekey_at, now), "expire_in_s": _secs(sa.expire_at, now),
            "port": sa.peer_addr[1]}


def _child(c, now, active):
    ch = c.child
    return {"spi_in": "%08x" % ch.spi_in, "spi_out": "%08x" % ch.spi_out, "mode": ch.mode,
            "state": ch.state, "active": active,
            "age_s": _secs(getattr(ch, "up_at", None), now, True),
            "rekey_in_s": _secs(ch.rekey_at, now), "expire_in_s": _secs(ch.expire_at, now),
            "in": {"packets": c.inp.packets, "bytes": c.inp.bytes, "drops": sum(c.inp.drops.values())},
            "out": {"packets": c.out.packets, "bytes": c.out.bytes}}


def _disc(node, host, now):
    key = inet.pton(host)
    d = node.discovery.entry(key)
    out = {"state": node.discovery.state(key, now)}
    if d is not None:
        out["failures"] = d.failures
        out["sticky"] = node.discovery.is_sticky(key, now)
        if d.state == LEGACY:
            out["legacy_for_s"] = _secs(d.legacy_until, now)
    return out


def describe_peer(node, host, now):
    host = _norm(host)
    p = node.by_host.get(host)
    lv = node.level(host)
    d = {"address": host, "configured": node.peer_for(host) is not None,
         "identity": p.fp if p is not None else None,
         "level": LEVEL_NAMES[lv], "level_for_s": _secs(p.since, now, True) if p is not None and lv else None,
         "natt_port": p.natt_port if p is not None else None,
         "pin": _pin(node, host),
         "proved": fingerprint(p.key) if p is not None and p.key is not None else None,
         "ike": _ike(p.ike, now) if p is not None and p.ike is not None else None,
         "children": [_child(c, now, c is p.out) for c in p.children] if p is not None else [],
         "discovery": _disc(node, host, now),
         "traffic": dict(p.stats) if p is not None else {},
         "failed": p.failed if p is not None else None,
         "why": why_not(node, host)}
    return d


def describe(node) -> dict:
    now = node._now()
    hosts = []
    for h in list(node.by_host) + [h for h, _ in node.levels.peers()] + \
            [pe.host for pe in node.peers if pe.host != "any"]:
        h = _norm(h)
        if h not in hosts:
            hosts.append(h)
    ident = node.identity
    return {"identity": ident.fingerprint if ident is not None else None,
            "ike_port": node.ike_port, "natt_port": node.natt_port,
            "addresses": list(node.addresses), "tofu": node.tofu,
            "counters": node.status(),
            "peers": [describe_peer(node, h, now) for h in hosts]}


def _t(s):
    return "?" if s is None else "%g s" % s


def render(st: dict) -> str:
    """The text of `pnp status` (wg show's layout: the node, then one block per peer)."""
    c = st["counters"]
    ike = ", ".join("%d %s" % (n, k) for k, n in sorted(c["ike_sas"].items())) or "none"
    lines = ["node: identity %s" % st["identity"],
             "  ports: IKE %d, NAT-T %d" % (st["ike_port"], st["natt_port"]),
             "  IKE SAs: %s; CHILD SAs: %d; tofu: %s" % (ike, c["child_sas"], "on" if st["tofu"] else "off")]
    if not st["peers"]:
        lines.append("  no peers")
    for p in st["peers"]:
        lines.append("")
        lines.append("peer: %s%s" % (p["address"], "  (configured)" if p["configured"] else ""))
        lines.append("  level: %s%s" % (p["level"], " for %s" % _t(p["level_for_s"]) if p["level_for_s"] is not None else ""))
        if p["identity"]:
            lines.append("  identity: %s" % p["identity"])
        pin = p["pin"]
        if pin:
            t = "  pin: %s %s" % (pin["state"], pin["pinned"])
            if pin["presents"]:
                t += ", now presents %s" % pin["presents"]
            lines.append(t)
        i = p["ike"]
        if i:
            lines.append("  ike: SPIs %s %s (%s), auth %s, %s, up %s, rekey in %s" % (
                i["spi_i"], i["spi_r"], "we initiated" if i["initiator"] else "it initiated",
                i["auth"], i["state"], _t(i["age_s"]), _t(i["rekey_in_s"])))
        for ch in p["children"]:
            lines.append("  child: SPIs in %s out %s, %s%s, up %s, rekey in %s, expires in %s" % (
                ch["spi_in"], ch["spi_out"], ch["mode"], "" if ch["active"] else " (standby)",
                _t(ch["age_s"]), _t(ch["rekey_in_s"]), _t(ch["expire_in_s"])))
            lines.append("    in %d packets %d bytes (%d dropped), out %d packets %d bytes" % (
                ch["in"]["packets"], ch["in"]["bytes"], ch["in"]["drops"],
                ch["out"]["packets"], ch["out"]["bytes"]))
        dsc = p["discovery"]
        lines.append("  discovery: %s%s" % (dsc["state"], ", sticky" if dsc.get("sticky") else ""))
        if p["why"]:
            lines.append("  not higher: %s" % p["why"])
    return "\n".join(lines) + "\n"
