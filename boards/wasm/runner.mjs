#!/usr/bin/env node
// Run Python on the MicroPython WebAssembly port (npm
// @micropython/micropython-webassembly-pyscript) with the firmware package loaded.
//
//   node boards/wasm/runner.mjs [options] [test_module ...]
//       runs host_tests/mp/runner.py inside MicroPython: every test_* function of
//       every host_tests/mp/test_*.py (or only the named modules); the last line of
//       output is "N passed, M failed"; exit status 0 only when M == 0 and N > 0.
//   node boards/wasm/runner.mjs [options] --script FILE [args ...]
//   node boards/wasm/runner.mjs [options] -c CODE [args ...]
//       run a script (as __main__) with the same file system; sys.argv = [FILE, args...].
//
// Options:
//   --timeout S     hard limit in seconds (default 600, 0 = none); the VM runs in a
//                   worker thread that is terminated on expiry; exit status 124.
//   --heapsize N    initial MicroPython heap in bytes (default 1 MiB; it grows by itself).
//   --tests DIR     directory of MicroPython test modules (default host_tests/mp).
//   -v              the test runner prints one line per test.
//
// In-VM file system (emscripten MEMFS):
//   /lib/pnpipsec/...   copy of firmware/pnpipsec (recursively, *.py only)
//   /lib/pnpwasm.py     helpers (urandom, perf_ms) over the JS module "_pnpwasm"
//   /tests/...          copy of the tests directory (*.py); sys.path[0] = "/tests"
//
// JS module "_pnpwasm" (registered with mp.registerJsModule), wrapped by /lib/pnpwasm.py:
//   random(n) -> Uint8Array of n bytes from Node's crypto.getRandomValues
//   fill_random(addr, n) -> 1 if n random bytes were written at wasm address addr
//                           (uctypes.addressof(bytearray)), 0 if memory is not reachable
//   now_ms() -> performance.now() (float milliseconds; ticks_us has ms resolution here)
//   argv() -> JSON string of the script arguments
//
// Exit status: 0 ok; 1 test failures, zero tests, or a Python exception escaped
// (its traceback goes to stderr); SystemExit(n) -> n; 124 timeout; 2 usage error.

import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { fileURLToPath, pathToFileURL } from "node:url";
import path from "node:path";
import fs from "node:fs";
import { webcrypto } from "node:crypto";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "..", "..");

