/**
 * Child process of the SIGKILL test: `runToEnd` in the folder given, printing `ready`, `step N` and
 * `done`. With `--stop-at=partial:N` it stops (to be killed) in the N-th write of a `.safetensors`
 * file (checkpoints, then the adapter) with half the bytes in the temporary file; with
 * `--stop-at=rename:N`, with all of them, just before the rename. It prints `partial NAME` or
 * `rename NAME` there, and at the earlier writes of that kind.
 */

import { basename } from "node:path";
import { testGpu } from "../_util.ts";
import { runToEnd } from "./_fault_run.ts";

const [dir, flag] = Deno.args;
const TEMP = /\.safetensors\.tmp-[0-9a-f]+$/;

if (flag?.startsWith("--stop-at=")) {
  const [marker, n] = flag.slice(10).split(":");
  let count = 0;
  const reached = async (path: string | URL) => {
    console.log(`${marker} ${basename(String(path))}`);
    // Long enough for the parent to kill it; the run would go on if it never did.
    if (++count === Number(n)) await new Promise((resolve) => setTimeout(resolve, 60_000));
  };
  // The atomic writer calls these through the Deno namespace, so replacing them here reaches it.
  const open = Deno.open;
  const rename = Deno.rename;
  if (marker === "partial") {
    Deno.open = async (path, options) => {
      const file = await open(path, options);
      if (!TEMP.test(String(path))) return file;
      const write = file.write.bind(file);
      let first = true;
      file.write = async (data) => {
        if (!first || data.length < 2) return await write(data);
        first = false;
        const written = await write(data.subarray(0, data.length >> 1));
        await reached(path);
        return written;
      };
      return file;
    };
  } else {
    Deno.rename = async (from, to) => {
      if (TEMP.test(String(from))) await reached(from);
      return await rename(from, to);
    };
  }
}

const gpu = await testGpu();
console.log("ready");
await runToEnd(gpu, dir, { onStep: (step) => console.log(`step ${step}`) });
console.log("done");
