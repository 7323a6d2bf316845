/**
 * The experiments, by name: `deno task experiment [NAME] [options]`, with `nola-vs-lora` when no
 * name is given. Usage mistakes exit 2 and failures a user can cause exit 1, each with one line.
 *
 *     deno task experiment                        # nola-vs-lora, the full run
 *     deno task experiment nola-vs-lora --quick   # a smoke run in a few minutes
 *     deno task experiment nola-vs-lora --help
 *     deno task experiment vit-fewshot --quick    # the ViT few-shot table, a smoke run
 *
 * @module
 */

import { failureLine } from "../pipelines/failure.ts";
import { ExperimentUsageError } from "./nola_vs_lora_options.ts";

/** Every experiment: its name, what it shows, and how it runs. */
export const EXPERIMENTS: Record<
  string,
  { about: string; run: (args: string[]) => Promise<{ interrupted: boolean }> }
> = {
  "nola-vs-lora": {
    about: "LoRA r=1..8 against NOLA at several k, tuned rates, 3 seeds, 4-bit PTQ and QAT",
    run: async (args) => (await import("./nola_vs_lora.ts")).main(args),
  },
  "vit-fewshot": {
    about: "5- and 10-shot ViT: head, full fine-tuning, LoRA r=1/4 on q/v, NOLA-MLP, 12 runs each",
    run: async (args) => (await import("./vit_fewshot.ts")).main(args),
  },
};

/** The experiment named first in `args` (default `nola-vs-lora`) and the arguments for it. */
export function chooseExperiment(args: readonly string[]): { name: string; rest: string[] } {
  const [first, ...rest] = args;
  if (first === undefined || first.startsWith("-")) {
    return { name: "nola-vs-lora", rest: [...args] };
  }
  if (!(first in EXPERIMENTS)) {
    throw new ExperimentUsageError(
      `Unknown experiment "${first}": choose one of ${Object.keys(EXPERIMENTS).join(", ")}`,
    );
  }
  return { name: first, rest };
}

if (import.meta.main) {
  try {
    const { name, rest } = chooseExperiment(Deno.args);
    const outcome = await EXPERIMENTS[name].run(rest);
    // Ctrl-C: the same exit status as a shell gives an interrupted command.
    if (outcome.interrupted) Deno.exitCode = 130;
  } catch (error) {
    if (error instanceof ExperimentUsageError) {
      console.error(`error: ${error.message}`);
      Deno.exit(2);
    }
    const line = failureLine(error, { command: "experiment" });
    if (line !== undefined) {
      console.error(`error: ${line}`);
      Deno.exit(1);
    }
    throw error;
  }
}
