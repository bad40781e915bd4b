// The virtual board's VM: one MicroPython WebAssembly instance in a worker thread,
// started by boards/wasm/board.mjs (one worker per boot; a soft reset starts a new one).
//
// What this file gives the firmware (Python imports the JS module "_vboard"; the
// Python-side board object is boards/wasm/board.py, installed as /.vboard/board.py):
//   - UDP over IPv6 and IPv4 (node:dgram), bounded receive queue with a drop counter;
//   - AES-ECB/CBC (node:crypto), zero-copy through the wasm memory;
//   - randomness (crypto.randomFillSync), monotonic high-resolution clock;
//   - the board file system: the emscripten MEMFS root mirrored to a host folder
//     (STATE/fs): loaded at boot, written back after every REPL command, every second
//     while idle, on soft reset and on exit;
//   - errno numbers as MicroPython expects them (emscripten's WASI numbers are mapped to
//     Linux/MicroPython numbers at the syscall imports, so e.errno == errno.ENOENT works).
//
// Bridge functions never throw into Python (a synchronous JS throw escapes try/except):
// they catch and report failures as return values; board.py raises OSError.
//
// Messages main -> worker:  {t:"exec", id, code}       raw REPL command (code: Uint8Array)
//                           {t:"chars", id, bytes}     friendly REPL input
//                           {t:"repl", id}             (re)start the friendly REPL (banner)
//                           {t:"sync", id}             write the file system back now
//                           {t:"interrupt"}            Ctrl-C: cancel asyncio.run() tasks
//                           {t:"addr", ev, table}      the board's addresses changed (board.mjs
//                                                      control socket): ev is one address event
//                                                      [kind, address, zone, preferred_s,
//                                                      valid_s, flags], table the new list;
//                                                      handled at once, like "interrupt"
// Messages worker -> main:  {t:"out", b}               console output (bytes)
//                           {t:"done", id, reset?, exit?}  request finished
//                           {t:"ready"}                booted (boot.py / main.py done)
//                           {t:"log", s}               diagnostics for stderr

import { parentPort, workerData } from "node:worker_threads";
import { fileURLToPath, pathToFileURL } from "node:url";
import path from "node:path";
import fs from "node:fs";
import dgram from "node:dgram";
import net from "node:net";
import crypto from "node:crypto";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "..", "..");
const opts = workerData;
const post = (m) => parentPort.postMessage(m);
const log = (s) => post({ t: "log", s: String(s) });

// ------------------------------------------------------------------ console output
// Real boards print "\r\n" for "\n" (cooked stdout); the C REPL already sends "\r\n".
let outBuf = [];
let lastByte = 0;
let flushQueued = false;
function outByte(c) {
  if (c === 10 && lastByte !== 13) outBuf.push(13);
  outBuf.push(c);
  lastByte = c;
  if (c === 10 || outBuf.length >= 512) flushOut();
  else if (!flushQueued) {
    flushQueued = true;
    setImmediate(flushOut);
  }
}
function flushOut() {
  flushQueued = false;
  if (outBuf.length) {
    post({ t: "out", b: Uint8Array.from(outBuf) });
    outBuf = [];
  }
}
function outText(s) {
  for (const c of Buffer.from(s, "utf8")) outByte(c);
}

// ------------------------------------------------------------------ errno mapping
// WASI errno (what emscripten's libc uses) -> Linux errno (MicroPython's errno module).
const WASI_TO_LINUX = [
  0, 7, 13, 98, 99, 97, 11, 114, 9, 74, 16, 125, 10, 103, 111, 104, 35, 89, 33, 122, 17, 14, 27,
  113, 43, 84, 115, 4, 22, 5, 106, 21, 40, 24, 31, 90, 72, 36, 100, 102, 101, 23, 105, 19, 2, 8,
  37, 67, 12, 42, 92, 28, 38, 107, 20, 39, 131, 88, 95, 25, 6, 75, 130, 1, 32, 71, 93, 91, 34, 30,
  29, 3, 116, 110, 26, 18,
];
function wrapImports(imports) {
  for (const mod of Object.values(imports || {})) {
    if (!mod || mod.__vboard_wrapped) continue;
    for (const name of Object.keys(mod)) {
      const f = mod[name];
      if (typeof f !== "function") continue;
      if (name.startsWith("__syscall_")) {
        mod[name] = function (...a) {
          const r = f.apply(this, a);
          return typeof r === "number" && r < 0 && -r < WASI_TO_LINUX.length ? -WASI_TO_LINUX[-r] : r;
        };
      } else if (name.startsWith("fd_")) {
        mod[name] = function (...a) {
          const r = f.apply(this, a);
          return typeof r === "number" && r > 0 && r < WASI_TO_LINUX.length ? WASI_TO_LINUX[r] : r;
        };
      }
    }
    Object.defineProperty(mod, "__vboard_wrapped", { value: true });
  }
}

