/**
 * The nola-gpu command line: a thin shell over the library's functions.
 *
 * Usage errors exit 2 with the usage line; runtime errors exit 1 with one clear line.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Gpu, GpuError } from "./kernels/gpu.ts";
import { SafetensorsError } from "./formats/safetensors.ts";

const USAGE = "usage: nola-gpu <finetune|bench|inspect|adapter> [options]  (--help for more)";

const HELP = `nola-gpu: fine-tune transformers with NOLA adapters on WebGPU

Commands:
  finetune            Run the main job. Until pipeline files land, this runs the built-in GPU
                      check: matmul against a float64 reference and a short benchmark.
  bench [SUITE...] [--filter S]
                      Run the benchmarks (matmul, basis, gpt2, adapters; default all): a table
                      on stdout and JSON under out/bench/. --filter keeps matching matmul rows.
  inspect FILE        List the tensors (dtype, shape, bytes) and metadata of a safetensors file.
  adapter             Print the WebGPU adapter, its features and its limits.

Examples:
  deno task finetune
  deno task bench matmul --filter square
  deno run --allow-read main.ts inspect model.safetensors
`;

class UsageError extends Error {}

/** Errors a user can cause or fix: printed as one line, no stack. */
function isUserFacing(error: unknown): error is Error {
  return error instanceof GpuError || error instanceof SafetensorsError ||
    error instanceof Deno.errors.NotFound || error instanceof Deno.errors.PermissionDenied ||
    error instanceof Deno.errors.NotCapable;
}

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      help: { type: "boolean", short: "h" },
      filter: { type: "string" },
    },
  }) as { values: { help?: boolean; filter?: string }; positionals: string[] };
  const [command, ...rest] = positionals;
  if (values.help || command === "help") {
    console.log(HELP);
    return;
  }
  switch (command) {
    case "finetune": {
      if (rest.length > 0) {
        throw new UsageError(
          `Pipeline files are not supported yet ("${rest[0]}"): run \`finetune\` with no argument`,
        );
      }
      const { runGpuCheck } = await import("./pipelines/gpu_check.ts");
      await runGpuCheck();
      return;
    }
    case "bench": {
      const { runBench } = await import("./bench/main.ts");
      await runBench({ suites: rest, filter: values.filter });
      return;
    }
    case "inspect": {
      if (rest.length !== 1) throw new UsageError("inspect takes exactly one FILE");
      const { inspectFile } = await import("./formats/inspect.ts");
      console.log(await inspectFile(rest[0]));
      return;
    }
    case "adapter": {
      using gpu = await Gpu.acquire();
      console.log(gpu.describe());
      return;
    }
    case undefined:
      throw new UsageError("missing command");
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (error) {
    if (
      error instanceof UsageError || (error as Error)?.name === "TypeError" &&
        (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")
    ) {
      console.error(`error: ${(error as Error).message}\n${USAGE}`);
      Deno.exit(2);
    }
    if (isUserFacing(error)) {
      console.error(`error: ${error.message}`);
      Deno.exit(1);
    }
    throw error;
  }
}
