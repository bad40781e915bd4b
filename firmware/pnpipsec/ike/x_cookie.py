"""IKE_SA_INIT under load (RFC 7296 section 2.6): stateless N(COOKIE) answers within
their budgets, and the admission of requests that returned a valid cookie. The engine
imports this module only when it is under load (half_open() >= cookie_threshold) or
an address already holds max_half_open_per_host half-open SAs; see COOKIES AND
BUDGETS in engine.py. The state (secrets, token bucket, per-source counts) lives on
the engine."""

from pnpipsec.ike import codec
from pnpipsec.ike.codec import notify as _n
from pnpipsec.crypto.hmac import hmac_sha256
from pnpipsec.ticks import diff

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_F_RESPONSE = const(32)
_IKE_SA_INIT = const(34)
_N_COOKIE = const(16390)
_PT_N = const(41)
_COOKIE_ROTATE = const(300000)    # ms

ZERO8 = b"\x00" * 8


def _cookie_for(ver, secret, addr, spi_i):
    # Bound to the source address and SPIi (not Ni: so a flood is answered from
    # the header alone, never parsed).
    return bytes((ver,)) + hmac_sha256(secret, str(addr[0]).encode() + spi_i)[:16]


def _ok(eng, cookie, addr, spi_i):
    if eng._secret is None or len(cookie) != 17:
        return False
    if cookie[0] == eng._secret_ver:
        s = eng._secret
    elif cookie[0] == (eng._secret_ver - 1) & 0xFF and eng._old_secret is not None:
        s = eng._old_secret
    else:
        return False
    return codec.ct_eq(cookie, _cookie_for(cookie[0], s, addr, spi_i))


def _reply(eng, spi_i, addr, now, via):
    """N(COOKIE) for this SPIi and address, within the answer budget."""
    if not _source_budget(eng, addr[0], now):
        eng._count("drop_rate_source")
        return
    if not _answer_budget(eng, now):
        eng._count("drop_rate")
        return
    _rotate(eng, now)
    eng._count("cookie_sent")
    # (stateless: no SPI of ours; via: the request's arrival tag, see engine.py)
    eng.out.append((codec.encode(spi_i, ZERO8, _IKE_SA_INIT, _F_RESPONSE, 0, [_n(
        _N_COOKIE, _cookie_for(eng._secret_ver, eng._secret, addr, spi_i))]), addr,
        True, _IKE_SA_INIT, None, via))


def _source_budget(eng, host, now):
    """At most 2 cookie answers a second to one source (for the first
    answer_sources sources of each second; later ones only meet the global bucket)."""
    at = eng._answered_at
    if at is None or not 0 <= diff(now, at) < 1000:
        eng._answered_at = now
        eng._answered = {}
    n = eng._answered.get(host, 0)
    if n >= 2:
        return False
    if n or len(eng._answered) < eng.answer_sources:
        eng._answered[host] = n + 1
    return True


def _answer_budget(eng, now):
    """A token bucket: at most max_answer_rate unauthenticated answers a second
    (cookies), so a flood can neither make us a reflector nor eat the CPU."""
    rate = eng.max_answer_rate
    el = 1000 if eng._tokens_at is None else diff(now, eng._tokens_at)
    if not 0 <= el < 1000:
        el = 1000
    t = eng._tokens + el * rate
    eng._tokens_at = now
    eng._tokens = t if t < rate * 1000 else rate * 1000
    if eng._tokens < 1000:
        return False
    eng._tokens -= 1000
    return True


def _rotate(eng, now):
    if eng._secret is None or not 0 <= diff(now, eng._secret_at) < _COOKIE_ROTATE:
        eng._old_secret = eng._secret
        eng._secret = eng.rand(16)
        eng._secret_ver = (eng._secret_ver + 1) & 0xFF
        eng._secret_at = now


def gate(eng, data, addr, now, via=None):
    """Under load (the engine checked that and that `data` is an IKE_SA_INIT request
    with SPIr 0): a request without a valid cookie costs a few byte checks and one
    HMAC: answered with N(COOKIE) from its header alone (no parse, no state, no DH),
    or dropped beyond the answer budget. True when handled."""
    if data[16] == _PT_N and len(data) >= 53 and data[30:32] == b"\x00\x19" and \
            data[33] == 0 and data[34:36] == b"\x40\x06" and \
            _ok(eng, data[36:53], addr, data[0:8]):
        return False        # proven: the full path takes it (and checks it again)
    _reply(eng, data[0:8], addr, now, via)
    return True


def _evict_half_open(eng, candidates):
    victim = None
    for sa in candidates:
        if victim is None or (victim.proven and not sa.proven):
            victim = sa
    if victim is not None:
        eng._count("evict_half_open")
        eng._kill(victim, "evicted")


def admit(eng, msg, addr, mine, now):
    """A parsed IKE_SA_INIT request under load or from an address with its quota of
    half-open SAs (mine, oldest first): True when it returned a valid cookie (room is
    made for it), else False (answered with a cookie or dropped)."""
    _rotate(eng, now)
    first = msg.payloads[0]
    c = codec.parse_notify(first[1]) if first[0] == _PT_N else None
    if c is None or c[0] != _N_COOKIE or not _ok(eng, c[3], addr, msg.spi_i):
        _reply(eng, msg.spi_i, addr, now, msg.via)
        return False
    # A proven sender takes the place of the oldest half-open SA (unproven ones
    # first): spoofed IKE_SA_INITs can never lock out an address's real owner.
    if len(mine) >= eng.max_half_open_per_host:
        _evict_half_open(eng, mine)
    elif eng.half_open() >= eng.max_half_open:
        _evict_half_open(eng, eng._half_open_of(None))
    return True
