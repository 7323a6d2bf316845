/**
 * Ctrl-C handling for long runs: the first SIGINT asks the run to stop at the next step boundary
 * (after writing a checkpoint); a second one exits at once.
 *
 * @module
 */

/** An abort signal raised by the first SIGINT while this object lives. */
export class Interrupt implements Disposable {
  readonly #controller = new AbortController();
  readonly #listener: () => void;
  #installed = false;

  constructor() {
    this.#listener = () => {
      if (this.#controller.signal.aborted) Deno.exit(130);
      console.error(
        "\nInterrupted: finishing this step and writing a checkpoint (Ctrl-C again to quit now)",
      );
      this.#controller.abort();
    };
    try {
      Deno.addSignalListener("SIGINT", this.#listener);
      this.#installed = true;
    } catch {
      // Signals are not available everywhere (e.g. Windows lacks some): runs then stop on exit.
    }
  }

  /** Aborted once SIGINT arrives. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  [Symbol.dispose](): void {
    if (this.#installed) Deno.removeSignalListener("SIGINT", this.#listener);
    this.#installed = false;
  }
}

/** The line printed after an interrupted run: where it stopped and how to continue. */
export function resumeHint(
  options: { step: number; checkpoint?: string; command: string },
): string {
  return `Stopped at step ${options.step}` +
    (options.checkpoint ? `, checkpoint ${options.checkpoint}` : "") +
    `. Resume with: ${options.command} --resume`;
}
