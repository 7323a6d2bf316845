/**
 * A training progress bar on stderr: `step/total`, a bar, loss, learning rate, throughput, elapsed
 * time and ETA. On a terminal it redraws one line in place at most ~10 times a second; elsewhere
 * (CI logs, `2> file`) it prints plain lines every few steps or every ~10 s, never a carriage
 * return, so logs stay readable.
 *
 * @module
 */

/** Where the progress text goes, and what time it is: injectable so tests need no terminal. */
export interface ProgressOptions {
  /** The last step: the bar is full when `update` is called with this step. */
  total: number;
  /** Unit of throughput, shown as `<unit>/s` (`"tok"`, `"img"`); default `"tok"`. */
  unit?: string;
  /** A short name in front of every line (`"train"`); default none. */
  label?: string;
  /** Step the run starts from (resume): ETA and throughput count from here; default 0. */
  startStep?: number;
  /** Receives every piece of text; default writes synchronously to stderr. */
  write?: (text: string) => void;
  /** Milliseconds of a monotonic clock; default `performance.now`. */
  now?: () => number;
  /** Redraw in place; default `Deno.stderr.isTerminal()`. */
  terminal?: boolean;
  /** Line width in terminal mode; default `Deno.consoleSize().columns`, else 100. */
  columns?: number;
  /** Terminal mode: least time between two redraws; default 100 ms. */
  redrawMs?: number;
  /** Plain mode: print a line once this many steps have passed; default total / 20. */
  everySteps?: number;
  /** Plain mode: print a line once this much time has passed; default 10 000 ms. */
  everyMs?: number;
}

/** The figures of one step; any left out keep their last value. */
export interface StepFigures {
  /** Loss of this step (or the last one read back). */
  loss?: number;
  /** Learning rate of this step. */
  lr?: number;
  /** Units (tokens, images) processed since the previous `update`, for the throughput. */
  items?: number;
}

interface Sample {
  t: number;
  step: number;
  items: number;
}

// Throughput and ETA come from the recent past, so the slow first steps (pipeline compilation,
// warm-up) stop weighing on the estimate once the run is going.
const WINDOW_MS = 30_000;
const WINDOW_SAMPLES = 64;
const CLEAR_LINE = "\r\x1b[2K";

/**
 * A progress display for one loop of `total` steps.
 *
 * @example Training loop
 * ```ts
 * import { Progress } from "./progress.ts";
 * const progress = new Progress({ total: 100, unit: "tok", label: "train" });
 * for (let step = 1; step <= 100; step++) {
 *   progress.update(step, { loss: 3.2, lr: 1e-3, items: 8 * 1024 });
 *   if (step % 50 === 0) progress.log(`step ${step}: validation loss 3.1`);
 * }
 * progress.finish();
 * ```
 */
export class Progress {
  /** Steps of the whole run. */
  readonly total: number;
  /** Unit of the throughput, shown as `<unit>/s` (`tok`, `img`). */
  readonly unit: string;
  /** A short name in front of every line, e.g. `train`; empty for none. */
  readonly label: string;
  /** Whether a line is redrawn in place (a terminal) rather than printed now and then. */
  readonly terminal: boolean;
  #write: (text: string) => void;
  #now: () => number;
  #columns: number;
  #redrawMs: number;
  #everySteps: number;
  #everyMs: number;
  #start: number;
  #startStep: number;
  #samples: Sample[];
  #step: number;
  #items = 0;
  #loss: number | undefined;
  #lr: number | undefined;
  #drawn = false;
  #lastDraw = -Infinity;
  #lastPrintStep: number;
  #lastPrintTime: number;
  #finished = false;

