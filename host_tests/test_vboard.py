"""The virtual board (boards/wasm/board.mjs behind socat) driven by the real mpremote.

Started the way a user starts it: `python -m pnp.vboard --state DIR` (the `pnp vboard`
module), which prints `device: /dev/pts/N`. Oracles: mpremote itself (raw REPL,
raw-paste, fs commands), the host file system (DIR/fs), CPython sockets, and the
`cryptography` package for AES. Timings are printed (pytest -s) and recorded as
user properties.
"""

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from .conftest import REPO, missing
from .vboard_util import mpremote, start_vboard, stop_vboard, vboard_missing


def _need():
    why = vboard_missing()
    if why:
        missing("virtual board: " + "; ".join(why))


def _report(record_property, name, value, unit):
    record_property(name, value)
    sys.stdout.write("\n[vboard] %s: %s %s\n" % (name, value, unit))


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """One virtual board for the module, started with `python -m pnp.vboard`."""
    _need()
    state = tmp_path_factory.mktemp("vboard")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(REPO, "tools") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-m", "pnp.vboard", "--state", str(state)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        m = re.match(r"device: (\S+)$", line.strip())
        assert m, "pnp vboard printed %r (stderr: %s)" % (line, proc.stderr.read() if proc.poll() is not None else "")
        dev = m.group(1)
        assert dev.startswith("/dev/pts/")
        assert os.path.realpath(os.path.join(str(state), "tty")) == dev
        yield {"dev": dev, "state": str(state), "proc": proc}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        # SIGTERM is the documented way to stop it: clean exit, node and socat gone.
        assert rc == 0
        assert not _board_processes(str(state))


def _board_processes(state):
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().split(b"\0")
            with open("/proc/%s/environ" % pid, "rb") as f:
                envb = f.read()
        except OSError:
            continue
        if b"board.mjs" in b" ".join(cmd) and state.encode() in b" ".join(cmd):
            out.append(pid)
        elif cmd and cmd[0].endswith(b"socat") and ("VBOARD_STATE=" + state).encode() in envb:
            out.append(pid)
    return out


def test_exec_eval_and_latency(board, record_property):
    t = time.perf_counter()
    r = mpremote(board["dev"], "exec", "print(1+1)")
    dt = (time.perf_counter() - t) * 1000
    assert r.stdout.strip() == "2"
    assert mpremote(board["dev"], "eval", "6*7").stdout.strip() == "42"
    # a traceback comes back as mpremote's error, exit status 1
    r = mpremote(board["dev"], "exec", "1/0", check=False)
    assert r.returncode == 1 and "ZeroDivisionError" in r.stdout + r.stderr
    times = []
    for _ in range(3):
        t = time.perf_counter()
        mpremote(board["dev"], "exec", "pass")
        times.append((time.perf_counter() - t) * 1000)
    _report(record_property, "mpremote_exec_ms", round(sorted(times)[1], 1),
            "ms (one `mpremote connect DEV exec`, incl. connect + soft reset; first %.0f ms)" % dt)


def test_fs_commands_and_persistence(board, tmp_path):
    dev, fsdir = board["dev"], os.path.join(board["state"], "fs")
    src = tmp_path / "hello.txt"
    src.write_text("hello from the host\n")
    r = mpremote(dev, "fs", "mkdir", "d", "+", "fs", "cp", str(src), ":d/hello.txt",
                 "+", "fs", "ls", "d")
    assert re.search(r"\b20 hello.txt", r.stdout), r.stdout
    assert mpremote(dev, "fs", "cat", "d/hello.txt").stdout == "hello from the host\n"
    r = mpremote(dev, "exec", "print(repr(open('/d/hello.txt').read()))")
    assert r.stdout.strip() == repr("hello from the host\n")
    # the root lists like a flash file system (no /dev, /proc, built-ins)
    r = mpremote(dev, "exec", "import os; print(sorted(os.listdir('/')))")
    assert "dev" not in r.stdout and ".vboard" not in r.stdout and "'d'" in r.stdout
    # mirrored to the host folder
    with open(os.path.join(fsdir, "d", "hello.txt")) as f:
        assert f.read() == "hello from the host\n"
    # explicit soft reset: same file system
    mpremote(dev, "soft-reset")
    assert mpremote(dev, "fs", "cat", ":d/hello.txt").stdout == "hello from the host\n"
    # missing files are ENOENT (errno numbers as MicroPython has them)
    r = mpremote(dev, "exec", "import errno\ntry:\n open('/nope')\nexcept OSError as e:\n"
                 " print(e.errno == errno.ENOENT, e.errno)")
    assert r.stdout.split() == ["True", "2"]
    r = mpremote(dev, "fs", "cat", ":nope", check=False)
    assert r.returncode != 0 and "No such file" in r.stdout + r.stderr
    # rm / rmdir, mirrored too
    mpremote(dev, "fs", "cp", str(src), ":gone.txt")
    assert os.path.exists(os.path.join(fsdir, "gone.txt"))
    mpremote(dev, "fs", "rm", ":gone.txt")
    assert not os.path.exists(os.path.join(fsdir, "gone.txt"))


