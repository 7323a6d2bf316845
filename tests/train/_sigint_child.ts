/** Child process of the SIGINT test: trains until interrupted, then prints the resume line. */

import { RunLog } from "../../train/run_log.ts";
import { Interrupt, resumeHint } from "../../train/interrupt.ts";
import { train } from "../../train/trainer.ts";
import { testGpu } from "../_util.ts";
import { nolaSetup } from "./_train_fixture.ts";

const dir = Deno.args[0];
using s = await nolaSetup(await testGpu(), { steps: 100_000 });
using log = await RunLog.open(dir);
using interrupt = new Interrupt();
const result = await train({
  ...s.base,
  batches: s.batches(),
  log,
  logEvery: 1,
  checkpointEvery: 0,
  signal: interrupt.signal,
  onLog: (records) => console.log(`step ${records.at(-1)!.step}`),
});
if (result.stoppedBy === "interrupted") {
  console.log(resumeHint({ step: result.steps, checkpoint: result.checkpoint, command: "train" }));
  Deno.exit(130);
}
