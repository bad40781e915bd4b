# The board of the heap co-simulation (tools/pnp/heapsim.py): a plain MicroPython
# script, run by a 32-bit build of MicroPython's unix port with -X heapsize=N, that is
# the example app (boards/common/pnpboard/app.py) on a board: one zero-configuration
# Node with a RAM identity store, an echo endpoint on UDP 7000 and the level callback.
# Sockets are lines on stdout, the clock is set by the host; the host (CPython) runs
# the peers and moves the datagrams. Only this process's heap is measured.
#
#   micropython -X heapsize=N heapsim_board.py SEED frozen|mpy [MPY_DIR]
#
# host -> board, one line each:
#   D <src-ip> <src-port> <natt 0|1> <hex>   a datagram for the node
#   T <ms>                                   set the clock, run the node's timer pass
#   E                                        the app: echo every datagram queued on 7000
#   M                                        measure: gc.collect(), then an H line
#   Q                                        quit
# board -> host:
#   S <dst-ip> <dst-port> <hex>              a datagram the node sent
#   L <text>                                 what the app prints (node log, levels)
#   I <alloc> <module> ...                   after the imports: heap above the baseline
#   A <bytes> <class>                        heap the AES provider took (PureAES here:
#                                            the unix port has no cryptolib)
#   R <alloc>                                the app is set up (then an N line)
#   H <alloc> <free> <peak> <block>          the heap in bytes, and the GC block size:
#                                            micropython.mem_info()'s lines come just
#                                            before ("max free sz: <blocks>")
#   N <ms|->                                 end of every reply: ms to the node's next due
#   X MemoryError <text>                     then exit status 3
#   Q <peak> <modules...>                    the final line
# alloc is gc.mem_alloc() after gc.collect(), above the baseline taken after this
# script's own setup and BEFORE anything of pnpipsec (or asyncio) is imported; peak is
# the largest such figure sampled after every command.

import gc
import sys

_out = sys.stdout.write


def _fail(e):
    # A constant first (no allocation), then what can still be said.
    _out("X MemoryError\n")
    try:
        gc.collect()
        _out("X MemoryError %r\n" % (e,))
        sys.print_exception(e, sys.stdout)   # where it ran out (MicroPython)
    except BaseException:
        pass
    sys.exit(3)