// ------------------------------------------------------------------ load the VM
let memory = null;
const origInstantiate = WebAssembly.instantiate;
WebAssembly.instantiate = async function (src, imports) {
  wrapImports(imports);
  const r = await origInstantiate.call(this, src, imports);
  const inst = r.instance || r;
  if (inst && inst.exports && inst.exports.memory) memory = inst.exports.memory;
  return r;
};
const { loadMicroPython } = await import(process.env.PNP_WASM_PKG
  ? pathToFileURL(path.join(process.env.PNP_WASM_PKG, "micropython.mjs")).href
  : "@micropython/micropython-webassembly-pyscript/micropython.mjs");
const mp = await loadMicroPython({
  heapsize: opts.heapsize,
  linebuffer: false,
  stdout: (b) => { for (const c of b) outByte(c); },
  stderr: (b) => { for (const c of b) outByte(c); },
});
WebAssembly.instantiate = origInstantiate;
const FS = mp.FS;

// asyncio in this port schedules itself with js.setTimeout(fn, ms); Node clamps 0 ms to
// 1 ms, so zero delays go through setImmediate (recipes/virtual-board.md: 3 ms -> 0.5 ms
// per UDP round trip).
const origSetTimeout = globalThis.setTimeout;
const origClearTimeout = globalThis.clearTimeout;
const immediates = new WeakSet();
globalThis.setTimeout = function (fn, ms, ...a) {
  if (!(ms > 0)) {
    const h = setImmediate(fn, ...a);
    immediates.add(h);
    return h;
  }
  return origSetTimeout(fn, ms, ...a);
};
globalThis.clearTimeout = function (h) {
  if (h && immediates.has(h)) return clearImmediate(h);
  return origClearTimeout(h);
};

const view = (addr, n) => new Uint8Array(memory.buffer, addr >>> 0, n >>> 0);

// ------------------------------------------------------------------ file system mirror
const HOST_FS = opts.state ? path.join(opts.state, "fs") : null;
const SKIP_TOP = new Set(["dev", "proc", ".vboard"]);
const synced = new Map(); // board path -> {mtime, size, hash}

function digest(u8) {
  return crypto.createHash("sha1").update(u8).digest("hex");
}
function mtimeOf(st) {
  const m = st.mtime;
  return m instanceof Date ? m.getTime() : Number(m);
}
function loadFs() {
  // Start from an empty root like a fresh flash file system (keep /dev and /proc).
  for (const d of ["/tmp", "/home/web_user", "/home"]) {
    try { FS.rmdir(d); } catch (e) { /* absent or not empty */ }
  }
  if (!HOST_FS) return;
  fs.mkdirSync(HOST_FS, { recursive: true });
  const walk = (hostDir, boardDir) => {
    for (const ent of fs.readdirSync(hostDir, { withFileTypes: true })) {
      if (boardDir === "" && SKIP_TOP.has(ent.name)) continue;
      if (ent.name.endsWith(".vboard-tmp")) continue;
      const h = path.join(hostDir, ent.name);
      const b = boardDir + "/" + ent.name;
      if (ent.isDirectory()) {
        try { FS.mkdir(b); } catch (e) { /* exists */ }
        walk(h, b);
      } else if (ent.isFile()) {
        const data = fs.readFileSync(h);
        FS.writeFile(b, data);
        const st = FS.stat(b);
        synced.set(b, { mtime: mtimeOf(st), size: data.length, hash: digest(data) });
      }
    }
  };
  walk(HOST_FS, "");
}

