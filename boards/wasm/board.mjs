#!/usr/bin/env node
// The virtual board: MicroPython WebAssembly behind a serial-console protocol that
// mpremote speaks, on stdin/stdout. Put a pseudo-terminal in front with socat:
//
//   socat PTY,rawer,link=/tmp/vb.tty EXEC:"node boards/wasm/board.mjs --state DIR"
//   mpremote connect /tmp/vb.tty exec "print(1+1)"
//
// (`pnp vboard --state DIR` does exactly that and prints "device: PATH".)
//
// Options:
//   --state DIR      host folder of the board: DIR/fs is the board's file system (loaded
//                    at boot, written back after every REPL command, every second while
//                    idle, on reset and on exit). Without it nothing persists.
//                    DIR/ready (this process's pid) appears once the first boot is done.
//   --watchdog S     after Ctrl-C, a program that has not stopped within S seconds
//                    (e.g. `while True: pass`, which never yields) is ended by a hard
//                    reset; default 2, 0 = never.
//   --heapsize N     initial MicroPython heap (bytes; default 1 MiB, grows by itself).
//   --safe           first boot skips main.py.
//
// The board's addresses (what board.py's addresses()/address_list() report; the UDP
// sockets still bind the host's loopback): ::1 and 127.0.0.1 at start. With --state,
// a control socket STATE/ctl.sock (unix stream, one JSON object per line, one JSON
// reply per line) changes them like a router or DHCP would, and the board's Python
// gets each change as an address event (board.on_address_change / watch):
//   {"op":"address","kind":"added"|"deprecated"|"removed","address":"2001:db8::1",
//    "preferred":3600,"valid":7200,"flags":["stable"|"temporary"],"zone":null}
//        -> {"ok":true,"event":[kind,address,zone,preferred,valid,flags],"addresses":[...]}
//   {"op":"addresses"} -> {"ok":true,"addresses":[[address,state,preferred,valid,zone,flags],...]}
//   errors: {"ok":false,"error":"..."}.   `pnp vboard --state DIR --address KIND ADDR` sends one.
//
// The protocol (MicroPython's shared/runtime/pyexec.c, as mpremote uses it):
//   friendly REPL (the port's own event REPL) ; Ctrl-A raw REPL ; Ctrl-B back ;
//   raw REPL: code, Ctrl-D -> "OK", output, \x04, traceback, \x04, ">" ;
//   raw-paste mode (\x05 A \x01 -> "R\x01", 16-bit window, \x01 per window consumed) ;
//   Ctrl-D on an empty line = soft reset: "MPY: soft reboot", a fresh interpreter
//   (new worker thread), same file system; boot.py always, main.py only when the reset
//   came from the friendly REPL (like a real board: mpremote's resets skip main.py) ;
//   Ctrl-C: KeyboardInterrupt for asyncio.run() tasks, watchdog hard reset for code
//   that does not yield.
// asyncio: the port has no asyncio.run and its loop runs on JS timers, so the board adds
//   one. In a REPL command (mpremote exec/run) `asyncio.run(coro)` at module level is
//   awaited: the lines after it run after it, its result or exception comes back, and
//   the command ends when it ends. In boot.py/main.py (and inside a def) it starts coro
//   as a task and returns: main.py's app keeps running while the REPL stays usable;
//   Ctrl-C (mpremote sends one on connect) cancels it, as it stops main.py on a board.
// machine.reset() (`mpremote reset`) boots again with main.py; machine.soft_reset().
// Not supported: `mpremote mount` (needs blocking reads of the console from Python).
// The VM itself (bridge, UDP, AES, file system mirror) is boards/wasm/bridge.mjs.

import { Worker } from "node:worker_threads";
import { fileURLToPath } from "node:url";
import path from "node:path";
import fs from "node:fs";
import net from "node:net";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BRIDGE = path.join(HERE, "bridge.mjs");

function usage(msg) {
  if (msg) process.stderr.write(`board.mjs: ${msg}\n`);
  process.stderr.write("usage: node boards/wasm/board.mjs [--state DIR] [--watchdog S] [--heapsize N] [--safe]\n");
  process.exit(2);
}
const opts = { state: null, watchdog: 2, heapsize: 1024 * 1024, safe: false };
{
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i++) {
    const need = () => (i + 1 < a.length ? a[++i] : usage(`${a[i]} needs a value`));
    if (a[i] === "--state") opts.state = path.resolve(need());
    else if (a[i] === "--watchdog") opts.watchdog = Number(need());
    else if (a[i] === "--heapsize") opts.heapsize = Number(need());
    else if (a[i] === "--safe") opts.safe = true;
    else if (a[i] === "-h" || a[i] === "--help") usage();
    else usage(`unknown argument ${a[i]}`);
  }
  if (!(opts.watchdog >= 0)) usage("bad --watchdog");
  if (!Number.isInteger(opts.heapsize) || opts.heapsize < 65536) usage("bad --heapsize");
  if (opts.state) {
    fs.mkdirSync(path.join(opts.state, "fs"), { recursive: true });
    fs.rmSync(path.join(opts.state, "ready"), { force: true });
  }
}