def test_run_script(board, tmp_path):
    script = tmp_path / "script.py"
    script.write_text("import sys\nx = sum(range(10))\nprint('run', x, sys.platform)\n")
    r = mpremote(board["dev"], "run", str(script))
    assert r.stdout.split() == ["run", "45", "webassembly"]


def test_large_copy_raw_paste(board, tmp_path, record_property):
    data = os.urandom(50 * 1024)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    t = time.perf_counter()
    mpremote(board["dev"], "fs", "cp", str(src), ":big.bin")
    up = time.perf_counter() - t
    r = mpremote(board["dev"], "fs", "sha256sum", ":big.bin")
    assert hashlib.sha256(data).hexdigest() in r.stdout
    back = tmp_path / "back.bin"
    t = time.perf_counter()
    mpremote(board["dev"], "fs", "cp", ":big.bin", str(back))
    down = time.perf_counter() - t
    assert back.read_bytes() == data
    with open(os.path.join(board["state"], "fs", "big.bin"), "rb") as f:
        assert f.read() == data
    # one 60 KB script through raw-paste mode in a single exec
    big = "\n".join("v%d = %d" % (i, i) for i in range(5000)) + "\nprint(v4999 + 1)\n"
    assert len(big) > 50000
    script = tmp_path / "big.py"
    script.write_text(big)
    t = time.perf_counter()
    assert mpremote(board["dev"], "run", str(script)).stdout.strip() == "5000"
    run = time.perf_counter() - t
    mpremote(board["dev"], "fs", "rm", ":big.bin")
    _report(record_property, "copy_50KiB_to_board_s", round(up, 2), "s (mpremote fs cp, 256-byte raw-paste execs)")
    _report(record_property, "copy_50KiB_from_board_s", round(down, 2), "s")
    _report(record_property, "run_60KB_script_s", round(run, 2), "s (one raw-paste exec)")