let lastSync = 0;
function syncFs() {
  // Write changed board files to the host folder (temp + rename), remove what the
  // board removed. Returns the number of changes.
  if (!HOST_FS) return 0;
  const started = Date.now();
  let changes = 0;
  const seen = new Set();
  const walkBoard = (boardDir) => {
    let names;
    try { names = FS.readdir(boardDir || "/"); } catch (e) { return; }
    for (const name of names) {
      if (name === "." || name === "..") continue;
      if (boardDir === "" && SKIP_TOP.has(name)) continue;
      const b = boardDir + "/" + name;
      const h = path.join(HOST_FS, b);
      let st;
      try { st = FS.stat(b); } catch (e) { continue; }
      seen.add(b);
      if (FS.isDir(st.mode)) {
        if (!fs.existsSync(h) || !fs.statSync(h).isDirectory()) {
          try { fs.rmSync(h, { force: true }); } catch (e) { /* */ }
          fs.mkdirSync(h, { recursive: true });
          changes++;
        }
        walkBoard(b);
      } else if (FS.isFile(st.mode)) {
        const mt = mtimeOf(st);
        const prev = synced.get(b);
        if (prev && prev.mtime === mt && prev.size === st.size && mt < lastSync - 5 && fs.existsSync(h)) continue;
        const data = FS.readFile(b);
        const hash = digest(data);
        if (!prev || prev.hash !== hash || !fs.existsSync(h)) {
          const tmp = h + ".vboard-tmp";
          fs.mkdirSync(path.dirname(h), { recursive: true });
          fs.writeFileSync(tmp, data);
          fs.renameSync(tmp, h);
          changes++;
        }
        synced.set(b, { mtime: mt, size: st.size, hash });
      }
    }
  };
  walkBoard("");
  const walkHost = (hostDir, boardDir) => {
    let ents;
    try { ents = fs.readdirSync(hostDir, { withFileTypes: true }); } catch (e) { return; }
    for (const ent of ents) {
      if (boardDir === "" && SKIP_TOP.has(ent.name)) continue;
      const b = boardDir + "/" + ent.name;
      const h = path.join(hostDir, ent.name);
      if (!seen.has(b)) {
        fs.rmSync(h, { recursive: true, force: true });
        synced.delete(b);
        changes++;
      } else if (ent.isDirectory()) walkHost(h, b);
    }
  };
  walkHost(HOST_FS, "");
  lastSync = started;
  return changes;
}
function syncSafe() {
  try {
    return syncFs();
  } catch (e) {
    log(`file system sync failed: ${e && e.stack ? e.stack : e}`);
    return -1;
  }
}

// ------------------------------------------------------------------ the bridge
const sockets = new Map(); // id -> {s6, s4, port, queue, dropped, errors, limit}
let nextSock = 1;
let waker = null; // Python callable(id), set by board.py

function stripScope(a) {
  const i = a.indexOf("%");
  a = i >= 0 ? a.slice(0, i) : a;
  if (a.startsWith("::ffff:") && a.includes(".")) a = a.slice(7);
  return a;
}
function bindOne(type, port, host) {
  return new Promise((resolve) => {
    let s;
    try {
      s = dgram.createSocket(type === "udp6" ? { type, ipv6Only: true } : { type });
    } catch (e) {
      resolve({ err: String(e.message || e) });
      return;
    }
    const onErr = (e) => {
      try { s.close(); } catch (x) { /* */ }
      resolve({ err: `${e.code || ""} ${e.message || e}`.trim() });
    };
    s.once("error", onErr);
    try {
      s.bind({ port, address: host, exclusive: true }, () => {
        s.removeListener("error", onErr);
        resolve({ s });
      });
    } catch (e) {
      onErr(e);
    }
  });
}
function attach(rec, s) {
  s.on("message", (msg, rinfo) => {
    if (rec.queue.length >= rec.limit) {
      rec.dropped++;
      return;
    }
    rec.queue.push([msg, stripScope(rinfo.address), rinfo.port]);
    if (waker) {
      try { waker(rec.id); } catch (e) { log(`udp waker failed: ${e}`); }
    }
  });
  s.on("error", (e) => {
    rec.errors++;
    rec.lastError = String(e.message || e);
  });
}

