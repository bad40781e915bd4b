"""The control socket of a running `pnp node`: a Unix stream socket, mode 0600, at
STATE/control.sock (beside the identity and the pins), JSON lines.

A request is one JSON object on one line; the answer is one JSON line, `{"ok": true, ...}`
or `{"ok": false, "error": "..."}`:

    {"op": "ping"}                          -> {"ok": true, "pid": N}
    {"op": "status"}                        -> {"ok": true, "status": pnp.status.describe()}
    {"op": "approve", "addr": A, "key": HEX | "pending": true}
                                            -> {"ok": true, "fingerprint": FP, "level": NAME}
    {"op": "revoke", "addr": A}             -> {"ok": true, "level": NAME} (the pin is dropped)
    {"op": "events", "follow": bool, "history": bool}
        -> one {"event": {"time", "level", "msg"}} line per log record of the node (the
           recent ones first when history), then, without follow, {"ok": true}

Approvals made here act on the running node at once (its peers are re-levelled) and
its pin store writes them (merging with the file, pnpipsec.pins).

A second node on the same state folder finds the socket answering and refuses to start
(`probe` says "running"); a socket file left by a node that died ("stale": nobody
answers) is replaced.
"""

from __future__ import annotations

import asyncio
import binascii
import collections
import json
import logging
import os
import socket
import stat
import time

NAME = "control.sock"
HISTORY = 200


def path_for(state: str) -> str:
    return os.path.join(state, NAME)


class ControlError(Exception):
    pass


# -- client side (the CLI commands; plain blocking sockets) ---------------------------

def probe(path: str, timeout: float = 2.0) -> str:
    """"absent" (nothing there), "running" (a node answers), "stale" (a socket nobody
    answers) or "other" (something that is not a socket: left alone)."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "absent"     # (a state "folder" that is a file: the store says so later)
    except OSError:
        return "other"
    if not stat.S_ISSOCK(st.st_mode):
        return "other"
    try:
        ans = request(path, {"op": "ping"}, timeout)
    except ControlError:
        return "stale"
    return "running" if ans.get("ok") else "stale"


def _connect(path, timeout):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise ControlError("no node answers on %s: %s" % (path, e.strerror or e)) from None
    return s


def request(path: str, obj: dict, timeout: float = 5.0) -> dict:
    """Send one request, return the answer. ControlError when no node answers."""
    s = _connect(path, timeout)
    try:
        s.sendall(json.dumps(obj).encode() + b"\n")
        f = s.makefile("rb")
        line = f.readline()
    except OSError as e:
        raise ControlError("the node on %s did not answer: %s" % (path, e)) from None
    finally:
        s.close()
    if not line:
        raise ControlError("the node on %s closed the connection" % path)
    return json.loads(line)


def stream(path: str, obj: dict):
    """Send one request, yield each answer line (as a dict) until the node closes."""
    s = _connect(path, 5.0)
    try:
        s.sendall(json.dumps(obj).encode() + b"\n")
        s.settimeout(None)
        f = s.makefile("rb")
        for line in f:
            yield json.loads(line)
    finally:
        s.close()


# -- server side (inside `pnp node`) ---------------------------------------------------

class EventHub(logging.Handler):
    """A logging handler that keeps the node's recent records and hands each new one to
    every follower (`pnp events --follow`)."""

    def __init__(self, level=logging.INFO):
        super().__init__(level)
        self.recent = collections.deque(maxlen=HISTORY)
        self.followers = set()

    def emit(self, record):
        try:
            ev = {"time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created)) +
                  ".%03d" % record.msecs, "level": record.levelname, "msg": record.getMessage()}
        except Exception:  # noqa: BLE001 - logging never raises
            return
        self.recent.append(ev)
        for q in list(self.followers):
            if q.qsize() < 1000:        # a stuck follower loses lines, the node goes on
                q.put_nowait(ev)


class ControlServer:
    def __init__(self, node, path, hub: EventHub):
        self.node = node
        self.path = path
        self.hub = hub
        self.server = None
        self._ino = None

    async def start(self):
        """Bind the socket with mode 0600 (a stale one is replaced; the caller has
        checked that no node answers on it)."""
        if os.path.lexists(self.path) and probe(self.path, 1.0) == "stale":
            os.unlink(self.path)
        old = os.umask(0o177)
        try:
            self.server = await asyncio.start_unix_server(self._client, path=self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self._ino = os.stat(self.path).st_ino

    async def close(self):
        if self.server is not None:
            self.server.close()
            try:
                await asyncio.wait_for(self.server.wait_closed(), 0.5)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001
                pass
            try:
                if os.stat(self.path).st_ino == self._ino:   # still ours
                    os.unlink(self.path)
            except OSError:
                pass

    async def _client(self, reader, writer):
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                await self._send(writer, {"ok": False, "error": "bad request: %s" % e})
                return
            if req.get("op") == "events":
                await self._events(req, reader, writer)
                return
            try:
                ans = self.handle(req)
            except Exception as e:  # noqa: BLE001 - a bad request never stops the node
                ans = {"ok": False, "error": str(e) or e.__class__.__name__}
            await self._send(writer, ans)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _send(self, writer, obj):
        writer.write(json.dumps(obj).encode() + b"\n")
        await writer.drain()

    async def _events(self, req, reader, writer):
        q = asyncio.Queue()
        self.hub.followers.add(q)
        try:
            if req.get("history", True):
                for ev in list(self.hub.recent):
                    await self._send(writer, {"event": ev})
            if not req.get("follow"):
                await self._send(writer, {"ok": True})
                return
            gone = asyncio.ensure_future(reader.read())     # EOF: the follower left
            try:
                while not gone.done():
                    get = asyncio.ensure_future(q.get())
                    done, _ = await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
                    if get in done:
                        await self._send(writer, {"event": get.result()})
                    else:
                        get.cancel()
            finally:
                gone.cancel()
        finally:
            self.hub.followers.discard(q)

    def handle(self, req) -> dict:
        from pnp import status
        from pnpipsec import LEVEL_NAMES, inet
        from pnpipsec.identity import fingerprint

        node = self.node
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "status":
            return {"ok": True, "status": status.describe(node)}
        if op in ("approve", "revoke"):
            addr = req.get("addr")
            try:
                host = inet.ntop(inet.pton(addr))
            except Exception:  # noqa: BLE001
                return {"ok": False, "error": "not an address: %r" % (addr,), "usage": True}
            pid = inet.pton(host)
            if op == "revoke":
                if not node.pins.forget(pid):
                    return {"ok": False, "error": "no pin for %s" % addr}
                node._relevel(host)
                logging.getLogger("pnp").info("pin of %s revoked (control socket)", host)
                return {"ok": True, "level": LEVEL_NAMES[node.level(host)]}
            if req.get("pending"):
                got = node.pins.get(pid)
                if got is None or got[2] is None:
                    return {"ok": False, "error": "%s has no changed key waiting for approval" % addr}
                key = got[2]
            else:
                key = binascii.unhexlify(req.get("key") or "")
                if len(key) != 32:
                    return {"ok": False, "error": "a key is 32 bytes (64 hex digits)", "usage": True}
            node.approve(host, key)
            lv = LEVEL_NAMES[node.level(host)]
            logging.getLogger("pnp").info("approved %s for %s (control socket): level %s",
                                          fingerprint(key), host, lv)
            return {"ok": True, "fingerprint": fingerprint(key), "level": lv}
        return {"ok": False, "error": "unknown op %r" % (op,)}
