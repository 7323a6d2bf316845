/** Child process of the Ctrl-C test: waits for SIGINT, says whether a stop was requested, waits again. */

import { StopRequest } from "../../experiments/run_store.ts";

using stop = new StopRequest((line) => console.log(line.trim()));
console.log("ready");
while (!stop.requested) await new Promise((done) => setTimeout(done, 20));
console.log("stop requested");
// The second SIGINT quits at once (exit 130); this wait only ends if it never comes.
await new Promise((done) => setTimeout(done, 30_000));