let addrTable = opts.addrs || [];
let addrHook = null;
function addrChanged(m) {
  addrTable = m.table || addrTable;
  if (!addrHook) return;
  try { addrHook(JSON.stringify(m.ev)); } catch (e) { log(`address hook: ${e && e.message ? e.message : e}`); }
}

const bridge = {
  // -- time and randomness
  now() { return performance.now() / 1000; },
  perf_ms() { return performance.now(); },
  rand_into(addr, n) {
    try { crypto.randomFillSync(view(addr, n)); return 1; } catch (e) { return 0; }
  },
  // -- AES: mode 1 ECB-enc, 2 CBC-enc, 3 CBC-dec; returns "" or an error text
  aes(mode, kaddr, klen, ivaddr, daddr, n, oaddr) {
    try {
      const bits = klen * 8;
      if (klen !== 16 && klen !== 24 && klen !== 32) return "bad AES key length " + klen;
      if (n % 16) return "data length not a multiple of 16";
      const key = Buffer.from(view(kaddr, klen));
      let c;
      if (mode === 1) c = crypto.createCipheriv(`aes-${bits}-ecb`, key, null);
      else {
        const iv = Buffer.from(view(ivaddr, 16));
        c = mode === 2 ? crypto.createCipheriv(`aes-${bits}-cbc`, key, iv) : crypto.createDecipheriv(`aes-${bits}-cbc`, key, iv);
      }
      c.setAutoPadding(false);
      const out = c.update(view(daddr, n));
      c.final();
      view(oaddr, n).set(out);
      return "";
    } catch (e) {
      return String(e.message || e);
    }
  },
  // -- UDP
  set_waker(fn) { waker = fn; return 1; },
  async udp_open(port, bind6, bind4, limit) {
    // Resolves to "id port" or "!error text"; never rejects.
    try {
      port = port >>> 0;
      const errs = [];
      let s6 = null, s4 = null;
      for (let attempt = 0; attempt < 8; attempt++) {
        s6 = s4 = null;
        let p = port;
        if (bind6) {
          const r = await bindOne("udp6", p, bind6);
          if (r.s) { s6 = r.s; p = s6.address().port; } else errs.push("IPv6: " + r.err);
        }
        if (bind4) {
          const r = await bindOne("udp4", p, bind4);
          if (r.s) s4 = r.s;
          else {
            errs.push("IPv4: " + r.err);
            if (port === 0 && s6) { s6.close(); continue; } // ephemeral clash: try again
          }
        }
        break;
      }
      if (!s6 && !s4) return "!" + (errs.join("; ") || "no family to bind");
      const id = nextSock++;
      const rec = { id, s6, s4, port: (s6 || s4).address().port, queue: [], dropped: 0, errors: 0, limit: limit > 0 ? limit : 256, lastError: "" };
      if (s6) attach(rec, s6);
      if (s4) attach(rec, s4);
      sockets.set(id, rec);
      return `${id} ${rec.port}`;
    } catch (e) {
      return "!" + String(e.message || e);
    }
  },
  udp_next_len(id) {
    const rec = sockets.get(id);
    if (!rec) return -2;
    return rec.queue.length ? rec.queue[0][0].length : -1;
  },
  udp_take(id, addr, n) {
    // Copy the oldest datagram into the buffer at addr; returns "host port" or "".
    try {
      const rec = sockets.get(id);
      if (!rec || !rec.queue.length) return "";
      const [msg, host, port] = rec.queue.shift();
      view(addr, Math.min(n, msg.length)).set(msg.subarray(0, n));
      return `${host} ${port}`;
    } catch (e) {
      return "";
    }
  },
  udp_send(id, addr, n, host, port) {
    // Returns "" when handed to the OS; else an error text (board.py raises OSError).
    try {
      const rec = sockets.get(id);
      if (!rec) return "socket closed";
      host = String(host);
      const fam = net.isIP(host);
      if (!fam) return `EINVAL: ${JSON.stringify(host)} is not an IPv6 or IPv4 address`;
      if (!(port > 0 && port < 65536)) return `EINVAL: bad port ${port}`;
      const v6 = fam === 6;
      const s = v6 ? rec.s6 : rec.s4;
      if (!s) return `no ${v6 ? "IPv6" : "IPv4"} socket on port ${rec.port}`;
      const data = Buffer.from(view(addr, n)); // copy: the send completes later
      s.send(data, port >>> 0, host, (e) => {
        if (e) { rec.errors++; rec.lastError = String(e.message || e); }
      });
      return "";
    } catch (e) {
      return String(e.message || e);
    }
  },
  udp_stats(id) {
    const rec = sockets.get(id);
    if (!rec) return "";
    return JSON.stringify({ port: rec.port, queued: rec.queue.length, dropped: rec.dropped, errors: rec.errors, last_error: rec.lastError, ipv6: !!rec.s6, ipv4: !!rec.s4 });
  },
  udp_close(id) {
    const rec = sockets.get(id);
    if (!rec) return 0;
    sockets.delete(id);
    for (const s of [rec.s6, rec.s4]) if (s) { try { s.close(); } catch (e) { /* */ } }
    return 1;
  },
  // -- file system mirror
  fs_sync() { return syncSafe(); },
  fs_sync_soon() { setImmediate(syncSafe); return 1; },
  // -- the board's addresses (board.mjs owns the table; it survives resets):
  // addresses() is JSON [[address, state, preferred_s, valid_s, zone, flags], ...];
  // set_addr_hook(fn): fn(json of one address event) on every change (never raises here)
  addresses() { return JSON.stringify(addrTable); },
  set_addr_hook(fn) { addrHook = fn; return 1; },
  // -- foreground asyncio.run() tasks (see _vbrt.py)
  fg_done: null,
  state_dir() { return opts.state || ""; },
  // -- machine.reset() (kind 1) / machine.soft_reset() (kind 0): the main thread
  // ends this worker and boots a new one; the file system is written back first.
  reset(kind) {
    syncSafe();
    flushOut();
    post({ t: "reset", hard: kind === 1 });
    return 1;
  },
};