  /**
   * Creates the display; nothing is written until the first update.
   *
   * @param options Total steps, unit and the injectable writer and clock.
   */
  constructor(options: ProgressOptions) {
    if (!(options.total >= 0) || !Number.isFinite(options.total)) {
      throw new RangeError(`Progress total must be a finite number >= 0, got ${options.total}`);
    }
    this.total = options.total;
    this.unit = options.unit ?? "tok";
    this.label = options.label ?? "";
    this.terminal = options.terminal ?? stderrIsTerminal();
    this.#write = options.write ?? writeStderr;
    this.#now = options.now ?? (() => performance.now());
    this.#columns = Math.max(20, options.columns ?? consoleColumns() ?? 100);
    this.#redrawMs = options.redrawMs ?? 100;
    this.#everySteps = Math.max(1, options.everySteps ?? Math.ceil(this.total / 20));
    this.#everyMs = options.everyMs ?? 10_000;
    this.#startStep = options.startStep ?? 0;
    this.#step = this.#startStep;
    this.#start = this.#now();
    this.#samples = [{ t: this.#start, step: this.#step, items: 0 }];
    this.#lastPrintStep = this.#step;
    this.#lastPrintTime = this.#start;
  }

  /**
   * Records that `step` is done and redraws if it is time to.
   *
   * @param step The step just finished (1-based: `total` means done).
   * @param figures Loss, learning rate and units processed since the last update.
   */
  update(step: number, figures: StepFigures = {}): void {
    const t = this.#now();
    this.#step = step;
    if (figures.loss !== undefined) this.#loss = figures.loss;
    if (figures.lr !== undefined) this.#lr = figures.lr;
    this.#items += figures.items ?? 0;
    this.#samples.push({ t, step, items: this.#items });
    while (
      this.#samples.length > 2 &&
      (this.#samples.length > WINDOW_SAMPLES || t - this.#samples[1].t > WINDOW_MS)
    ) this.#samples.shift();

    const last = step >= this.total;
    if (this.terminal) {
      if (last || t - this.#lastDraw >= this.#redrawMs) this.#draw(t);
    } else if (
      last ||
      step - this.#lastPrintStep >= this.#everySteps ||
      t - this.#lastPrintTime >= this.#everyMs
    ) {
      this.#printPlain(t);
    }
  }

  /**
   * Prints a message on its own line, above the bar, which is then drawn again.
   *
   * @param line The message, without a newline.
   */
  log(line: string): void {
    if (this.terminal && this.#drawn) {
      this.#write(`${CLEAR_LINE}${line}\n`);
      this.#draw(this.#now());
    } else {
      this.#write(`${line}\n`);
    }
  }

  /**
   * Prints the header of a pipeline stage (`== name ==`) above the bar.
   *
   * @param name The stage's name or id.
   */
  stage(name: string): void {
    this.log(`== ${name} ==`);
  }

  /** Draws the final state and ends the bar's line; later calls do nothing. */
  finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    const t = this.#now();
    if (this.terminal) {
      if (this.#drawn || this.#step > this.#startStep) {
        this.#write(`${CLEAR_LINE}${this.#line(t)}\n`);
      }
    } else if (this.#step !== this.#lastPrintStep) {
      this.#printPlain(t);
    }
    this.#drawn = false;
  }

  /** Same as {@linkcode Progress.finish}, for `using progress = new Progress(...)`. */
  [Symbol.dispose](): void {
    this.finish();
  }

  /** Units per second over the recent window; NaN before any time has passed. */
  get throughput(): number {
    const first = this.#samples[0];
    const last = this.#samples[this.#samples.length - 1];
    const dt = (last.t - first.t) / 1000;
    return dt > 0 ? (last.items - first.items) / dt : NaN;
  }

  /** Seconds left at the recent step rate; NaN while unknown, 0 once done. */
  get etaSeconds(): number {
    const first = this.#samples[0];
    const last = this.#samples[this.#samples.length - 1];
    return estimateEta({
      doneSteps: last.step - first.step,
      elapsedMs: last.t - first.t,
      remainingSteps: this.total - this.#step,
    });
  }

  #draw(t: number): void {
    this.#lastDraw = t;
    this.#drawn = true;
    this.#write(`${CLEAR_LINE}${this.#line(t)}`);
  }

