// Runs a MicroPython script on the 32-bit WebAssembly port (npm package
// @micropython/micropython-webassembly-pyscript, pinned in benchmarks/package.json), the way
// `MICROPYPATH=PATHS micropython -X heapsize=N SCRIPT ARGS...` runs it on the unix port.
//
//   node benchmarks/heap32.mjs HEAPSIZE PATHS SCRIPT [ARGS...]
//
// PATHS: colon-separated host directories, copied into the port's in-memory filesystem at the
// same absolute paths and put on sys.path in that order. SCRIPT runs as __main__ with sys.argv
// [SCRIPT, ARGS...]. This port's asyncio has no run(): its event loop is JavaScript's, which
// gets control only after the script, and the process exits then, so tasks a script creates
// never run.
//
// gc.collect() frees nothing here while Python runs: it asks for a collection, made when the
// next call from JavaScript starts (this port cannot scan the WebAssembly stack for roots).
// So when the script defines step(), it is called once per call from here until it returns
// False: a script measures the heap at the start of step(), after a gc.collect() at the end
// of the call before.
//
// The port grows its GC heap with a new area whenever an allocation fails after a collection
// (MICROPY_GC_SPLIT_HEAP_AUTO), and frees emptied areas when it collects, so HEAPSIZE does not
// bound the heap: it is the size of the first area. Each call from here ends with
// micropython.mem_info(), whose lines are read here, not printed, and the last line of output,
// `heap32: {"first_area": A, "peak": P}`, gives that area's usable bytes and the most the heap
// had at the end of a call (areas are only freed between calls): P > A means the script did
// not fit in HEAPSIZE, which on the unix port (one fixed area) would have been a MemoryError.
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

const [heapsize, paths, script, ...args] = process.argv.slice(2);
if (!script) {
  console.error("usage: node heap32.mjs HEAPSIZE PATHS SCRIPT [ARGS...]");
  process.exit(2);
}

let firstArea = null;
let peak = 0;
const MEM_INFO = /^(stack: \d+ out of \d+| No\. of 1-blocks:)/;
const mp = await loadMicroPython({
  heapsize: Number(heapsize),
  stdout: (line) => {
    const total = /^GC: total: (\d+)/.exec(line);
    if (total) {
      firstArea ??= Number(total[1]);
      peak = Math.max(peak, Number(total[1]));
    } else if (!MEM_INFO.test(line)) console.log(line);
  },
  stderr: (line) => console.error(line),
});

function copyTree(dir) {
  mp.FS.mkdirTree(dir);
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) copyTree(path);
    else mp.FS.writeFile(path, readFileSync(path));
  }
}

const run = (code) => mp.runPython(`${code}\nimport micropython\nmicropython.mem_info()\n`);

const dirs = paths.split(":").filter((dir) => dir);
dirs.forEach(copyTree);
mp.FS.mkdirTree("/tmp");
run("");
const setup = [
  "import sys",
  `sys.path[:0] = ${JSON.stringify(dirs)}`,
  `sys.argv[:] = ${JSON.stringify([script, ...args])}`,
].join("\n");
mp.runPython(setup);
try {
  run(readFileSync(script, "utf8"));
  const more = (code) => (run(`more_steps = ${code}`), mp.globals.get("more_steps"));
  if (more("'step' in globals()")) while (more("step()"));
} catch (error) {
  console.error(error.name === "PythonError" ? error.message : error);
  process.exitCode = 1;
}
console.log(`heap32: ${JSON.stringify({ first_area: firstArea, peak })}`);
process.exit();