// ------------------------------------------------------------------ runtime module
// /.vboard holds the board's built-in Python (like frozen modules on a real board):
// board.py (boards/wasm/board.py) and _vbrt.py. A /board.py deployed with mpremote
// takes precedence ('' comes first on sys.path).
const VBRT_PY = `# vboard runtime: asyncio.run for a port whose loop is driven by JS timers.
import sys, asyncio
_fg = []   # asyncio.run() tasks of the running REPL command
_bg = []   # asyncio.run() tasks of boot.py / main.py / earlier commands (still running)
_exc = []

async def _guard(coro):
    try:
        return await coro
    except asyncio.CancelledError:
        _exc.append("KeyboardInterrupt: \\n")
    except BaseException as e:
        import io
        s = io.StringIO()
        sys.print_exception(e, s)
        _exc.append(s.getvalue())

def run(coro):
    """asyncio.run(coro): schedules coro as a foreground task and returns at once.
    A REPL command (mpremote exec/run) ends when its foreground tasks end; main.py's
    tasks keep running after boot, like an app on a real board. Ctrl-C cancels them."""
    t = asyncio.create_task(_guard(coro))
    _fg.append(t)
    return t

def begin():
    _bg[:] = [t for t in _bg + _fg if not t.done()]
    _fg[:] = []
    _exc[:] = []

class Wait:
    """await Wait(coro) at the top level of a REPL command runs coro as a task and
    resumes the command when it ends, with its result or exception. The board rewrites
    asyncio.run( in a REPL command into await _vbrt.Wait( where that compiles (not
    inside a def), so the lines after it run after it, as on a real board."""

    def __init__(self, coro):
        import js
        self.done = False
        self.result = None
        self.exc = None
        box = []
        self.promise = js.Promise.new(lambda resolve, reject: box.append(resolve))
        self._resolve = box[0]
        self.task = asyncio.create_task(self._run(coro))
        _fg.append(self.task)

    async def _run(self, coro):
        try:
            self.result = await coro
        except asyncio.CancelledError:
            self.exc = KeyboardInterrupt()
        except BaseException as e:
            self.exc = e
        self.done = True
        self._resolve(None)

    def __iter__(self):
        if not self.done:
            yield self.promise
        if self.exc is not None:
            raise self.exc
        return self.result

    __await__ = __iter__

def pending():
    return len([t for t in _fg if not t.done()])

def take_errors():
    s = "".join(_exc)
    _exc[:] = []
    return s

async def _watch(resolve):
    while True:
        live = [t for t in _fg if not t.done()]
        if not live:
            break
        try:
            await live[0]
        except BaseException:
            pass
    _fg[:] = []
    resolve(take_errors())

def watch(resolve):
    asyncio.create_task(_watch(resolve))

def interrupt():
    n = 0
    for t in _fg + _bg:
        if not t.done():
            t.cancel()
            n += 1
    return n

asyncio.run = run

# Directory listings like a flash file system: the root hides the emscripten
# directories (/dev, /proc) and the built-in modules (/.vboard); entries carry their
# size (4-tuples, as littlefs/FAT give them), which mpremote's "fs ls" shows.
import os as _os
_ilistdir = _os.ilistdir
_HIDE = ("dev", "proc", ".vboard")

def _ilistdir_board(path=None):
    it = _ilistdir() if path is None else _ilistdir(path)
    if path is not None and not isinstance(path, str):
        yield from it
        return
    full = path or "."
    if not full.startswith("/"):
        cwd = _os.getcwd()
        full = (cwd.rstrip("/") + "/" + full) if full != "." else cwd
    parts = [p for p in full.split("/") if p and p != "."]
    root = not parts
    base = "/" + "/".join(parts)
    for e in it:
        if root and e[0] in _HIDE:
            continue
        if len(e) < 4:
            size = 0
            if e[1] == 0x8000:
                try:
                    size = _os.stat(base.rstrip("/") + "/" + e[0])[6]
                except OSError:
                    pass
            e = (e[0], e[1], e[2], size)
        yield e

def _listdir_board(path=None):
    return [e[0] for e in _ilistdir_board(path)]

_os.ilistdir = _ilistdir_board
_os.listdir = _listdir_board
`;

