#!/usr/bin/env node
// Heap measurements of compiled firmware inside the MicroPython WebAssembly port.
//
//   node tools/pnp/mpy_measure.mjs PLAN.json
//
// PLAN.json: {"mpy_dir": DIR, "heapsize": N, "steps": ["python source", ...]}
//   DIR holds pnpipsec/**.mpy (only *.mpy files are copied, to /lib/... in the VM's
//   MEMFS, so every import loads compiled bytecode, never source).
//   Each step runs in its own mp.runPython() call, in order, sharing globals. The
//   reason for steps: in this port gc.collect() frees nothing inside the runPython call
//   that made the garbage; a collection in a later call does. So a measurement of live
//   heap is "gc.collect(); gc.mem_alloc()" at the start of a step.
//
// Loading follows boards/wasm/runner.mjs (npm @micropython/micropython-webassembly-pyscript,
// loadMicroPython({heapsize, stdout, stderr}), mp.FS for MEMFS). Python prints its results;
// stdout passes through. Exit status: 0, 1 when a step raised (its traceback on stderr), 2 usage.

import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

function die(msg, code) {
  process.stderr.write(`mpy_measure.mjs: ${msg}\n`);
  process.exit(code);
}

const planPath = process.argv[2];
if (!planPath) die("usage: node tools/pnp/mpy_measure.mjs PLAN.json", 2);
let plan;
try {
  plan = JSON.parse(fs.readFileSync(planPath, "utf8"));
} catch (e) {
  die(`cannot read plan ${planPath}: ${e.message}`, 2);
}
if (!plan.mpy_dir || !fs.existsSync(plan.mpy_dir)) die(`no such mpy_dir ${plan.mpy_dir}`, 2);

const { loadMicroPython } = await import(process.env.PNP_WASM_PKG
  ? pathToFileURL(path.join(process.env.PNP_WASM_PKG, "micropython.mjs")).href
  : "@micropython/micropython-webassembly-pyscript/micropython.mjs");
const mp = await loadMicroPython({
  heapsize: plan.heapsize || 4 * 1024 * 1024,
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});

function copyMpy(src, dst) {
  mp.FS.mkdirTree(dst);
  let n = 0;
  for (const ent of fs.readdirSync(src, { withFileTypes: true })) {
    const s = path.join(src, ent.name);
    const d = dst + "/" + ent.name;
    if (ent.isDirectory()) n += copyMpy(s, d);
    else if (ent.isFile() && ent.name.endsWith(".mpy")) {
      mp.FS.writeFile(d, fs.readFileSync(s));
      n += 1;
    }
  }
  return n;
}

const copied = copyMpy(plan.mpy_dir, "/lib");
process.stdout.write(`FP copied_mpy ${copied}\n`);

let rc = 0;
for (let i = 0; i < plan.steps.length; i++) {
  try {
    mp.runPython(plan.steps[i]);
  } catch (e) {
    const msg = e && e.message !== undefined ? String(e.message) : String(e);
    process.stderr.write(`step ${i} raised:\n${msg}\n`);
    rc = 1;
    break;
  }
}
process.exitCode = rc;
