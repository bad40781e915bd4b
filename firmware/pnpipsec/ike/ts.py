"""Traffic selector helpers: address text to bytes, coverage and narrowing checks.
A selector set is a list of (start_addr, end_addr) with 4- or 16-byte addresses."""

FULL4 = (b"\x00" * 4, b"\xff" * 4)
FULL6 = (b"\x00" * 16, b"\xff" * 16)


def parse_addr(text):
    """IPv4 dotted quad or IPv6 text (with ::, optional %zone) -> 4/16 bytes, or None."""
    if isinstance(text, (bytes, bytearray)):
        if len(text) in (4, 16):
            return bytes(text)
        return None
    if not isinstance(text, str):
        return None
    try:
        if ":" not in text:
            parts = text.split(".")
            if len(parts) != 4:
                return None
            b = bytes([int(p) for p in parts])
            return b
        text = text.split("%")[0]
        if "::" in text:
            head, tail = text.split("::", 1)
            h = [x for x in head.split(":") if x]
            t = [x for x in tail.split(":") if x]
            if len(h) + len(t) > 7:
                return None
            groups = h + ["0"] * (8 - len(h) - len(t)) + t
        else:
            groups = text.split(":")
        if len(groups) != 8:
            return None
        out = bytearray()
        for g in groups:
            v = int(g, 16)
            if not 0 <= v <= 0xFFFF or len(g) > 4:
                return None
            out.append(v >> 8)
            out.append(v & 0xFF)
        return bytes(out)
    except ValueError:
        return None


def host_of(peer_addr):
    """Address bytes of a (host, port, ...) peer address, or None."""
    try:
        return parse_addr(peer_addr[0])
    except (TypeError, IndexError):
        return None


def full_range(addr_len):
    return FULL4 if addr_len == 4 else FULL6


def within(inner, outer):
    """Range inner=(s, e) lies inside range outer."""
    return (len(inner[0]) == len(outer[0]) and outer[0] <= inner[0]
            and inner[1] <= outer[1] and inner[0] <= inner[1])


def covered(ours, proposed):
    """Every range of ours lies inside some range of proposed."""
    if not ours:
        return False
    for r in ours:
        ok = False
        for p in proposed:
            if within(r, p):
                ok = True
                break
        if not ok:
            return False
    return True


def ranges(selectors):
    """[(start, end)] from codec.parse_ts output."""
    return [(s[4], s[5]) for s in selectors]