  #printPlain(t: number): void {
    this.#lastPrintStep = this.#step;
    this.#lastPrintTime = t;
    this.#write(`${this.#line(t)}\n`);
  }

  /** The whole status line; in terminal mode a bar fills the columns left by the figures. */
  #line(t: number): string {
    const digits = String(this.total).length;
    const head = `${this.label ? `${this.label} ` : ""}step ${
      String(this.#step).padStart(digits)
    }/${this.total}`;
    const fraction = this.total > 0 ? Math.min(1, Math.max(0, this.#step / this.total)) : 1;
    const percent = `${(fraction * 100).toFixed(1).padStart(5)}%`;
    const figures = [
      `loss ${formatLoss(this.#loss)}`,
      `lr ${this.#lr === undefined ? "-" : this.#lr.toExponential(2)}`,
      `${formatSi(this.throughput)} ${this.unit}/s`,
      `elapsed ${formatDuration((t - this.#start) / 1000)}`,
      `eta ${formatDuration(this.etaSeconds)}`,
    ];
    if (!this.terminal) return `${head} ${percent} | ${figures.join(" | ")}`;
    // One column spare: writing into the last column wraps on some terminals, breaking `\r`.
    const columns = this.#columns - 1;
    const plain = () => `${head} ${percent} | ${figures.join(" | ")}`;
    const width = Math.min(40, columns - plain().length - 1);
    if (width >= 8) return `${head} ${bar(fraction, width)} ${percent} | ${figures.join(" | ")}`;
    // Too narrow even without the bar: give up the least useful figures first.
    for (const drop of [3, 1, 1]) {
      if (plain().length <= columns) break;
      figures.splice(drop, 1);
    }
    return plain().slice(0, columns);
  }
}

/**
 * Seconds left when `doneSteps` took `elapsedMs` and `remainingSteps` remain.
 *
 * @param figures Steps done and time taken in the measured window, steps remaining.
 * @returns The estimate in seconds; NaN when no step has been measured, 0 when none remain.
 *
 * @example
 * ```ts
 * import { estimateEta } from "./progress.ts";
 * estimateEta({ doneSteps: 10, elapsedMs: 5000, remainingSteps: 90 }); // 45
 * ```
 */
export function estimateEta(
  figures: { doneSteps: number; elapsedMs: number; remainingSteps: number },
): number {
  if (figures.remainingSteps <= 0) return 0;
  if (!(figures.doneSteps > 0) || !(figures.elapsedMs >= 0)) return NaN;
  return (figures.remainingSteps * figures.elapsedMs) / figures.doneSteps / 1000;
}

/**
 * Formats seconds as `42s`, `3:07` or `1:02:03`; `?` when unknown.
 *
 * @param seconds A duration.
 * @returns The short form.
 *
 * @example
 * ```ts
 * import { formatDuration } from "./progress.ts";
 * formatDuration(3723); // "1:02:03"
 * ```
 */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/**
 * Formats a rate with an SI suffix and three significant digits: `812`, `12.3k`, `1.05M`.
 *
 * @param value A non-negative number.
 * @returns The short form; `-` when not finite.
 *
 * @example
 * ```ts
 * import { formatSi } from "./progress.ts";
 * formatSi(12345); // "12.3k"
 * ```
 */
export function formatSi(value: number): string {
  if (!Number.isFinite(value)) return "-";
  const units = ["", "k", "M", "G", "T"];
  let v = value;
  let i = 0;
  while (Math.abs(v) >= 999.5 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  const text = Math.abs(v) >= 100 || i === 0 && Number.isInteger(v)
    ? v.toFixed(0)
    : v.toPrecision(3);
  return `${text}${units[i]}`;
}

function formatLoss(loss: number | undefined): string {
  if (loss === undefined) return "-";
  // A diverged run must show it: NaN and Infinity are printed, not hidden.
  return Number.isFinite(loss) ? loss.toFixed(4) : String(loss);
}

function bar(fraction: number, width: number): string {
  const inner = width - 2;
  const filled = Math.round(fraction * inner);
  return `[${"#".repeat(filled)}${"-".repeat(inner - filled)}]`;
}

function stderrIsTerminal(): boolean {
  try {
    return Deno.stderr.isTerminal();
  } catch {
    return false;
  }
}

function consoleColumns(): number | undefined {
  try {
    return Deno.consoleSize().columns || undefined;
  } catch {
    // Not a terminal (or no permission): the caller falls back to a fixed width.
    return undefined;
  }
}

const encoder = new TextEncoder();

function writeStderr(text: string): void {
  const data = encoder.encode(text);
  let written = 0;
  while (written < data.length) written += Deno.stderr.writeSync(data.subarray(written));
}