const log = (s) => process.stderr.write(`vboard: ${s}\n`);

// ------------------------------------------------------------------ the board's addresses
// address -> [address, state, preferred_s, valid_s, zone, flags]; kept here, not in the
// VM, so a reset keeps them (as a real board keeps its network).
const addrs = new Map();
function addrFlags(a) {
  if (net.isIP(a) === 4) return ["ipv4"];
  if (a === "::1") return ["loopback"];
  return /^fe[89ab]/i.test(a) ? ["link-local"] : ["stable"];
}
for (const a of ["::1", "127.0.0.1"]) addrs.set(a, [a, "preferred", null, null, null, addrFlags(a)]);
const addrTable = () => [...addrs.values()];
function lifetime(v, name) {
  if (v === undefined || v === null) return null;
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Error(`${name} must be a whole number of seconds (0..4294967295) or null`);
  return v;
}
function addressCommand(c) {
  // One address event from the control socket: update the table, tell the VM.
  const kind = c.kind;
  if (!["added", "deprecated", "removed"].includes(kind)) throw new Error(`kind must be added, deprecated or removed, not ${JSON.stringify(kind)}`);
  const a = typeof c.address === "string" ? c.address.toLowerCase() : "";
  if (!net.isIP(a)) throw new Error(`${JSON.stringify(c.address)} is not an IPv6 or IPv4 address`);
  let flags = c.flags === undefined || c.flags === null ? null : c.flags;
  if (flags !== null && (!Array.isArray(flags) || !flags.every((f) => typeof f === "string"))) throw new Error("flags must be a list of words");
  const old = addrs.get(a);
  if (flags === null) flags = old ? old[5] : addrFlags(a);
  const zone = c.zone === undefined ? (old ? old[4] : null) : c.zone;
  let pref = lifetime(c.preferred, "preferred");
  let valid = lifetime(c.valid, "valid");
  if (kind === "removed") {
    if (!old) throw new Error(`${a} is not an address of the board`);
    addrs.delete(a);
    pref = pref === null ? 0 : pref;
    valid = valid === null ? 0 : valid;
  } else {
    if (kind === "deprecated" && pref === null) pref = 0;
    addrs.set(a, [a, kind === "added" ? "preferred" : "deprecated", pref, valid, zone, flags]);
  }
  const ev = [kind, a, zone, pref, valid, flags];
  if (worker) worker.postMessage({ t: "addr", ev, table: addrTable() });
  return ev;
}
function control(line) {
  let c;
  try { c = JSON.parse(line); } catch (e) { return { ok: false, error: "not JSON" }; }
  try {
    if (c && c.op === "address") return { ok: true, event: addressCommand(c), addresses: addrTable() };
    if (c && c.op === "addresses") return { ok: true, addresses: addrTable() };
    return { ok: false, error: `unknown op ${JSON.stringify(c && c.op)} (address, addresses)` };
  } catch (e) {
    return { ok: false, error: String(e.message || e) };
  }
}
let ctlServer = null;
function startControl() {
  if (!opts.state) return;
  const p = path.join(opts.state, "ctl.sock");
  fs.rmSync(p, { force: true });
  ctlServer = net.createServer((conn) => {
    let buf = "";
    conn.setEncoding("utf8");
    conn.on("data", (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (line) conn.write(JSON.stringify(control(line)) + "\n");
      }
    });
    conn.on("error", () => {});
  });
  ctlServer.on("error", (e) => log(`control socket ${p}: ${e.message || e}`));
  ctlServer.listen(p);
  ctlServer.unref();
}

// ------------------------------------------------------------------ console output
let dropped = 0;
function write(b) {
  if (typeof b === "string") b = Buffer.from(b, "latin1");
  // Nobody reading the pty for a long time: drop rather than grow without bound.
  if (process.stdout.writableLength > 4 * 1024 * 1024) {
    dropped += b.length;
    return;
  }
  process.stdout.write(b);
}
process.stdout.on("error", () => shutdown(0));

// ------------------------------------------------------------------ the VM worker
let worker = null;
let ready = false;       // booted and not being reset
let busy = false;        // a request is outstanding
let current = null;      // {id, resolve}
let nextId = 1;
let watchdog = null;
let crashes = [];
let announced = false;   // STATE/ready written after the first boot (tests wait for it)