const MACHINE_PY = `# machine for the virtual board: what mpremote and pnp deploy use.
import _vboard

def reset():
    """Hard reset: the board boots again and runs boot.py and main.py."""
    _vboard.reset(1)
    while True:
        pass

def soft_reset():
    _vboard.reset(0)
    while True:
        pass

def unique_id():
    return b"vboard"

def freq(*a):
    return 0

def idle():
    pass
`;

function installRuntime() {
  FS.mkdirTree("/.vboard");
  FS.writeFile("/.vboard/_vbrt.py", VBRT_PY);
  FS.writeFile("/.vboard/board.py", fs.readFileSync(path.join(HERE, "board.py")));
  FS.writeFile("/.vboard/machine.py", MACHINE_PY);
  mp.registerJsModule("_vboard", bridge);
  mp.runPython(
    "import sys\n" +
    "sys.path[:] = ['', '.frozen', '/lib', '/.vboard']\n" +
    "import _vbrt\n" +
    "del sys\n",
  );
}

// ------------------------------------------------------------------ running code
const decoder = new TextDecoder("utf-8");

function fgWait() {
  // Promise of the error text of the foreground tasks ("" when they all returned).
  return new Promise((resolve) => {
    try {
      const rt = mp.pyimport("_vbrt");
      if (!rt.pending()) {
        resolve(rt.take_errors());
        return;
      }
      rt.watch((s) => resolve(String(s || "")));
    } catch (e) {
      resolve(`vboard: ${e.message || e}\n`);
    }
  });
}