class _Echo:
    """CPython UDP echo servers on ::1 and 127.0.0.1 (reply = b're:' + datagram)."""

    def __init__(self):
        self.socks = []
        self.ports = {}
        for fam, host in ((socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")):
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.bind((host, 0))
            s.settimeout(0.2)
            self.socks.append(s)
            self.ports[host] = s.getsockname()[1]
        self.stop = False
        self.seen = []
        self.threads = [threading.Thread(target=self._loop, args=(s,), daemon=True) for s in self.socks]
        for t in self.threads:
            t.start()

    def _loop(self, s):
        while not self.stop:
            try:
                d, a = s.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.seen.append((d, a[0]))
            s.sendto(b"re:" + d, a)

    def close(self):
        self.stop = True
        for t in self.threads:
            t.join(2)
        for s in self.socks:
            s.close()


def test_udp_both_families(board, record_property):
    echo = _Echo()
    try:
        code = """
import asyncio
from board import Board
b = Board()
async def main():
    s = await b.udp(0)
    for host, port in (('::1', %d), ('127.0.0.1', %d)):
        s.sendto(b'ping ' + host.encode(), (host, port))
        d, a = await s.recvfrom()
        print('got', d.decode(), a[0], a[1] == port)
    for i in range(300):      # warm up
        s.sendto(b'x' * 64, ('127.0.0.1', %d))
        await s.recvfrom()
    t0 = b.perf_ms()
    for i in range(1000):
        s.sendto(b'x' * 64, ('127.0.0.1', %d))
        await s.recvfrom()
    print('rtt_ms %%.3f' %% ((b.perf_ms() - t0) / 1000))
    try:
        s.sendto(b'x', ('not-an-address', 9))
        print('no error')
    except OSError as e:
        print('oserror')
    s.close()
    # bounded queue: a port nobody reads keeps queue_limit datagrams, drops the rest
    q = await Board(storage_root=None, queue_limit=16).udp(0)
    out = await b.udp(0)
    for i in range(50):
        out.sendto(b'%%d' %% i, ('127.0.0.1', q.port))
    await asyncio.sleep_ms(200)
    st = q.stats()
    print('queue', st['queued'], st['dropped'], q.dropped)
    d, a = await q.recvfrom()
    print('first', d, a == ('127.0.0.1', out.port))
    q.close(); out.close()
asyncio.run(main())
print('after')
""" % (echo.ports["::1"], echo.ports["127.0.0.1"], echo.ports["127.0.0.1"], echo.ports["127.0.0.1"])
        r = mpremote(board["dev"], "exec", code, timeout=60)
    finally:
        echo.close()
    lines = r.stdout.splitlines()
    assert lines[0] == "got re:ping ::1 ::1 True"
    assert lines[1] == "got re:ping 127.0.0.1 127.0.0.1 True"
    assert lines[2].startswith("rtt_ms ")
    assert lines[3] == "oserror"
    assert lines[4] == "queue 16 34 34"
    assert lines[5] == "first b'0' True"
    assert lines[6] == "after"                       # asyncio.run() returned after main()
    _report(record_property, "udp_rtt_ms", float(lines[2].split()[1]),
            "ms (vboard <-> CPython echo on 127.0.0.1, mean of 1000 after 300 warm-up)")


def test_aes_rand_storage(board, record_property):
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key, iv = os.urandom(16), os.urandom(16)
    data = os.urandom(1024)
    code = """
from board import Board, aes_provider
import binascii as B
b = Board()
a = aes_provider()
key = B.unhexlify('%s'); iv = B.unhexlify('%s'); data = B.unhexlify('%s')
c = a.cbc_encrypt(key, iv, data)
print(B.hexlify(c).decode())
print(B.hexlify(a.ecb_encrypt(key, data[:32])).decode())
print(a.cbc_decrypt(key, iv, c) == data)
for i in range(1000):      # warm up (V8 optimises the bridge after a few hundred calls)
    a.cbc_encrypt(key, iv, data)
t0 = b.perf_ms()
for i in range(1000):
    a.cbc_encrypt(key, iv, data)
print('aes_us %%.2f' %% ((b.perf_ms() - t0) * 1000 / 1000))
r = [b.rand(16) for i in range(8)]
print(len(set(r)) == 8 and all(len(x) == 16 for x in r))
try:
    a.cbc_encrypt(key, iv, b'short')
except ValueError:
    print('valueerror')
b.storage.write('probe', b'\\x00stored\\xff')
print(b.storage.read('probe') == b'\\x00stored\\xff', b.storage.read('never') is None)
t0 = b.now(); t1 = b.now()
print(t1 >= t0, b.name)
""" % (key.hex(), iv.hex(), data.hex())
    lines = mpremote(board["dev"], "exec", code).stdout.splitlines()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    assert lines[0] == (enc.update(data) + enc.finalize()).hex()
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    assert lines[1] == (ecb.update(data[:32]) + ecb.finalize()).hex()
    assert lines[2] == "True"
    assert lines[4] == "True"
    assert lines[5] == "valueerror"
    assert lines[6] == "True True"
    assert lines[7] == "True wasm"
    with open(os.path.join(board["state"], "fs", "pnpipsec-state", "probe"), "rb") as f:
        assert f.read() == b"\x00stored\xff"
    _report(record_property, "aes_cbc_1KiB_us", float(lines[3].split()[1]),
            "us (AES-128-CBC of 1 KiB through the bridge, from MicroPython, warm)")


def test_watchdog_recovers_from_runaway_loop(board, record_property):
    with pytest.raises(subprocess.TimeoutExpired):
        mpremote(board["dev"], "exec", "while True: pass", timeout=2)
    t = time.perf_counter()
    r = mpremote(board["dev"], "exec", "print('alive')", timeout=30)
    assert r.stdout.strip() == "alive"
    _report(record_property, "watchdog_recovery_s", round(time.perf_counter() - t, 2), "s")


MAIN_PY = """
import asyncio
from board import Board
async def main():
    b = Board()
    s = await b.udp(%d)
    print('echo up')
    while True:
        d, a = await s.recvfrom()
        s.sendto(b'app:' + d, a)
asyncio.run(main())
"""


def _free_udp_port():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind(("::", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _ask(port, host="127.0.0.1", tries=20):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(0.25)
    try:
        for _ in range(tries):
            s.sendto(b"hi", (host, port))
            try:
                return s.recvfrom(100)[0]
            except socket.timeout:
                continue
        return None
    finally:
        s.close()


def test_main_py_boot_reset_and_restart(tmp_path):
    """main.py runs at power-on and after `mpremote reset`, not after mpremote's soft
    resets; files survive stopping and starting the board process."""
    _need()
    state = tmp_path / "b"
    port = _free_udp_port()
    main = tmp_path / "main.py"
    main.write_text(MAIN_PY % port)
    boot = tmp_path / "boot.py"
    boot.write_text("with open('/boots', 'a') as f:\n    f.write('b')\n")
    proc, dev = start_vboard(state)
    try:
        assert _ask(port, tries=2) is None
        mpremote(dev, "fs", "cp", str(boot), ":boot.py", "+", "fs", "cp", str(main), ":main.py",
                 "+", "reset")
        assert _ask(port) == b"app:hi"
        assert _ask(port, host="::1") == b"app:hi"
        # mpremote connects with Ctrl-C + soft reset: the app stops, main.py is skipped
        mpremote(dev, "exec", "print(1)")
        assert _ask(port, tries=4) is None
    finally:
        stop_vboard(proc)
    assert open(os.path.join(state, "fs", "main.py")).read() == MAIN_PY % port
    # boot.py ran at every boot: the hard reset, then mpremote's soft reset
    assert open(os.path.join(state, "fs", "boots")).read() == "bb"
    proc, dev = start_vboard(state)      # power on again: main.py runs
    try:
        assert _ask(port) == b"app:hi"
        mpremote(dev, "fs", "rm", ":main.py")
    finally:
        stop_vboard(proc)
    proc, dev = start_vboard(state)
    try:
        assert _ask(port, tries=4) is None
        assert "main.py" not in mpremote(dev, "fs", "ls").stdout
    finally:
        stop_vboard(proc)


def _read_until(fd, marker, timeout=10.0):
    import select
    buf = b""
    end = time.monotonic() + timeout
    while marker not in buf:
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError("no %r in %r" % (marker, buf))
        r, _, _ = select.select([fd], [], [], left)
        if r:
            buf += os.read(fd, 4096)
    return buf


def test_friendly_repl_and_ctrl_d(board):
    """The friendly REPL over the pty (what `mpremote repl` shows), Ctrl-D soft reset."""
    import termios
    import tty

    fd = os.open(board["dev"], os.O_RDWR | os.O_NOCTTY)
    try:
        tty.setraw(fd)
        termios.tcflush(fd, termios.TCIOFLUSH)
        os.write(fd, b"\r\x03\x02")                 # Ctrl-C, Ctrl-B: friendly REPL
        _read_until(fd, b"information.\r\n>>> ")
        os.write(fd, b"print(6*7)\r")
        out = _read_until(fd, b">>> ")
        assert b"\r\n42\r\n" in out
        os.write(fd, b"x = 5\r")
        _read_until(fd, b">>> ")
        os.write(fd, b"\x04")                        # soft reset: fresh interpreter
        out = _read_until(fd, b"information.\r\n>>> ")
        assert b"MPY: soft reboot" in out
        os.write(fd, b"print('x' in globals())\r")
        assert b"False" in _read_until(fd, b">>> ")
    finally:
        os.close(fd)


VB_NODE_PY = """
import asyncio
from board import Board
from pnpipsec import identity
from pnpipsec.node import Node, zero_config
async def main():
    b = Board()
    ident, created = identity.load_or_create(b.storage, b.rand)
    node = Node(b, ident, ike_port=%d, natt_port=%d, accept_any=zero_config())
    await node.start()
    ep = node.endpoint(7000)
    print('node up')
    while True:
        data, peer, level = await ep.recv()
        await ep.send(b'echo:' + data, peer, timeout=5)
asyncio.run(main())
"""


def test_firmware_node_on_the_vboard_talks_ike_esp_with_a_host_node(tmp_path, record_property):
    """pnpipsec.node.Node runs unchanged on the virtual board: a CPython node (host
    board) brings up an SA with it over 127.0.0.1 and gets an echo through ESP."""
    _need()
    from pnp_hostboard.board import HostBoard
    from pnpipsec import CLEAR
    from pnpipsec.identity import Identity
    from pnpipsec.node import Node, PeerEntry, zero_config
    import asyncio

    port = _free_udp_port()
    main = tmp_path / "main.py"
    main.write_text(VB_NODE_PY % (port, port))
    proc, dev = start_vboard(tmp_path / "b")
    try:
        mpremote(dev, "fs", "mkdir", ":lib", "+", "fs", "cp", "-r",
                 os.path.join(REPO, "firmware", "pnpipsec"), ":lib/", "+",
                 "fs", "cp", str(main), ":main.py", "+", "reset", timeout=120)

        async def host_side():
            node = Node(HostBoard(bind6=None, bind4="127.0.0.1"), Identity(os.urandom(32)),
                        peers=[PeerEntry("127.0.0.1", zero_config(), ike_port=port, natt_port=port)],
                        ike_port=0, natt_port=0)
            await node.start()
            try:
                t = time.perf_counter()
                level = await node.connect("127.0.0.1", timeout=30)
                hs = time.perf_counter() - t
                assert level > CLEAR
                ep = node.endpoint(7001)
                await ep.send(b"hello vboard", ("127.0.0.1", 7000), timeout=10)
                data, peer, lvl = await asyncio.wait_for(ep.recv(), 10)
                return data, lvl, hs
            finally:
                await node.stop()

        data, lvl, hs = asyncio.run(host_side())
        assert data == b"echo:hello vboard" and lvl > CLEAR
        _report(record_property, "ike_handshake_host_to_vboard_s", round(hs, 2),
                "s (NULL auth, pure-Python X25519 on the vboard)")
    finally:
        stop_vboard(proc)