// A standby VM, loaded and warmed up while the board is idle, makes a reset (and so
// every mpremote command, which starts with one) ~100 ms faster.
let standby = null;
function spawnStandby() {
  if (standby || shuttingDown) return;
  const w = new Worker(BRIDGE, { workerData: { state: opts.state, heapsize: opts.heapsize, standby: true } });
  standby = w;
  w.on("message", (m) => { if (standby === w && m.t === "log") log(m.s); });
  w.on("error", (e) => { if (standby === w) log(`standby VM error: ${e && e.stack ? e.stack : e}`); });
  w.on("exit", () => { if (standby === w) standby = null; });
}

function startWorker(mode, safe) {
  ready = false;
  busy = true;
  let w;
  if (standby) {
    w = standby;
    standby = null;
    w.postMessage({ t: "activate", mode, safe: !!safe, addrs: addrTable() });
  } else {
    w = new Worker(BRIDGE, { workerData: { state: opts.state, heapsize: opts.heapsize, mode, safe: !!safe, addrs: addrTable() } });
  }
  worker = w;
  w.on("message", (m) => {
    if (w !== worker) return;
    if (m.t === "out") write(Buffer.from(m.b));
    else if (m.t === "log") log(m.s);
    else if (m.t === "ready") {
      ready = true;
      busy = false;
      clearWatchdog();
      if (mode === "raw") write("raw REPL; CTRL-B to exit\r\n>");
      setImmediate(spawnStandby);
      if (!announced && opts.state) {
        announced = true;
        try { fs.writeFileSync(path.join(opts.state, "ready"), `${process.pid}\n`); } catch (e) { /* */ }
      }
      pump();
    } else if (m.t === "reset") {
      // machine.reset(): boot again (boot.py + main.py); machine.soft_reset(): like Ctrl-D.
      if (m.hard) {
        const old = worker;
        worker = null;
        current = null;
        clearWatchdog();
        old.terminate();
        rmode = "friendly";
        line = [];
        inq = [];
        startWorker("friendly", false);
      } else {
        const old = worker;
        worker = null;
        current = null;
        clearWatchdog();
        old.terminate();
        write("MPY: soft reboot\r\n");
        line = [];
        startWorker(rmode === "friendly" ? "friendly" : "raw", false);
      }
    } else if (m.t === "done") {
      if (current && current.id === m.id) {
        const c = current;
        current = null;
        busy = false;
        clearWatchdog();
        c.resolve(m);
      }
    }
  });
  w.on("error", (e) => {
    if (w !== worker) return;
    log(`VM error: ${e && e.stack ? e.stack : e}`);
  });
  w.on("exit", (code) => {
    if (w !== worker || shuttingDown) return;
    // The VM died on its own (wasm abort, out of memory...): reboot, safe after a loop.
    const now = Date.now();
    crashes = crashes.filter((t) => now - t < 10000).concat([now]);
    current = null;
    worker = null;
    rmode = "friendly";
    if (crashes.length >= 5) {
      write(`\r\nvboard: the VM keeps stopping (exit ${code}); not restarting it (see stderr)\r\n`);
      log("the VM stopped 5 times within 10 s; giving up");
      return;
    }
    write(`\r\nvboard: the VM stopped (exit ${code}); hard reset\r\n`);
    startWorker("friendly", crashes.length >= 3);
  });
}

function request(m, timeoutMs) {
  // Send one request; resolves with the "done" message (or null on timeout/no worker).
  return new Promise((resolve) => {
    if (!worker) {
      resolve(null);
      return;
    }
    const id = nextId++;
    busy = true;
    let timer = null;
    current = {
      id,
      resolve: (r) => {
        if (timer) clearTimeout(timer);
        resolve(r);
      },
    };
    if (timeoutMs) {
      timer = setTimeout(() => {
        if (current && current.id === id) {
          current = null;
          busy = false;
          resolve(null);
        }
      }, timeoutMs);
    }
    worker.postMessage({ ...m, id });
  });
}

function clearWatchdog() {
  if (watchdog) clearTimeout(watchdog);
  watchdog = null;
}
function armWatchdog() {
  if (watchdog || !opts.watchdog) return;
  watchdog = setTimeout(() => {
    watchdog = null;
    if (!busy) return;
    write(`\r\nvboard: watchdog: the program ignored Ctrl-C for ${opts.watchdog} s; hard reset (main.py skipped)\r\n`);
    hardReset();
  }, opts.watchdog * 1000);
}

