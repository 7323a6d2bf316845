/**
 * The nola-gpu command line: a thin shell over the library's functions.
 *
 * Usage errors exit 2 with the usage line; runtime errors a user can cause (a path, a permission,
 * a bad file, the GPU) exit 1 with one line naming what and where (`pipelines/failure.ts`);
 * anything unexpected is rethrown with its stack.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { failureLine } from "./pipelines/failure.ts";

const DEFAULT_PIPELINE = "pipelines/default.yaml";

/**
 * The default pipeline: from the working directory when it is the project, else the copy
 * embedded beside this module (a compiled binary carries it and its fixtures).
 */
async function defaultPipeline(): Promise<string> {
  try {
    await Deno.stat(DEFAULT_PIPELINE);
    return DEFAULT_PIPELINE;
  } catch {
    return fileURLToPath(new URL(`./${DEFAULT_PIPELINE}`, import.meta.url));
  }
}

/** Each command: its usage line, help text and options. */
const COMMANDS = {
  finetune: {
    usage: "finetune [PIPELINE] [--set KEY=VALUE]... [--resume] [--max-memory SIZE]",
    help: `Runs a pipeline file (default ${DEFAULT_PIPELINE}: NOLA on a tiny GPT-2 and a
data-to-text task). --set overrides a key (stages are addressed by id), --resume continues the
train stage from the run's newest checkpoint. Ctrl-C stops at the next step with a checkpoint.
The load stage prints the run's GPU memory estimate before allocating; --max-memory (6GB, 6GiB,
512MB) refuses to start a run whose estimate is over it.

  deno task finetune
  deno task finetune pipelines/default.yaml --set stages.train.lr=1e-2 --set seed=3
  deno task finetune pipelines/default.yaml --resume
  deno task finetune pipelines/llama-instruct.yaml --max-memory 6GB`,
    options: {
      set: { type: "string", multiple: true },
      resume: { type: "boolean" },
      "max-memory": { type: "string" },
    },
  },
  generate: {
    usage: "generate --model DIR [--adapter FILE] --prompt TEXT [--max-new-tokens N] " +
      "[--temperature T] [--top-k K] [--top-p P] [--seed S]",
    help: `Continues a prompt with a Hugging Face GPT-2 folder, optionally with an adapter file.

  deno run -A main.ts generate --model fixtures/tiny-gpt2-pretrained --prompt "The old town"
  deno run -A main.ts generate --model fixtures/tiny-gpt2-pretrained \\
    --adapter out/default/adapter.safetensors --prompt "name[The Mill], food[Italian]"`,
    options: {
      model: { type: "string" },
      adapter: { type: "string" },
      prompt: { type: "string" },
      "max-new-tokens": { type: "string" },
      temperature: { type: "string" },
      "top-k": { type: "string" },
      "top-p": { type: "string" },
      seed: { type: "string" },
    },
  },
  classify: {
    usage: "classify --model DIR [--adapter FILE] [--top N] IMAGE...",
    help: `Prints the most probable classes of each image (PNG or JPEG) with their probabilities,
by an image classifier folder (a ViT), optionally with an adapter file and the head it carries.
Images are resized, cropped and normalised as the folder's preprocessor_config.json (or timm's
pretrained_cfg) says. --top: classes an image (default 5, fewer when there are fewer).

  deno run -A main.ts classify --model fixtures/tiny-vit photo.png
  deno run -A main.ts classify --model fixtures/tiny-vit \\
    --adapter out/vit-fewshot/adapter.safetensors a.png b.jpg`,
    options: {
      model: { type: "string" },
      adapter: { type: "string" },
      top: { type: "string" },
    },
  },
  inspect: {
    usage: "inspect FILE|DIR",
    help: `Lists the tensors (dtype, shape, bytes) and metadata of a safetensors or adapter file;
for a model folder, its family, weights by dtype and the sites adapters can target.

  deno run --allow-read main.ts inspect out/default/adapter.safetensors
  deno run --allow-read main.ts inspect fixtures/tiny-gpt2`,
    options: {},
  },
  merge: {
    usage: "merge --model DIR --adapter FILE --out DIR",
    help: `Writes a Hugging Face folder with the adapter merged into the base weights (in the
base's own layout and dtype).

  deno run -A main.ts merge --model fixtures/tiny-gpt2-pretrained \\
    --adapter out/default/adapter.safetensors --out out/merged`,
    options: { model: { type: "string" }, adapter: { type: "string" }, out: { type: "string" } },
  },
  "export-peft": {
    usage: "export-peft --model DIR --adapter FILE --out DIR [--base-model-name NAME]",
    help:
      `Writes the adapter as a PEFT LoRA folder (adapter_config.json, adapter_model.safetensors).

  deno run -A main.ts export-peft --model fixtures/tiny-gpt2-pretrained \\
    --adapter out/default/adapter.safetensors --out out/peft`,
    options: {
      model: { type: "string" },
      adapter: { type: "string" },
      out: { type: "string" },
      "base-model-name": { type: "string" },
    },
  },
  bench: {
    usage: "bench [SUITE]... [--filter TEXT]",
    help: `Runs the benchmarks (matmul, qmatmul, memory, basis, gpt2, llama, vit, adapters,
decode, train; default all): a table each on stdout and JSON under out/bench/. --filter keeps
matching matmul rows, qmatmul shapes, llama and vit models, and memory models and shapes (memory --filter gpt2
skips its 7B training step, which takes most of an hour on a CPU rasterizer; decode --filter
greedy skips beam search).

  deno task bench
  deno task bench matmul --filter square
  deno task bench memory --filter llama-2-7b`,
    options: { filter: { type: "string" } },
  },
  check: {
    usage: "check",
    help: `Checks the GPU: prints the adapter, compares matmul with a float64 reference and the
fixture GPT-2 with its PyTorch dump, and times a matmul.`,
    options: {},
  },
  adapter: {
    usage: "adapter",
    help: "Prints the WebGPU adapter, its features and the limits nola-gpu relies on.",
    options: {},
  },
} as const;