function usage(msg) {
  if (msg) process.stderr.write(`runner.mjs: ${msg}\n`);
  process.stderr.write(
    "usage: node boards/wasm/runner.mjs [--timeout S] [--heapsize N] [--tests DIR] [-v]\n" +
      "                                   [test_module ... | --script FILE [args] | -c CODE [args]]\n",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const o = {
    timeout: 600,
    heapsize: 1024 * 1024,
    tests: path.join(REPO, "host_tests", "mp"),
    verbose: false,
    script: null,
    code: null,
    args: [],
  };
  let i = 0;
  const need = (name) => {
    if (i + 1 >= argv.length) usage(`${name} needs a value`);
    return argv[++i];
  };
  for (; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--timeout") o.timeout = Number(need(a));
    else if (a === "--heapsize") o.heapsize = Number(need(a));
    else if (a === "--tests") o.tests = path.resolve(need(a));
    else if (a === "-v" || a === "--verbose") o.verbose = true;
    else if (a === "--script") {
      o.script = path.resolve(need(a));
      o.args = argv.slice(i + 1);
      break;
    } else if (a === "-c") {
      o.code = need(a);
      o.args = argv.slice(i + 1);
      break;
    } else if (a === "-h" || a === "--help") usage();
    else if (a.startsWith("-")) usage(`unknown option ${a}`);
    else o.args.push(a);
  }
  if (!Number.isFinite(o.timeout) || o.timeout < 0) usage("bad --timeout");
  if (!Number.isInteger(o.heapsize) || o.heapsize < 65536) usage("bad --heapsize");
  if (o.script && !fs.existsSync(o.script)) usage(`no such script ${o.script}`);
  if (!fs.existsSync(o.tests)) usage(`no such tests directory ${o.tests}`);
  return o;
}

// ---------------------------------------------------------------- main thread
async function mainThread() {
  const opts = parseArgs(process.argv.slice(2));
  const worker = new Worker(fileURLToPath(import.meta.url), { workerData: opts });
  let rc = null;
  let timer = null;
  const finish = (code) => {
    if (timer) clearTimeout(timer);
    process.exitCode = code;
  };
  worker.on("message", (m) => {
    if (m.t === "out") process.stdout.write(m.s);
    else if (m.t === "err") process.stderr.write(m.s);
    else if (m.t === "rc") rc = m.rc;
  });
  worker.on("error", (e) => {
    process.stderr.write(`runner.mjs: worker error: ${e && e.stack ? e.stack : e}\n`);
    rc = 1;
  });
  worker.on("exit", () => finish(rc === null ? 1 : rc));
  if (opts.timeout > 0) {
    timer = setTimeout(() => {
      process.stderr.write(`runner.mjs: TIMEOUT after ${opts.timeout} s: MicroPython VM terminated\n`);
      rc = 124;
      worker.terminate();
    }, opts.timeout * 1000);
  }
}

// ---------------------------------------------------------------- worker thread
function copyTree(FS, src, dst) {
  // Copy *.py files (recursively) from the host directory src to the MEMFS path dst.
  FS.mkdirTree(dst);
  for (const ent of fs.readdirSync(src, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (ent.name === "__pycache__" || ent.name.startsWith(".")) continue;
    const s = path.join(src, ent.name);
    const d = dst + "/" + ent.name;
    if (ent.isDirectory()) copyTree(FS, s, d);
    else if (ent.isFile() && ent.name.endsWith(".py")) FS.writeFile(d, fs.readFileSync(s));
  }
}

const PNPWASM_PY = `"""Virtual-board helpers for MicroPython WebAssembly (see boards/wasm/runner.mjs)."""
import _pnpwasm

try:
    import uctypes as _uctypes
except ImportError:
    _uctypes = None


def urandom(n):
    """n random bytes from Node's crypto (os.urandom is absent in the wasm port)."""
    if n <= 0:
        return b""
    buf = bytearray(n)
    if _uctypes is not None and _pnpwasm.fill_random(_uctypes.addressof(buf), n):
        return bytes(buf)
    return bytes(_pnpwasm.random(n))


def perf_ms():
    """High-resolution monotonic time in float milliseconds (performance.now())."""
    return _pnpwasm.now_ms()
`;

async function workerThread() {
  const opts = workerData;
  const send = (t, s) => parentPort.postMessage({ t, s });
  const out = (line) => send("out", line + "\n");
  const err = (line) => send("err", line + "\n");

  // Capture the wasm memory (for fill_random) without touching Module.HEAPU8, which
  // aborts in this build: wrap WebAssembly.instantiate before loading.
  let memory = null;
  const origInstantiate = WebAssembly.instantiate;
  WebAssembly.instantiate = async function (...a) {
    const r = await origInstantiate.apply(this, a);
    const inst = r.instance || r;
    if (inst && inst.exports && inst.exports.memory) memory = inst.exports.memory;
    return r;
  };

  const { loadMicroPython } = await import(process.env.PNP_WASM_PKG
    ? pathToFileURL(path.join(process.env.PNP_WASM_PKG, "micropython.mjs")).href
    : "@micropython/micropython-webassembly-pyscript/micropython.mjs");
  const mp = await loadMicroPython({ heapsize: opts.heapsize, stdout: out, stderr: err });
  WebAssembly.instantiate = origInstantiate;

  mp.registerJsModule("_pnpwasm", {
    random(n) {
      const b = new Uint8Array(n >>> 0);
      webcrypto.getRandomValues(b);
      return b;
    },
    fill_random(addr, n) {
      try {
        if (!memory) return 0;
        const view = new Uint8Array(memory.buffer, addr >>> 0, n >>> 0);
        webcrypto.getRandomValues(view);
        return 1;
      } catch (e) {
        return 0; // never throw into MicroPython (a sync JS throw escapes try/except)
      }
    },
    now_ms() {
      return performance.now();
    },
    argv() {
      return JSON.stringify(opts.args);
    },
  });

  const FS = mp.FS;
  copyTree(FS, path.join(REPO, "firmware", "pnpipsec"), "/lib/pnpipsec");
  FS.writeFile("/lib/pnpwasm.py", PNPWASM_PY);
  copyTree(FS, opts.tests, "/tests");

  let program;
  if (opts.code !== null || opts.script !== null) {
    const src = opts.code !== null ? opts.code : fs.readFileSync(opts.script, "utf8");
    const name = opts.code !== null ? "-c" : opts.script;
    FS.writeFile("/__main_src__.py", src);
    program =
      "import sys, json, _pnpwasm\n" +
      "sys.path.insert(0, '/tests')\n" +
      `sys.argv[:] = [${JSON.stringify(name)}] + json.loads(_pnpwasm.argv())\n` +
      "_g = {'__name__': '__main__', '__file__': sys.argv[0]}\n" +
      "with open('/__main_src__.py') as _f:\n" +
      "    _src = _f.read()\n" +
      "exec(compile(_src, sys.argv[0], 'exec'), _g)\n" +
      "_pnp_rc = 0\n";
  } else {
    if (!FS.analyzePath("/tests/runner.py").exists) {
      err(`runner.mjs: ${opts.tests} has no runner.py; use --script`);
      parentPort.postMessage({ t: "rc", rc: 2 });
      return;
    }
    program =
      "import sys, json, _pnpwasm\n" +
      "sys.path.insert(0, '/tests')\n" +
      "sys.argv[:] = ['runner.py'] + json.loads(_pnpwasm.argv())\n" +
      "import runner\n" +
      `_pnp_rc = runner.main(sys.argv[1:], verbose=${opts.verbose ? "True" : "False"})\n`;
  }

  let rc = 0;
  try {
    mp.runPython(program);
    const v = mp.globals.get("_pnp_rc");
    rc = typeof v === "number" ? v : 1;
  } catch (e) {
    const msg = e && e.message !== undefined ? String(e.message) : String(e);
    const m = /SystemExit: ?(\d+)?\s*$/.exec(msg.trimEnd());
    if (m) {
      rc = m[1] === undefined ? 0 : Number(m[1]);
    } else {
      err(msg.trimEnd());
      err("runner.mjs: a Python exception escaped");
      rc = 1;
    }
  }
  // Flush a last output line that had no newline.
  const mod = mp._module;
  for (const [key, fn] of [["_stdoutBuffer", out], ["_stderrBuffer", err]]) {
    if (mod && mod[key] && mod[key].length) {
      fn(new TextDecoder().decode(new Uint8Array(mod[key])));
      mod[key] = [];
    }
  }
  parentPort.postMessage({ t: "rc", rc });
}

if (isMainThread) {
  await mainThread();
} else {
  await workerThread();
}
