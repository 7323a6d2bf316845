/**
 * Every CLI command given the wrong paths a user types (missing, a folder for a file and the
 * reverse, an output that is, lies inside or contains an input, an unreadable file, a missing
 * permission), run as a user runs it: each exits 1 with one stderr line naming the path and no
 * stack, no input file changes (sha-256 of every file before and after), and files a user keeps in
 * an output folder survive the commands that do write there.
 */

import assert from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";
import { saveAdapter } from "../adapters/adapter_file.ts";
import { AdapterSet } from "../adapters/attach.ts";
import { loadModel } from "../models/registry.ts";
import { GPU_TEST, tempDir, testGpu } from "./_util.ts";

const ENV = "--allow-env=XDG_RUNTIME_DIR,NOLA_TEST_SEED,LOG_TOKENS,LOG_STREAM";
const PERMISSIONS = ["--allow-read=.", "--allow-write=out", ENV];
const FIXTURE = "fixtures/tiny-gpt2";
const MODEL_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"];

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(args: readonly string[], permissions = PERMISSIONS): Promise<Run> {
  const out = await new Deno.Command("deno", {
    args: ["run", ...permissions, "main.ts", ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** sha-256 of every file under `dir`, by path relative to it. */
async function hashTree(dir: string): Promise<Map<string, string>> {
  const hashes = new Map<string, string>();
  const walk = async (folder: string) => {
    for await (const entry of Deno.readDir(folder)) {
      const path = join(folder, entry.name);
      if (entry.isDirectory) await walk(path);
      else {
        const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
        hashes.set(relative(dir, path), Array.from(new Uint8Array(digest), hex).join(""));
      }
    }
  };
  await walk(dir);
  return hashes;
}

function hex(b: number): string {
  return b.toString(16).padStart(2, "0");
}

/** A wrong input: the command line, the path its one line must name, the permissions. */
interface Case {
  label: string;
  args: string[];
  names: string;
  permissions?: string[];
  /** What the line must also say. */
  says?: RegExp;
}

/** The line each case printed, for the test's output. */
const printed: string[] = [];

function assertOneLine(c: Case, run: Run): void {
  const where = `${c.label}: ${c.args.join(" ")}\nstderr: ${run.stderr}`;
  assert.equal(run.code, 1, where);
  const lines = run.stderr.split("\n").filter((line) => line.trim() !== "");
  assert.equal(lines.length, 1, where);
  assert.match(lines[0], /^error: /, where);
  assert.ok(lines[0].includes(c.names), `does not name "${c.names}": ${where}`);
  if (c.says) assert.match(lines[0], c.says, where);
  assert.doesNotMatch(run.stderr, /Uncaught|^\s+at /m, where);
  printed.push(`${c.args[0]} / ${c.label}: ${lines[0]}`);
}

/** Runs the cases a few at a time (each is a process start, mostly waiting on module loading). */
async function runCases(cases: readonly Case[]): Promise<void> {
  const queue = [...cases];
  const worker = async () => {
    for (let c = queue.shift(); c; c = queue.shift()) {
      assertOneLine(c, await cli(c.args, c.permissions));
    }
  };
  await Promise.all([worker(), worker(), worker()]);
}

interface PipelineOptions {
  out: string;
  model: string;
  data: string;
  /** Stages after attach, as YAML. */
  extra?: string;
}

/** A pipeline on the copied model and task. */
function pipelineYaml(o: PipelineOptions): string {
  return `version: 1
name: cli-errors
out: ${o.out}
stages:
  - kind: load
    model: ${o.model}
  - kind: data
    file: ${o.data}
    split: { train: 0.75, validation: 0.125, test: 0.125 }
    prompt: "{{ q }}:"
    completion: " {{ a }}"
    seq_len: 32
  - kind: attach
    r: 2
    k: 16
${o.extra ?? ""}`;
}

/** Whether this process can read a file with mode 000 (it runs as root). */
async function readsLockedFiles(dir: string): Promise<boolean> {
  const probe = join(dir, "probe");
  await Deno.writeTextFile(probe, "x");
  await Deno.chmod(probe, 0o000);
  try {
    await Deno.readFile(probe);
    return true;
  } catch (e) {
    if (!(e instanceof Deno.errors.PermissionDenied)) throw e;
    return false;
  } finally {
    await Deno.remove(probe);
  }
}

/** Where the test keeps what the commands read and what a user already has in output folders. */
interface Layout {
  dir: string;
  /** Everything the commands read: hashed before and after. */
  input: string;
  model: string;
  adapter: string;
  data: string;
  notModel: string;
  pipes: string;
  missing: string;
  /** Folders and files a user keeps where outputs go. */
  keep: string;
  /** The base model and notes (the issue's case). */
  existing: string;
  aFile: string;
  sharded: string;
  /** A run folder whose `merged/` and `peft/` hold notes. */
  run: string;
}

async function setUp(dir: string): Promise<Layout> {
  const input = join(dir, "in");
  const keep = join(dir, "keep");
  // Adapter and data each in their own folder, so an output around one contains nothing else.
  const l: Layout = {
    dir,
    input,
    model: join(input, "model"),
    adapter: join(input, "adapters", "adapter.safetensors"),
    data: join(input, "data", "task.jsonl"),
    notModel: join(input, "notes-folder"),
    pipes: join(input, "pipes"),
    missing: join(input, "missing"),
    keep,
    existing: join(keep, "existing"),
    aFile: join(keep, "file.txt"),
    sharded: join(keep, "sharded"),
    run: join(keep, "run"),
  };
  for (const f of [l.model, dirname(l.adapter), dirname(l.data), l.notModel, l.pipes]) {
    await Deno.mkdir(f, { recursive: true });
  }
  for (const f of MODEL_FILES) await Deno.copyFile(join(FIXTURE, f), join(l.model, f));
  {
    using model = await loadModel(await testGpu(), l.model);
    using set = await AdapterSet.attach(model, {
      method: "nola",
      targets: ["h.*.attn.c_attn.q", "h.*.attn.c_attn.v"],
      r: 2,
      k: 16,
      loraAlpha: 2,
      seed: 0,
    }, { maxRows: 8 });
    await saveAdapter(set, l.adapter, { baseModel: "tiny-gpt2" });
  }
  const rows = Array.from({ length: 24 }, (_, i) => JSON.stringify({ q: `n ${i}`, a: `${i}` }));
  await Deno.writeTextFile(l.data, rows.join("\n") + "\n");
  await Deno.writeTextFile(join(l.notModel, "notes.md"), "not a model\n");
  await Deno.mkdir(join(input, "odd", "model.safetensors"), { recursive: true });
  await Deno.copyFile(join(l.model, "config.json"), join(input, "odd", "config.json"));

  await Deno.mkdir(l.existing, { recursive: true });
  for (const f of MODEL_FILES) await Deno.copyFile(join(l.model, f), join(l.existing, f));
  await Deno.writeTextFile(join(l.existing, "notes.txt"), "my notes\n");
  await Deno.writeTextFile(l.aFile, "a file, not a folder\n");
  await Deno.mkdir(l.sharded);
  await Deno.writeTextFile(join(l.sharded, "model.safetensors.index.json"), '{"weight_map":{}}\n');
  for (const sub of ["", "merged", "peft"]) {
    await Deno.mkdir(join(l.run, sub), { recursive: true });
    await Deno.writeTextFile(join(l.run, sub, "notes.txt"), `notes of ${sub || "the run"}\n`);
  }
  return l;
}

/** Writes pipeline `name` on the copied model and task into `pipes/`. */
async function pipeline(l: Layout, name: string, o: Partial<PipelineOptions> = {}) {
  const path = join(l.pipes, `${name}.yaml`);
  const yaml = pipelineYaml({ out: join(l.dir, "runs", name), model: l.model, data: l.data, ...o });
  await Deno.writeTextFile(path, yaml);
  return path;
}

/** Every command with every wrong input, by command; `skipped` says what could not be tried. */
async function wrongInputs(
  l: Layout,
): Promise<{ cases: Record<string, Case[]>; skipped: string[] }> {
  const { model, adapter, data, notModel, missing } = l;
  const out = join(l.dir, "o");
  const cases: Record<string, Case[]> = {};
  for (const command of ["merge", "export-peft"]) {
    const write = (label: string, o: { model?: string; adapter?: string; out: string }) => ({
      label,
      args: [
        command,
        "--model",
        o.model ?? model,
        "--adapter",
        o.adapter ?? adapter,
        "--out",
        o.out,
      ],
      names: o.model ?? o.adapter ?? o.out,
    });
    cases[command] = [
      write("missing model", { model: missing, out }),
      write("file for the model folder", { model: adapter, out }),
      write("folder for the adapter file", { adapter: notModel, out }),
      write("missing adapter", { adapter: `${missing}.safetensors`, out }),
      write("out is the model folder", { out: model }),
      write("out inside the model folder", { out: join(model, "sub") }),
      write("out contains the model folder", { out: l.input }),
      write("out is the adapter file", { out: adapter }),
      write("out inside the adapter file", { out: join(adapter, "sub") }),
      {
        ...write("out contains the adapter file (relative)", {
          out: relative(".", dirname(adapter)),
        }),
        says: /it contains the adapter file/,
      },
      write("file for the out folder", { out: l.aFile }),
    ];
  }
  cases.merge.push({
    label: "out holds a sharded index",
    args: ["merge", "--model", model, "--adapter", adapter, "--out", l.sharded],
    names: l.sharded,
  });
  const generate = (label: string, names: string, ...args: string[]) => ({
    label,
    args: ["generate", "--prompt", "n 1:", ...args],
    names,
  });
  cases.generate = [
    generate("missing model", missing, "--model", missing),
    generate("file for the model folder", data, "--model", data),
    generate("folder for the adapter file", notModel, "--model", model, "--adapter", notModel),
    generate("missing adapter", missing, "--model", model, "--adapter", missing),
    generate("folder without a model", notModel, "--model", notModel),
  ];
  cases.inspect = [
    { label: "missing path", args: ["inspect", missing], names: missing },
    { label: "folder without a model", args: ["inspect", notModel], names: notModel },
    {
      label: "folder for the weights file",
      args: ["inspect", join(l.input, "odd")],
      names: join(l.input, "odd", "model.safetensors"),
    },
    {
      label: "no read permission",
      args: ["inspect", model],
      names: `--allow-read=${model}`,
      permissions: ["--allow-read=fixtures"],
    },
  ];
  const finetune = async (label: string, o: Partial<PipelineOptions>, names: string) => ({
    label,
    args: ["finetune", await pipeline(l, label.replace(/\W+/g, "-"), o)],
    names,
  });
  const stage = (kind: string, key: string, value: string) => ({
    extra: `  - kind: ${kind}\n    ${key}: ${value}\n`,
  });
  const missingYaml = join(l.pipes, "missing.yaml");
  cases.finetune = [
    { label: "missing pipeline", args: ["finetune", missingYaml], names: missingYaml },
    { label: "folder for the pipeline file", args: ["finetune", l.pipes], names: l.pipes },
    await finetune("missing model", { model: missing }, missing),
    await finetune("file for the model folder", { model: data }, data),
    await finetune("folder for the data file", { data: notModel }, notModel),
    await finetune("out is the model folder", { out: model }, model),
    await finetune("out inside the model folder", { out: join(model, "run") }, join(model, "run")),
    await finetune("out contains the inputs", { out: l.input }, l.input),
    await finetune("file for the out folder", { out: l.aFile }, l.aFile),
    await finetune("save.path is the data file", stage("save", "path", data), data),
    await finetune("folder for save.path", stage("save", "path", l.existing), l.existing),
    await finetune("merge.out is the model folder", stage("merge", "out", model), model),
    await finetune("merge.out holds a sharded index", stage("merge", "out", l.sharded), l.sharded),
    await finetune(
      "export_peft.out inside the model folder",
      stage("export_peft", "out", join(model, "peft")),
      join(model, "peft"),
    ),
    {
      ...await finetune(
        "export_peft.out contains the data file",
        stage("export_peft", "out", dirname(data)),
        dirname(data),
      ),
      says: /it contains the data file/,
    },
    {
      ...await finetune("no environment permission", {}, "--allow-env=LOG_TOKENS"),
      permissions: ["--allow-read=.", "--allow-write=out"],
    },
  ];

  if (await readsLockedFiles(l.dir)) {
    return {
      cases,
      skipped: ["unreadable files (chmod 000): this process runs as root and reads them anyway"],
    };
  }
  const locked = join(l.dir, "locked");
  await Deno.mkdir(locked);
  const lockedAdapter = join(locked, "adapter.safetensors");
  const lockedData = join(locked, "task.jsonl");
  await Deno.copyFile(adapter, lockedAdapter);
  await Deno.copyFile(data, lockedData);
  await Deno.chmod(lockedAdapter, 0o000);
  await Deno.chmod(lockedData, 0o000);
  cases.inspect.push({
    label: "unreadable file",
    args: ["inspect", lockedAdapter],
    names: lockedAdapter,
  });
  cases.generate.push(
    generate("unreadable adapter", lockedAdapter, "--model", model, "--adapter", lockedAdapter),
  );
  cases.merge.push({
    label: "unreadable adapter",
    args: ["merge", "--model", model, "--adapter", lockedAdapter, "--out", out],
    names: lockedAdapter,
  });
  cases.finetune.push(await finetune("unreadable data file", { data: lockedData }, lockedData));
  return { cases, skipped: [] };
}

/** The modes a folder and a file get when created without one: what outputs must get too. */
async function defaultModes(dir: string): Promise<{ folder: number; file: number }> {
  const probe = join(dir, "probe");
  await Deno.mkdir(probe);
  await Deno.writeTextFile(join(probe, "f"), "");
  const folder = (await Deno.stat(probe)).mode! & 0o777;
  const file = (await Deno.stat(join(probe, "f"))).mode! & 0o777;
  await Deno.remove(probe, { recursive: true });
  return { folder, file };
}

Deno.test("every CLI command fails on wrong paths with one line and changes no file", {
  ...GPU_TEST,
}, async (t) => {
  // Absolute: pipeline files resolve relative inputs against their own folder.
  const dir = resolve(await tempDir("cli-errors"));
  try {
    const l = await setUp(dir);
    const { cases, skipped } = await wrongInputs(l);
    const writes = await pipeline(l, "writes", {
      out: l.run,
      extra: "  - kind: save\n  - kind: merge\n  - kind: export_peft\n",
    });
    const inputsBefore = await hashTree(l.input);
    const keptBefore = await hashTree(l.keep);
    for (const [command, list] of Object.entries(cases)) {
      await t.step(`${command}: ${list.map((c) => c.label).join(", ")}`, async () => {
        await runCases(list);
        assert.deepEqual(await hashTree(l.input), inputsBefore, "an input changed");
        assert.deepEqual(await hashTree(l.keep), keptBefore, "a kept file changed");
      });
    }
    await assert.rejects(Deno.stat(join(dir, "o")), Deno.errors.NotFound);

    const modes = await defaultModes(dir);
    const assertModes = async (folder: string, files: string[]) => {
      assert.equal((await Deno.stat(folder)).mode! & 0o777, modes.folder, folder);
      for (const f of files) {
        assert.equal((await Deno.stat(join(folder, f))).mode! & 0o777, modes.file, f);
      }
    };
    let lost = 0;
    // Files the command owns (model.safetensors, config.json) may change; nothing may go.
    const survivors = async (what: string) => {
      const after = await hashTree(l.keep);
      for (const [path, hash] of keptBefore) {
        if (!after.has(path)) lost++;
        else if (/notes|file\.txt|index\.json/.test(path)) {
          assert.equal(after.get(path), hash, `${what} changed ${path}`);
        }
      }
      assert.equal(lost, 0, `${what} lost files`);
      assert.deepEqual(await hashTree(l.input), inputsBefore, `${what} changed an input`);
    };
    const succeed = async (args: string[]) => {
      const result = await cli(args);
      assert.equal(result.code, 0, result.stderr);
      await survivors(args[0]);
    };

    await t.step(
      "merge into a folder holding the base model and notes keeps the notes",
      async () => {
        await succeed(["merge", "--model", l.model, "--adapter", l.adapter, "--out", l.existing]);
        assert.deepEqual(
          [...Deno.readDirSync(l.existing)].map((e) => e.name).sort(),
          [...MODEL_FILES, "notes.txt"].sort(),
        );
        await assertModes(l.existing, ["model.safetensors", "config.json"]);
      },
    );

    await t.step(
      "export-peft into a new nested folder creates it with the umask's modes",
      async () => {
        const out = join(dir, "fresh", "peft");
        await succeed(["export-peft", "--model", l.model, "--adapter", l.adapter, "--out", out]);
        await assertModes(join(dir, "fresh"), []);
        await assertModes(out, ["adapter_config.json", "adapter_model.safetensors"]);
      },
    );

    await t.step("a pipeline writing into existing folders keeps what else they hold", async () => {
      await succeed(["finetune", writes]);
      for (const f of ["merged/model.safetensors", "peft/adapter_config.json"]) {
        await Deno.stat(join(l.run, f));
      }
      await assertModes(l.run, ["adapter.safetensors", "summary.json", "report.md"]);
    });

    console.log(printed.join("\n"));
    const tried = Object.values(cases).reduce((n, list) => n + list.length, 0);
    console.log(
      `CLI wrong inputs: ${tried} cases over ${Object.keys(cases).length} commands ` +
        `(${Object.entries(cases).map(([c, list]) => `${c} ${list.length}`).join(", ")}); ` +
        `3 writing runs into existing folders; files lost: ${lost}` +
        (skipped.length ? `; skipped: ${skipped.join("; ")}` : ""),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