async function runCode(src) {
  // Run like MicroPython's raw REPL: returns {err: traceback text, exit: SystemExit?}.
  let err = "";
  let exit = false;
  try { mp.pyimport("_vbrt").begin(); } catch (e) { /* */ }
  try {
    // asyncio.run(x) -> await _vbrt.Wait(x) where top-level await is allowed (module
    // level, not inside a def); when that does not compile, run the source as it is.
    const rewritten = src.replace(/(^|[^\w.])asyncio\.run\(/g, "$1await _vbrt.Wait(");
    let r;
    if (rewritten !== src) {
      try {
        r = mp.runPythonAsync(rewritten);
      } catch (e) {
        if (!(e && e.name === "PythonError" && e.type === "SyntaxError")) throw e;
        r = mp.runPythonAsync(src);
      }
    } else r = mp.runPythonAsync(src);
    if (r && typeof r.then === "function") await r;
  } catch (e) {
    if (e && e.name === "PythonError") {
      if (e.type === "SystemExit") exit = true;
      else err = String(e.message);
    } else {
      err = `vboard: ${e && e.message ? e.message : e}\n`;
    }
  }
  if (!err && !exit) err = await fgWait();
  return { err, exit };
}

async function runFile(name) {
  let st = null;
  try { st = FS.stat("/" + name); } catch (e) { return; }
  if (!FS.isFile(st.mode)) return;
  const src = decoder.decode(FS.readFile("/" + name));
  let err = "";
  try {
    const r = mp.runPythonAsync(src);
    if (r && typeof r.then === "function") await r;
  } catch (e) {
    if (e && e.name === "PythonError") {
      if (e.type !== "SystemExit") err = String(e.message).replace(/File "<stdin>"/g, `File "${name}"`);
    } else err = String(e && e.message ? e.message : e) + "\n";
  }
  if (err) outText(err);
  flushOut();
}

let replStarted = false;
async function handle(m) {
  if (m.t === "exec") {
    const { err, exit } = await runCode(decoder.decode(m.code));
    flushOut();
    post({ t: "out", b: Uint8Array.from([4]) });
    if (err) {
      outText(err);
      flushOut();
    }
    post({ t: "out", b: Uint8Array.from([4]) });
    syncSafe();
    post({ t: "done", id: m.id, exit });
  } else if (m.t === "chars") {
    let reset = false;
    if (!replStarted) { mp.replInit(); replStarted = true; }
    for (const c of m.bytes) {
      if (c === 3) {
        try { mp.pyimport("_vbrt").interrupt(); } catch (e) { /* */ }
      }
      let r = 0;
      try {
        r = mp.replProcessChar(c);
      } catch (e) {
        outText(`\r\nvboard: ${e && e.message ? e.message : e}\r\n`);
      }
      if (r) { reset = true; break; }
    }
    flushOut();
    syncSafe();
    post({ t: "done", id: m.id, reset });
  } else if (m.t === "repl") {
    mp.replInit();
    replStarted = true;
    flushOut();
    post({ t: "done", id: m.id });
  } else if (m.t === "sync") {
    const n = syncSafe();
    post({ t: "done", id: m.id, n });
  } else if (m.t === "interrupt") {
    try { mp.pyimport("_vbrt").interrupt(); } catch (e) { /* */ }
  }
}

// Requests are handled one at a time, in order; "interrupt" jumps the queue.
const queue = [];
let busy = false;
async function pump() {
  if (busy) return;
  busy = true;
  while (queue.length) {
    const m = queue.shift();
    try {
      await handle(m);
    } catch (e) {
      log(`worker: ${e && e.stack ? e.stack : e}`);
      if (m.id !== undefined) post({ t: "done", id: m.id });
    }
  }
  busy = false;
}
// ------------------------------------------------------------------ boot
// A standby worker (board.mjs keeps one ready for the next reset) loads and warms up
// the VM, then waits for {t:"activate", mode, safe} before touching the file system:
// the previous worker writes the file system back first.
installRuntime();
if (opts.standby) {
  await runCode("pass");
  flushOut();
  const act = await new Promise((resolve) => parentPort.once("message", resolve));
  opts.mode = act.mode;
  opts.safe = act.safe;
  if (act.addrs) addrTable = act.addrs;
}
loadFs();
busy = true;
parentPort.on("message", (m) => {
  if (m.t === "interrupt") {
    handle(m);
    return;
  }
  if (m.t === "addr") {   // not behind a running REPL command: the app may be waiting for it
    addrChanged(m);
    return;
  }
  queue.push(m);
  pump();
});
// Idle-time mirroring: catches writes made by asyncio tasks between REPL commands.
setInterval(syncSafe, 1000).unref();

await runFile("boot.py");
if (opts.mode === "friendly" && !opts.safe) await runFile("main.py");
if (opts.mode === "friendly") {
  mp.replInit();
  replStarted = true;
}
flushOut();
syncSafe();
busy = false;
post({ t: "ready" });
pump();