def main():
    import binascii
    import hashlib
    try:
        import micropython
    except ImportError:
        micropython = None

    seed = sys.argv[1].encode() if len(sys.argv) > 1 else b"board"
    variant = sys.argv[2] if len(sys.argv) > 2 else "frozen"
    if variant == "frozen":
        sys.path[:] = [".frozen"]
    else:
        sys.path[:] = [sys.argv[3], ".frozen"]
    hexlify = binascii.hexlify
    unhexlify = binascii.unhexlify
    block = 16 if sys.maxsize < (1 << 32) else 32   # MICROPY_BYTES_PER_GC_BLOCK

    class Rand:
        # deterministic rand(n): SHA-256 in counter mode over the seed
        def __init__(self, seed):
            self.seed = seed
            self.n = 0

        def __call__(self, n):
            out = b""
            while len(out) < n:
                self.n += 1
                out += hashlib.sha256(self.seed + self.n.to_bytes(4, "big")).digest()
            return out[:n]

    class Storage:
        # the board's flash, in RAM (identity, pins): counted in the heap
        def __init__(self):
            self.d = {}

        def read(self, name):
            return self.d.get(name)

        def write(self, name, data):
            self.d[name] = bytes(data)

    class Sock:
        def __init__(self, port):
            self.port = port

        def sendto(self, data, addr):
            _out("S %s %d %s\n" % (addr[0], addr[1], hexlify(data).decode()))

        def close(self):
            pass

    class Board:
        name = "heapsim"

        def __init__(self):
            self.rand = Rand(seed)
            self.storage = Storage()
            self.aes = None
            self.t = 0

        def now_ms(self):
            return self.t

    def max_free():
        # the largest free block: micropython.mem_info() prints "max free sz: <blocks>"
        # on this port; the host reads it from the lines before H (-1 here)
        if micropython is not None:
            micropython.mem_info()

    state = {"peak": 0}
    aes_holder = []

    def sample():
        # PureAES (this port has no cryptolib) caches key schedules; cryptolib on the
        # boards keeps none, so the cache is dropped before every sample
        for a in aes_holder:
            if hasattr(a, "_keys"):
                a._keys = {}
        gc.collect()
        a = gc.mem_alloc() - base
        if a > state["peak"]:
            state["peak"] = a
        return a

    board = Board()
    gc.collect()
    base = gc.mem_alloc()
    # ---- from here on, everything is the app's ----------------------------------
    try:
        import pnpipsec
        from pnpipsec import identity
        from pnpipsec.node import Node, zero_config, Endpoint  # noqa: F401 (app.py's set)
        from pnpipsec.crypto.aes import default_provider
        a0 = sample()
        board.aes = default_provider()
        if hasattr(board.aes, "_CACHE_MAX"):
            # PureAES keeps the schedules of the last keys it used (about 0.9 KB each,
            # 8 of them, churning with 4 SAs); cryptolib on ESP32/RP2 keeps none. One
            # is kept, so the board's heap is not charged with a cache it will not have.
            board.aes._CACHE_MAX = 1
        aes_holder.append(board.aes)
        a = sample()
        # this port has no cryptolib: the pure-Python AES it loads instead is not on an
        # ESP32 / RP2 board; its share is reported apart (and still counted)
        _out("A %d %s\n" % (a - a0, type(board.aes).__name__))
        _out("I %d %s\n" % (a, " ".join(sorted(m for m in sys.modules if m.startswith("pnpipsec")))))

        natt = 4500
        ident, created = identity.load_or_create(board.storage, board.rand)
        _out("L identity %s: fingerprint %s\n" % ("created" if created else "loaded", ident.fingerprint))

        def log(msg):
            _out("L %s\n" % (msg,))

        names = pnpipsec.LEVEL_NAMES

        def level_name(level):
            return names[level] if 0 <= level < len(names) else str(level)

        node = Node(board, ident, ike_port=natt, natt_port=natt, addresses=["10.0.0.1"],
                    accept_any=zero_config(), log=log)
        node.on_level(lambda host, old, new, now: _out("L level %s: %s -> %s\n"
                                                        % (host, level_name(old), level_name(new))))
        node.sock_natt = Sock(natt)
        node.sock_ike = node.sock_natt
        ep = node.endpoint(7000)
        ep.sock = Sock(7000)
        _out("R %d\n" % sample())
        due = node.next_due(board.t)
        _out("N -\n" if due is None else "N %d\n" % due)
    except MemoryError as e:
        _fail(e)

    readline = sys.stdin.readline
    while True:
        line = readline()
        if not line:
            break
        try:
            c = line[0]
            if c == "D":
                p = line.split()
                natt_in = p[3] == "1"
                node._datagram(unhexlify(p[4]), (p[1], int(p[2])),
                               node.sock_natt if natt_in else node.sock_ike, natt_in)
                p = None
            elif c == "T":
                board.t = int(line[2:])
                node._timer_pass()
            elif c == "E":
                # the app's loop: every datagram on 7000 comes back with "echo: "
                while ep._items:
                    data, peer, level = ep._items.pop(0)
                    _out("L from %s port %d at %s: %r\n" % (peer[0], peer[1], level_name(level), data[:60]))
                    try:
                        node.send_esp(b"echo: " + data, peer, 7000)
                    except MemoryError:
                        raise
                    except Exception as e:  # noqa: BLE001 - the example keeps serving
                        _out("L reply failed: %r\n" % (e,))
            elif c == "M":
                a = sample()
                max_free()
                _out("H %d %d %d %d\n" % (a, gc.mem_free(), state["peak"], -1 if micropython is None else block))
            elif c == "Q":
                sample()
                # piece by piece: the report must not need a large block of the
                # (fragmented) heap it measures; the host sorts the names
                _out("Q %d" % state["peak"])
                for m in sys.modules:
                    if m.startswith("pnpipsec"):
                        _out(" ")
                        _out(m)
                _out("\n")
                return 0
            sample()
            due = node.next_due(board.t)
            _out("N -\n" if due is None else "N %d\n" % due)
        except MemoryError as e:
            _fail(e)
    return 0


try:
    main()
except MemoryError as e:
    _fail(e)
