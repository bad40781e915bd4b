"""An in-memory datagram network for boards, with routes an attacker can hijack.

Each MemBoard has one address; `net.hijack(src, dst, via)` delivers what `src` sends
to `dst` to the board at address `via` instead (a man in the middle on the path). Everything else
of a board (AES, randomness, clock, DH, signatures) is the host board's.
"""

import asyncio

from pnp_hostboard.board import HostBoard


class MemNet:
    def __init__(self):
        self.sockets = {}     # (addr, port) -> MemSocket
        self.routes = {}      # (src addr, dst addr) -> addr that really receives
        self.sent = []        # (src, dst, bytes): the wire, for assertions

    def hijack(self, src, dst, via):
        self.routes[(src, dst)] = via

    def deliver(self, sender, src, dst, data):
        """`sender` is the real address (routes key on it); `src` what the datagram says."""
        self.sent.append((src, dst, data))
        to = self.routes.get((sender, dst[0]), dst[0])
        sock = self.sockets.get((to, dst[1]))
        if sock is not None:
            sock.queue.append((data, src))
            sock.event.set()


class MemSocket:
    def __init__(self, net, addr, port, claim=None):
        self.net, self.addr, self.port = net, addr, port
        self.claim = claim or addr   # the source address its datagrams carry
        self.queue = []
        self.event = asyncio.Event()

    async def recvfrom(self):
        while not self.queue:
            self.event.clear()
            await self.event.wait()
        return self.queue.pop(0)

    def sendto(self, data, addr):
        self.net.deliver(self.addr, (self.claim, self.port), addr, bytes(data))

    def close(self):
        self.net.sockets.pop((self.addr, self.port), None)


class MemBoard(HostBoard):
    name = "mem"

    def __init__(self, net, addr, claim=None):
        super().__init__(state_dir=None)
        self.net = net
        self.addr = addr
        self.claim = claim   # a man in the middle sends as the victim it impersonates

    async def udp(self, port):
        key = (self.addr, port)
        if key in self.net.sockets:
            raise OSError("port %d in use on %s" % (port, self.addr))
        s = self.net.sockets[key] = MemSocket(self.net, self.addr, port, self.claim)
        return s
