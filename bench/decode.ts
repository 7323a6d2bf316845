/**
 * Decoding speed on the default job's task: the meaning representations of
 * `fixtures/data-to-text/test.csv` continued by the fixture GPT-2, greedy and by beam search
 * with the paper's settings (beam 10, length penalty 0.8, no-repeat n-gram 4), one prompt at a
 * time (`generateTokens`, `beamSearchHypothesis`) against many prompts a forward
 * (`generateBatch`, `beamSearchBatch`). Both paths run on the same prompts side by side and
 * must give the same tokens; the batched path also runs on every prompt.
 *
 * @module
 */

import { beamSearchBatch, beamSearchHypothesis } from "../eval/beam.ts";
import { groupReferences, parseE2e } from "../data/readers.ts";
import type { Gpu } from "../kernels/gpu.ts";
import { generateBatch, generateTokens } from "../models/generate.ts";
import { loadModel } from "../models/registry.ts";
import { Tokenizer } from "../models/tokenizer.ts";

/** One timed run. */
export interface DecodeBenchRow {
  /** `greedy` or `beam`. */
  decoding: "greedy" | "beam";
  /** `one at a time` or `batched (maxRows N)`. */
  path: string;
  /** Prompts decoded. */
  prompts: number;
  /** Wall seconds. */
  seconds: number;
  /** Seconds a prompt. */
  secondsPerPrompt: number;
  /** For a batched run on the one-at-a-time prompts: whether every token matched. */
  sameTokens?: boolean;
}

/** Options of {@link benchDecode}. */
export interface DecodeBenchOptions {
  /** Model folder; default the English fixture when its weights exist, else the pretrained one. */
  model?: string;
  /** Prompts decoded one at a time as well (the slow path); default 8. */
  compared?: number;
  /** Row limits of the batched runs over every prompt; default [128]. */
  maxRows?: number[];
  /** New tokens a prompt; default 40, as the default job. */
  maxNewTokens?: number;
  /** Skip beam search (greedy only). */
  greedyOnly?: boolean;
}

/** The default job's decoding model: the English fixture when its weights exist. */
export async function decodeBenchModel(): Promise<string> {
  try {
    await Deno.stat("fixtures/tiny-gpt2-english/model.safetensors");
    return "fixtures/tiny-gpt2-english";
  } catch {
    return "fixtures/tiny-gpt2-pretrained";
  }
}

/**
 * Times both paths (see the module doc).
 *
 * @param gpu The device.
 * @param options Model, prompts compared, row limits, new tokens.
 * @returns One row per run.
 */
export async function benchDecode(
  gpu: Gpu,
  options: DecodeBenchOptions = {},
): Promise<DecodeBenchRow[]> {
  const folder = options.model ?? await decodeBenchModel();
  using model = await loadModel(gpu, folder);
  const tokenizer = await Tokenizer.load(folder);
  const file = "fixtures/data-to-text/test.csv";
  const groups = groupReferences(parseE2e(await Deno.readTextFile(file), { file }));
  // The default job's prompt template: "{{ mr }}\n".
  const prompts = groups.map((g) => tokenizer.encodePrompt(`${g.mr}\n`));
  const compared = prompts.slice(0, options.compared ?? 8);
  const maxNewTokens = options.maxNewTokens ?? 40;
  const eosIds = [...tokenizer.eosIds];
  const greedy = { maxNewTokens, stopTokens: eosIds };
  const beam = { beams: 10, lengthPenalty: 0.8, noRepeatNgram: 4, maxNewTokens, eosIds };
  const rows: DecodeBenchRow[] = [];
  const timed = async <T>(
    row: Omit<DecodeBenchRow, "seconds" | "secondsPerPrompt">,
    run: () => Promise<T>,
  ): Promise<T> => {
    await gpu.sync();
    const start = performance.now();
    const out = await run();
    const seconds = (performance.now() - start) / 1000;
    rows.push({ ...row, seconds, secondsPerPrompt: seconds / row.prompts });
    return out;
  };
  // Compiles the kernels and allocates the arenas of both paths before anything is timed.
  await generateTokens(model, prompts[0], { maxNewTokens: 2 });
  await generateBatch(model, prompts.slice(0, 2), { maxNewTokens: 2 });
  const n = compared.length;
  const one = await timed({ decoding: "greedy", path: "one at a time", prompts: n }, async () => {
    const out: number[][] = [];
    for (const p of compared) out.push(await generateTokens(model, p, greedy));
    return out;
  });
  const batchedSame = await timed(
    { decoding: "greedy", path: "batched", prompts: n },
    () => generateBatch(model, compared, greedy),
  );
  rows.at(-1)!.sameTokens = same(one, batchedSame);
  for (const maxRows of options.maxRows ?? [128]) {
    await timed(
      { decoding: "greedy", path: `batched (maxRows ${maxRows})`, prompts: prompts.length },
      () => generateBatch(model, prompts, { ...greedy, maxRows }),
    );
  }
  if (options.greedyOnly) return rows;
  const oneBeam = await timed({ decoding: "beam", path: "one at a time", prompts: n }, async () => {
    const out: number[][] = [];
    for (const p of compared) out.push((await beamSearchHypothesis(model, p, beam))?.tokens ?? []);
    return out;
  });
  const batchedBeam = await timed(
    { decoding: "beam", path: "batched", prompts: n },
    () => beamSearchBatch(model, compared, beam),
  );
  rows.at(-1)!.sameTokens = same(oneBeam, batchedBeam.map((h) => h?.tokens ?? []));
  for (const maxRows of options.maxRows ?? [128]) {
    await timed(
      { decoding: "beam", path: `batched (maxRows ${maxRows})`, prompts: prompts.length },
      () => beamSearchBatch(model, prompts, { ...beam, maxRows }),
    );
  }
  return rows;
}

function same(a: number[][], b: number[][]): boolean {
  return a.length === b.length && a.every((ids, i) => ids.join(",") === b[i].join(","));
}
