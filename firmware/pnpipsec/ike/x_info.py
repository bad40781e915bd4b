"""INFORMATIONAL, both roles (RFC 7296 section 1.4): deletes (of the IKE SA or CHILD
SAs), liveness checks and status notifies. Functions take the engine (eng) first; see
engine.py for the contract."""

from pnpipsec.ike import codec
from pnpipsec.ike.sa import AuthFailed, ChildDown, NotifyReceived

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_INFORMATIONAL = const(37)
_N_AUTHENTICATION_FAILED = const(24)
_PROTO_ESP = const(3)
_PROTO_IKE = const(1)
_PT_D = const(42)
_MOBIKE_FIRST = const(16396)    # MOBIKE_SUPPORTED .. NO_NATS_ALLOWED (RFC 4555)
_MOBIKE_LAST = const(16402)


class Simple:
    """A request job (see engine._pump): fixed payloads; done(sa) when answered."""

    def __init__(self, payloads, done=None):
        self.payloads = payloads
        self.on_done = done

    def build(self, now):
        return self.payloads

    def done(self, sa, msg, now):
        if self.on_done is not None:
            self.on_done(sa)


def request(eng, sa, msg, now, extra=None, to=None):
    """Responder: a peer's INFORMATIONAL. extra: more payloads for the answer and
    `to` where it goes (x_mobike: NAT-D, the COOKIE2 echo, to the request's source)."""
    dels = [codec.parse_delete(b) for b in msg.all(_PT_D)]
    notes = msg.notifies()
    kill = False
    gone = []
    answer = []
    for proto, spis in dels:
        if proto == _PROTO_IKE:
            kill = True
        elif proto == _PROTO_ESP:
            for s in spis:
                v = int.from_bytes(s, "big")
                for ch in sa.children:
                    if ch.spi_out == v and ch not in gone:
                        gone.append(ch)
                        answer.append(ch.spi_in.to_bytes(4, "big"))
    payloads = [(_PT_D, codec.encode_delete(_PROTO_ESP, answer))] if answer and not kill else []
    eng._respond(sa, msg, payloads + extra if extra else payloads, to)
    for nt in notes:
        if nt[0] == _N_AUTHENTICATION_FAILED:
            eng._emit(AuthFailed(sa, "peer: AUTHENTICATION_FAILED"))
            kill = True
        elif not (_MOBIKE_FIRST <= nt[0] <= _MOBIKE_LAST or 16388 <= nt[0] <= 16389):
            # (MOBIKE's notifies and its NAT-D are x_mobike's)
            eng._emit(NotifyReceived(sa, nt[0], nt[3]))
    if kill:
        eng._kill(sa, "deleted by peer")
        return
    for ch in gone:
        drop_child(eng, sa, ch)


def send(eng, sa, payloads, now):
    """Initiator: an INFORMATIONAL with these payloads (none: a liveness check)."""
    eng._request(sa, _INFORMATIONAL, Simple(payloads), now)


def del_child(eng, sa, child, now):
    eng._request(sa, _INFORMATIONAL, Simple(
        [(_PT_D, codec.encode_delete(_PROTO_ESP, [child.spi_in.to_bytes(4, "big")]))],
        lambda s: drop_child(eng, child.ike, child)), now)


def del_ike(eng, sa, now):
    job = Simple([(_PT_D, codec.encode_delete(_PROTO_IKE))], lambda s: _ike_deleted(eng, s))
    job.deletes_ike = True
    eng._request(sa, _INFORMATIONAL, job, now)


def _ike_deleted(eng, sa):
    if sa.state == "rekeyed":
        sa.state = "dead"
        eng._remove(sa)
    else:
        eng._kill(sa, "deleted")


def drop_child(eng, sa, ch):
    if ch in sa.children:
        sa.children.remove(ch)
    eng._child_gone(ch)
    if ch.state != "down":
        ch.state = "down"
        eng._emit(ChildDown(ch))