async function hardReset() {
  const w = worker;
  worker = null;
  current = null;
  if (w) await w.terminate();
  rmode = "friendly";
  line = [];
  startWorker("friendly", true);
}

async function softReset(mode) {
  ready = false;
  busy = true;
  await request({ t: "sync" }, 3000);
  const w = worker;
  worker = null;
  current = null;
  if (w) await w.terminate();
  write("MPY: soft reboot\r\n");
  rmode = mode;
  line = [];
  startWorker(mode, false);
}

// ------------------------------------------------------------------ console input
const CTRL_A = 1, CTRL_B = 2, CTRL_C = 3, CTRL_D = 4, CTRL_E = 5;
const WINDOW = 8192; // raw-paste flow-control window (bytes)
let inq = [];            // pending input bytes
let rmode = "friendly";  // friendly | raw | paste
let line = [];           // raw REPL / raw-paste buffer
let pasteCount = 0;
let swallowCtrlD = false;

process.stdin.on("data", (chunk) => {
  for (const c of chunk) {
    if (c === CTRL_C && (busy || !ready) && rmode !== "paste") {
      // Ctrl-C while code runs: interrupt it, forget what was typed ahead of it.
      inq = [];
      if (worker) worker.postMessage({ t: "interrupt" });
      armWatchdog();
      continue;
    }
    inq.push(c);
  }
  pump();
});
process.stdin.on("end", () => shutdown(0));

function pump() {
  while (ready && !busy && inq.length) {
    if (rmode === "friendly") {
      // A run of friendly-REPL input up to (not including) Ctrl-A.
      const n = inq.indexOf(CTRL_A);
      if (n === 0) {
        inq.shift();
        rmode = "raw";
        line = [];
        write("\r\nraw REPL; CTRL-B to exit\r\n>");
        continue;
      }
      const run = n < 0 ? inq : inq.slice(0, n);
      inq = n < 0 ? [] : inq.slice(n);
      request({ t: "chars", bytes: Uint8Array.from(run) }).then((m) => {
        if (m && m.reset) softReset("friendly");
        else pump();
      });
      return;
    }
    const c = inq.shift();
    if (rmode === "paste") {
      if (c === CTRL_D) {
        write("\x04");
        rmode = "raw";
        runRaw(line);
        line = [];
        return;
      } else if (c === CTRL_C) {
        write("\x04");
        rmode = "raw";
        line = [];
        swallowCtrlD = true;
      } else {
        line.push(c);
        if (++pasteCount >= WINDOW) {
          pasteCount = 0;
          write("\x01");
        }
      }
      continue;
    }
    // raw REPL
    if (c === CTRL_A) {
      if (line.length === 2 && line[0] === CTRL_E && line[1] === 0x41) {
        rmode = "paste";
        line = [];
        pasteCount = 0;
        write(Buffer.from([0x52, 0x01, WINDOW & 0xff, WINDOW >> 8]));
      } else {
        line = [];
        write("raw REPL; CTRL-B to exit\r\n>");
      }
    } else if (c === CTRL_B) {
      line = [];
      rmode = "friendly";
      write("\r\n");
      request({ t: "repl" }).then(() => pump());
      return;
    } else if (c === CTRL_C) {
      line = [];
    } else if (c === CTRL_D) {
      if (swallowCtrlD) {
        swallowCtrlD = false;
        continue;
      }
      write("OK");
      if (line.length === 0) {
        write("\r\n");
        softReset("raw");
        return;
      }
      runRaw(line);
      line = [];
      return;
    } else {
      swallowCtrlD = false;
      line.push(c);
    }
  }
}

function runRaw(bytes) {
  request({ t: "exec", code: Uint8Array.from(bytes) }).then((m) => {
    if (m && m.exit) {
      softReset("raw");
      return;
    }
    if (worker) write(">");
    pump();
  });
}

// ------------------------------------------------------------------ lifecycle
let shuttingDown = false;
async function shutdown(code) {
  if (shuttingDown) return;
  shuttingDown = true;
  clearWatchdog();
  if (worker) await request({ t: "sync" }, ready && !busy ? 2000 : 500);
  if (dropped) log(`${dropped} bytes of console output dropped (nobody was reading)`);
  if (worker) await worker.terminate();
  if (standby) await standby.terminate();
  if (opts.state) fs.rmSync(path.join(opts.state, "ready"), { force: true });
  if (ctlServer) { try { ctlServer.close(); } catch (e) { /* */ } fs.rmSync(path.join(opts.state, "ctl.sock"), { force: true }); }
  process.exit(code);
}
for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"]) process.on(sig, () => shutdown(0));

startControl();
startWorker("friendly", opts.safe);