type Command = keyof typeof COMMANDS;

const USAGE = `usage: nola-gpu <${Object.keys(COMMANDS).join("|")}> [options]  (--help for more)`;

/** A mistake in the command line: exit 2 with the usage line. */
class UsageError extends Error {
  constructor(message: string, readonly command?: Command) {
    super(message);
  }
}

function helpText(): string {
  return [
    "nola-gpu: fine-tune transformers with NOLA adapters on WebGPU",
    "",
    ...Object.values(COMMANDS).flatMap((c) => [`  ${c.usage}`]),
    "",
    "`nola-gpu COMMAND --help` shows a command's help with examples.",
  ].join("\n");
}

function number(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new UsageError(`--${flag} must be a number, got "${value}"`);
  return n;
}

function required<T>(value: T | undefined, flag: string, command: Command): T {
  if (value === undefined) throw new UsageError(`${command} needs --${flag}`, command);
  return value;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    console.log(helpText());
    return name === undefined ? 2 : 0;
  }
  if (!(name in COMMANDS)) throw new UsageError(`unknown command "${name}"`);
  const command = name as Command;
  const spec = COMMANDS[command];
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: { ...spec.options, help: { type: "boolean", short: "h" } },
    });
  } catch (e) {
    throw new UsageError((e as Error).message, command);
  }
  const values = parsed.values as Record<string, string | string[] | boolean | undefined>;
  const positionals = parsed.positionals;
  if (values.help) {
    console.log(`usage: nola-gpu ${spec.usage}\n\n${spec.help}`);
    return 0;
  }
  const str = (key: string) => values[key] as string | undefined;
  switch (command) {
    case "finetune": {
      if (positionals.length > 1) throw new UsageError("finetune takes one PIPELINE", command);
      const path = positionals[0] ?? await defaultPipeline();
      const maxMemory = str("max-memory");
      const { parseByteSize } = await import("./models/memory_estimate.ts");
      let budget: number | undefined;
      try {
        budget = maxMemory === undefined ? undefined : parseByteSize(maxMemory);
      } catch (e) {
        throw new UsageError(`--max-memory: ${(e as Error).message}`, command);
      }
      const { runPipeline } = await import("./pipelines/run.ts");
      const result = await runPipeline(path, {
        maxMemory: budget,
        overrides: (values.set as string[] | undefined) ?? [],
        resume: values.resume === true,
        command: `deno task finetune ${path}`,
      });
      return result.interrupted ? 130 : 0;
    }
    case "generate": {
      const { generateCommand } = await import("./pipelines/commands.ts");
      await generateCommand({
        model: required(str("model"), "model", command),
        adapter: str("adapter"),
        prompt: required(str("prompt"), "prompt", command),
        maxNewTokens: number(str("max-new-tokens"), "max-new-tokens"),
        temperature: number(str("temperature"), "temperature"),
        topK: number(str("top-k"), "top-k"),
        topP: number(str("top-p"), "top-p"),
        seed: number(str("seed"), "seed"),
      });
      return 0;
    }
    case "classify": {
      if (positionals.length === 0) throw new UsageError("classify needs an IMAGE", command);
      const top = number(str("top"), "top");
      if (top !== undefined && !(Number.isSafeInteger(top) && top >= 1)) {
        throw new UsageError(`--top must be a positive integer, got "${str("top")}"`, command);
      }
      const { classifyCommand } = await import("./pipelines/commands.ts");
      await classifyCommand({
        model: required(str("model"), "model", command),
        adapter: str("adapter"),
        images: positionals,
        top,
      });
      return 0;
    }
    case "inspect": {
      if (positionals.length !== 1) {
        throw new UsageError("inspect takes one FILE or model folder", command);
      }
      const path = positionals[0];
      if ((await Deno.stat(path)).isDirectory) {
        const { inspectModelFolder } = await import("./pipelines/inspect_model.ts");
        console.log(await inspectModelFolder(path));
      } else {
        const { inspectFile } = await import("./formats/inspect.ts");
        console.log(await inspectFile(path));
      }
      return 0;
    }
    case "merge":
    case "export-peft": {
      const { exportCommand } = await import("./pipelines/commands.ts");
      await exportCommand(command, {
        model: required(str("model"), "model", command),
        adapter: required(str("adapter"), "adapter", command),
        out: required(str("out"), "out", command),
        baseModelName: str("base-model-name"),
      });
      return 0;
    }
    case "bench": {
      const { runBench } = await import("./bench/main.ts");
      await runBench({ suites: positionals, filter: str("filter") });
      return 0;
    }
    case "check": {
      const { runGpuCheck } = await import("./pipelines/gpu_check.ts");
      await runGpuCheck();
      return 0;
    }
    case "adapter": {
      const { Gpu } = await import("./kernels/gpu.ts");
      using gpu = await Gpu.acquire();
      console.log(gpu.describe());
      return 0;
    }
  }
}

if (import.meta.main) {
  try {
    Deno.exitCode = await main(Deno.args);
  } catch (error) {
    if (error instanceof UsageError) {
      const usage = error.command ? `usage: nola-gpu ${COMMANDS[error.command].usage}` : USAGE;
      console.error(`error: ${error.message}\n${usage}`);
      Deno.exit(2);
    }
    const line = failureLine(error, { command: Deno.args[0] });
    if (line !== undefined) {
      console.error(`error: ${line}`);
      Deno.exit(1);
    }
    throw error;
  }
}
