/**
 * Dependency-free SVG charts for run reports: line series (train and validation loss against
 * step) and labelled scatter points (validation loss against trainable parameters), with optional
 * vertical error bars (a mean ± one standard deviation over seeds), on linear or log axes with
 * 1-2-5 ticks. The output is a standalone SVG file with a white background, so it
 * reads the same in a browser, in GitHub markdown and in dark mode.
 *
 * @module
 */

/** One data point; `label` is drawn beside it in scatter series. */
export interface ChartPoint {
  x: number;
  y: number;
  label?: string;
  /**
   * Half-length of a vertical error bar drawn from `y - yError` to `y + yError` (e.g. one
   * standard deviation); absent, zero or not finite: no bar.
   */
  yError?: number;
}

/** A named series of points, drawn in its given order. */
export interface ChartSeries {
  /** Legend text. */
  name: string;
  /** Points; non-finite ones (and non-positive ones on a log axis) leave a gap. */
  points: readonly ChartPoint[];
  /** `line` (default), `scatter` (labelled markers) or `line+markers`. */
  style?: "line" | "scatter" | "line+markers";
  /** CSS colour; default from a colour-blind-safe palette. */
  color?: string;
  /** Dashed line. */
  dashed?: boolean;
  /** Line width in pixels; default 1.75. */
  width?: number;
}

/** Size, titles and axis scales of a chart. */
export interface ChartOptions {
  title?: string;
  xLabel?: string;
  yLabel?: string;
  /** Log-scale x axis (powers of ten, with 2 and 5 when few decades). */
  xLog?: boolean;
  /** Log-scale y axis. */
  yLog?: boolean;
  /** Pixels; default 720. */
  width?: number;
  /** Pixels; default 420. */
  height?: number;
}

/** Ticks of one axis and the domain they span. */
export interface Ticks {
  /** Tick values, ascending. */
  values: number[];
  /** The axis domain: the data range widened to the outer ticks. */
  domain: [number, number];
  /** Distance between linear ticks (NaN on a log axis). */
  step: number;
}

// Okabe-Ito: distinguishable with the common colour-vision deficiencies.
const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"];
const FONT = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif";

/**
 * Linear ticks 1, 2 or 5 times a power of ten apart, about `count` of them, covering
 * `[min, max]`.
 *
 * @param min Smallest data value.
 * @param max Largest data value.
 * @param count Wanted number of intervals; default 5.
 * @returns The ticks and the widened domain.
 *
 * @example
 * ```ts
 * import { niceTicks } from "./svg.ts";
 * niceTicks(2.13, 4.61).values; // [2, 2.5, 3, 3.5, 4, 4.5, 5]
 * ```
 */
export function niceTicks(min: number, max: number, count = 5): Ticks {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return niceTicks(0, 1, count);
  if (min > max) [min, max] = [max, min];
  if (min === max) {
    const pad = min === 0 ? 1 : Math.abs(min) / 10;
    return niceTicks(min - pad, max + pad, count);
  }
  const rough = (max - min) / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough * (1 - 1e-9))!;
  const first = Math.floor(min / step + 1e-9);
  const last = Math.ceil(max / step - 1e-9);
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  const values: number[] = [];
  // Multiples of the step rounded to its decimals: 0.1 * 3 prints as 0.3, not 0.30000000000000004.
  for (let i = first; i <= last; i++) values.push(Number((i * step).toFixed(decimals)) + 0);
  return { values, domain: [values[0], values[values.length - 1]], step };
}

/**
 * Log ticks: every power of ten spanning `[min, max]`, plus 2 and 5 times each when the range
 * covers at most two decades.
 *
 * @param min Smallest positive data value.
 * @param max Largest data value.
 * @returns The ticks and the domain, from one power of ten to another.
 *
 * @example
 * ```ts
 * import { logTicks } from "./svg.ts";
 * logTicks(3e4, 2e6).values; // [1e4, 1e5, 1e6, 1e7]
 * ```
 */
export function logTicks(min: number, max: number): Ticks {
  if (!(min > 0) || !Number.isFinite(max) || max < min) return logTicks(1, 10);
  let lo = Math.floor(Math.log10(min) + 1e-9);
  let hi = Math.ceil(Math.log10(max) - 1e-9);
  if (hi === lo) hi++;
  if (hi - lo > 12) lo = hi - 12;
  const values: number[] = [];
  for (let e = lo; e <= hi; e++) {
    const p = Number((10 ** e).toPrecision(12));
    values.push(p);
    if (hi - lo <= 2 && e < hi) {
      values.push(Number((2 * p).toPrecision(12)), Number((5 * p).toPrecision(12)));
    }
  }
  return { values, domain: [values[0], values[values.length - 1]], step: NaN };
}

/**
 * Maps data values to pixels: linearly, or linearly in `log10` of the value.
 *
 * @param domain Data interval.
 * @param range Pixel interval (may be reversed, as for y).
 * @param options `log`: log scale.
 * @returns The mapping; NaN for values it cannot place (non-positive on a log scale).
 *
 * @example
 * ```ts
 * import { axisScale } from "./svg.ts";
 * axisScale([1, 1000], [0, 300], { log: true })(10); // 100
 * ```
 */
export function axisScale(
  domain: readonly [number, number],
  range: readonly [number, number],
  options: { log?: boolean } = {},
): (value: number) => number {
  const f = options.log ? (v: number) => (v > 0 ? Math.log10(v) : NaN) : (v: number) => v;
  const d0 = f(domain[0]);
  const span = f(domain[1]) - d0 || 1;
  return (value) => range[0] + ((f(value) - d0) / span) * (range[1] - range[0]);
}

/**
 * Formats a tick value: as few decimals as the step needs, and `k`/`M`/`G` from ten thousand up
 * (or from a thousand on log axes, where ticks are round).
 *
 * @param value The tick.
 * @param step The linear step (NaN on a log axis).
 * @returns The label.
 */
export function formatTick(value: number, step: number): string {
  if (value === 0) return "0";
  const abs = Math.abs(value);
  const log = Number.isNaN(step);
  const si = [[1e9, "G"], [1e6, "M"], [1e3, "k"]] as const;
  for (const [unit, suffix] of si) {
    if (abs >= unit && (log || abs >= 1e4 || Math.abs(step) >= 1e4)) {
      const scaled = value / unit;
      return `${Number(scaled.toPrecision(log ? 3 : 6))}${suffix}`;
    }
  }
  if (log) return abs < 1e-3 ? value.toExponential(0) : String(Number(value.toPrecision(6)));
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return value.toFixed(Math.min(decimals, 12));
}

/**
 * Draws series as a standalone SVG chart with axes, grid, legend, title and axis labels.
 *
 * @param series The series, drawn in order (later ones on top).
 * @param options Titles, size and log scales.
 * @returns The SVG document as text.
 *
 * @example Loss curves
 * ```ts
 * import { lineChart } from "./svg.ts";
 * const svg = lineChart([
 *   { name: "train loss", points: [{ x: 1, y: 4.2 }, { x: 2, y: 3.9 }, { x: 3, y: 3.7 }] },
 *   { name: "validation loss", points: [{ x: 3, y: 3.8 }], style: "line+markers" },
 * ], { title: "GPT-2 NOLA", xLabel: "step", yLabel: "loss" });
 * ```
 */
export function lineChart(series: readonly ChartSeries[], options: ChartOptions = {}): string {
  const width = options.width ?? 720;
  const height = options.height ?? 420;
  const usable = (p: ChartPoint) =>
    Number.isFinite(p.x) && Number.isFinite(p.y) && (!options.xLog || p.x > 0) &&
    (!options.yLog || p.y > 0);
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  // A loop, not Math.min(...xs): long runs have more points than a call has arguments.
  for (const s of series) {
    for (const p of s.points) {
      if (!usable(p)) continue;
      x0 = Math.min(x0, p.x);
      x1 = Math.max(x1, p.x);
      y0 = Math.min(y0, p.y);
      y1 = Math.max(y1, p.y);
      const e = errorOf(p);
      if (e === 0) continue;
      // The bars fit on the axes too; on a log axis only an end above zero can be placed.
      if (!options.yLog || p.y - e > 0) y0 = Math.min(y0, p.y - e);
      y1 = Math.max(y1, p.y + e);
    }
  }
  const xTicks = options.xLog ? logTicks(x0, x1) : niceTicks(x0, x1, Math.round(width / 110));
  const yTicks = options.yLog ? logTicks(y0, y1) : niceTicks(y0, y1, Math.round(height / 70));
  const yLabels = yTicks.values.map((v) => formatTick(v, yTicks.step));

  const left = 16 + (options.yLabel ? 20 : 0) + 7 * Math.max(...yLabels.map((l) => l.length)) +
    8;
  const top = options.title ? 44 : 16;
  const right = 24;
  const bottom = 36 + (options.xLabel ? 20 : 0);
  const plot = { x: left, y: top, w: width - left - right, h: height - top - bottom };
  // Data keeps a few pixels off the frame, so markers on the outer ticks are not cut in half.
  const inset = 8;
  const sx = axisScale(xTicks.domain, [plot.x + inset, plot.x + plot.w - inset], {
    log: options.xLog,
  });
  const sy = axisScale(yTicks.domain, [plot.y + plot.h - inset, plot.y + inset], {
    log: options.yLog,
  });

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
      `viewBox="0 0 ${width} ${height}" font-family="${esc(FONT)}" font-size="12">`,
  );
  if (options.title) out.push(`<title>${esc(options.title)}</title>`);
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(
    `<defs><clipPath id="plot-area"><rect x="${n(plot.x)}" y="${n(plot.y)}" ` +
      `width="${n(plot.w)}" height="${n(plot.h)}"/></clipPath></defs>`,
  );

  // Grid and ticks.
  out.push(`<g stroke="#e3e3e3" stroke-width="1">`);
  for (const v of xTicks.values) {
    out.push(
      `<line x1="${n(sx(v))}" y1="${n(plot.y)}" x2="${n(sx(v))}" y2="${n(plot.y + plot.h)}"/>`,
    );
  }
  for (const v of yTicks.values) {
    out.push(
      `<line x1="${n(plot.x)}" y1="${n(sy(v))}" x2="${n(plot.x + plot.w)}" y2="${n(sy(v))}"/>`,
    );
  }
  out.push(`</g>`);
  out.push(
    `<rect x="${n(plot.x)}" y="${n(plot.y)}" width="${n(plot.w)}" height="${n(plot.h)}" ` +
      `fill="none" stroke="#444444" stroke-width="1"/>`,
  );
  out.push(`<g fill="#333333" text-anchor="middle">`);
  for (const v of xTicks.values) {
    out.push(
      `<line x1="${n(sx(v))}" y1="${n(plot.y + plot.h)}" x2="${n(sx(v))}" ` +
        `y2="${n(plot.y + plot.h + 5)}" stroke="#444444"/>`,
      `<text x="${n(sx(v))}" y="${n(plot.y + plot.h + 19)}">${
        esc(formatTick(v, xTicks.step))
      }</text>`,
    );
  }
  out.push(`</g>`, `<g fill="#333333" text-anchor="end">`);
  yTicks.values.forEach((v, i) => {
    out.push(
      `<line x1="${n(plot.x - 5)}" y1="${n(sy(v))}" x2="${n(plot.x)}" y2="${n(sy(v))}" ` +
        `stroke="#444444"/>`,
      `<text x="${n(plot.x - 8)}" y="${n(sy(v) + 4)}">${esc(yLabels[i])}</text>`,
    );
  });
  out.push(`</g>`);

  // Titles.
  if (options.title) {
    out.push(
      `<text x="${n(width / 2)}" y="26" text-anchor="middle" font-size="16" ` +
        `font-weight="600" fill="#111111">${esc(options.title)}</text>`,
    );
  }
  if (options.xLabel) {
    out.push(
      `<text x="${n(plot.x + plot.w / 2)}" y="${n(height - 10)}" text-anchor="middle" ` +
        `fill="#111111">${esc(options.xLabel)}</text>`,
    );
  }
  if (options.yLabel) {
    const cx = 18;
    const cy = plot.y + plot.h / 2;
    out.push(
      `<text x="${cx}" y="${n(cy)}" text-anchor="middle" fill="#111111" ` +
        `transform="rotate(-90 ${cx} ${n(cy)})">${esc(options.yLabel)}</text>`,
    );
  }

  // Data, clipped to the plot; scatter labels after it, unclipped, so none is cut in half.
  const labels: string[] = [];
  out.push(`<g clip-path="url(#plot-area)" fill="none">`);
  series.forEach((s, i) => {
    const color = esc(s.color ?? PALETTE[i % PALETTE.length]);
    const style = s.style ?? "line";
    const xy = s.points.map((p) => usable(p) ? [sx(p.x), sy(p.y)] as const : undefined);
    if (style !== "scatter") {
      const runs = splitRuns(xy);
      const d = runs.filter((r) => r.length > 1)
        .map((r) => r.map(([x, y], j) => `${j ? "L" : "M"}${n(x)} ${n(y)}`).join("")).join("");
      if (d) {
        out.push(
          `<path d="${d}" stroke="${color}" stroke-width="${s.width ?? 1.75}" ` +
            `stroke-linejoin="round" stroke-linecap="round"` +
            `${s.dashed ? ` stroke-dasharray="6 4"` : ""}/>`,
        );
      }
      // A point between two gaps has no segment to draw: show it as a dot.
      for (const r of runs) {
        if (r.length === 1 && style === "line") {
          out.push(`<circle cx="${n(r[0][0])}" cy="${n(r[0][1])}" r="2" fill="${color}"/>`);
        }
      }
    }
    // Error bars under the markers: a whisker with a cap at each end.
    s.points.forEach((p, j) => {
      const at = xy[j];
      const e = errorOf(p);
      if (!at || e === 0) return;
      const hi = sy(p.y + e);
      // On a log axis an end at or below zero runs off the bottom of the plot.
      const lo = Number.isFinite(sy(p.y - e)) ? sy(p.y - e) : plot.y + plot.h;
      const cap = 4;
      out.push(
        `<path d="M${n(at[0])} ${n(lo)}L${n(at[0])} ${n(hi)}M${n(at[0] - cap)} ${n(lo)}` +
          `L${n(at[0] + cap)} ${n(lo)}M${n(at[0] - cap)} ${n(hi)}L${n(at[0] + cap)} ${n(hi)}" ` +
          `stroke="${color}" stroke-width="1.25" class="error-bar"/>`,
      );
    });
    if (style !== "line") {
      s.points.forEach((p, j) => {
        const at = xy[j];
        if (!at) return;
        out.push(
          `<circle cx="${n(at[0])}" cy="${n(at[1])}" r="${style === "scatter" ? 4 : 3}" ` +
            `fill="${color}" stroke="#ffffff" stroke-width="1"/>`,
        );
        if (p.label) {
          // Labels near the right edge go to the left of their point.
          const leftSide = at[0] > plot.x + plot.w * 0.75;
          labels.push(
            `<text x="${n(at[0] + (leftSide ? -7 : 7))}" y="${n(at[1] - 6)}" ` +
              `text-anchor="${leftSide ? "end" : "start"}" font-size="11" fill="#222222">` +
              `${esc(p.label)}</text>`,
          );
        }
      });
    }
  });
  out.push(`</g>`);
  if (labels.length) out.push(`<g>`, ...labels, `</g>`);

  if (series.length > 0) out.push(legend(series, plot));
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}

function legend(
  series: readonly ChartSeries[],
  plot: { x: number; y: number; w: number; h: number },
): string {
  const row = 18;
  const textWidth = Math.max(...series.map((s) => s.name.length)) * 6.6;
  const w = 40 + textWidth + 10;
  const h = series.length * row + 10;
  const x = plot.x + plot.w - w - 10;
  const y = plot.y + 10;
  const out = [
    `<g font-size="12">`,
    `<rect x="${n(x)}" y="${n(y)}" width="${n(w)}" height="${n(h)}" rx="3" fill="#ffffff" ` +
    `fill-opacity="0.9" stroke="#bbbbbb"/>`,
  ];
  series.forEach((s, i) => {
    const color = esc(s.color ?? PALETTE[i % PALETTE.length]);
    const cy = y + 5 + row * i + row / 2;
    if ((s.style ?? "line") !== "scatter") {
      out.push(
        `<line x1="${n(x + 8)}" y1="${n(cy)}" x2="${n(x + 32)}" y2="${n(cy)}" stroke="${color}" ` +
          `stroke-width="${s.width ?? 1.75}"${s.dashed ? ` stroke-dasharray="6 4"` : ""}/>`,
      );
    }
    if ((s.style ?? "line") !== "line") {
      out.push(`<circle cx="${n(x + 20)}" cy="${n(cy)}" r="3.5" fill="${color}"/>`);
    }
    out.push(`<text x="${n(x + 40)}" y="${n(cy + 4)}" fill="#222222">${esc(s.name)}</text>`);
  });
  out.push(`</g>`);
  return out.join("\n");
}

/** Consecutive drawable points, split wherever a point is missing. */
function splitRuns(
  xy: readonly (readonly [number, number] | undefined)[],
): (readonly [number, number])[][] {
  const runs: (readonly [number, number])[][] = [];
  let current: (readonly [number, number])[] = [];
  for (const p of xy) {
    if (p) {
      current.push(p);
    } else if (current.length) {
      runs.push(current);
      current = [];
    }
  }
  if (current.length) runs.push(current);
  return runs;
}

/** A point's error-bar half-length, or 0 when it has none. */
function errorOf(p: ChartPoint): number {
  const e = p.yError;
  return e !== undefined && Number.isFinite(e) && e > 0 ? e : 0;
}

/** A coordinate with at most two decimals: small files, sub-pixel precision. */
function n(v: number): string {
  return String(Math.round(v * 100) / 100);
}

function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * A confusion matrix as a grid of cells: true class by row, predicted class by column, each cell
 * shaded by its share of its row (white 0 to dark blue 1) and labelled with its count; the
 * diagonal is outlined. Rows and columns carry the class names (cut to 16 characters).
 *
 * @param matrix Counts `[classes][classes]`, row = true class, column = predicted class.
 * @param labels Class names by id.
 * @param options `title`.
 * @returns A standalone SVG.
 * @throws {RangeError} If the matrix is not square over the labels.
 *
 * @example
 * ```ts
 * import { confusionChart } from "./train/svg.ts";
 * const svg = confusionChart([[5, 1], [0, 6]], ["cat", "dog"], { title: "test" });
 * ```
 */
export function confusionChart(
  matrix: readonly (readonly number[])[],
  labels: readonly string[],
  options: { title?: string } = {},
): string {
  const C = labels.length;
  if (matrix.length !== C || matrix.some((row) => row.length !== C)) {
    throw new RangeError(`A confusion matrix over ${C} classes must be ${C} x ${C}`);
  }
  const names = labels.map((l) => (l.length > 16 ? `${l.slice(0, 15)}…` : l));
  const cellSize = Math.max(14, Math.min(48, Math.floor(480 / C)));
  const font = Math.max(8, Math.min(13, Math.floor(cellSize * 0.4)));
  const labelWidth = Math.ceil(Math.max(...names.map((l) => l.length), 4) * font * 0.62) + 12;
  const top = (options.title ? 32 : 8) + labelWidth;
  const left = labelWidth + 28;
  const width = left + C * cellSize + 16;
  const height = top + C * cellSize + 36;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="${FONT}" font-size="${font}">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
  ];
  if (options.title) {
    out.push(
      `<text x="${n(width / 2)}" y="20" text-anchor="middle" font-size="14" ` +
        `font-weight="600">${esc(options.title)}</text>`,
    );
  }
  for (let r = 0; r < C; r++) {
    const total = matrix[r].reduce((s, v) => s + v, 0);
    for (let c = 0; c < C; c++) {
      const v = matrix[r][c];
      const share = total > 0 ? v / total : 0;
      // From white to #08306b (dark blue), by the cell's share of its row.
      const mix = (to: number) => Math.round(255 + (to - 255) * share);
      const fill = `rgb(${mix(8)},${mix(48)},${mix(107)})`;
      const x = left + c * cellSize;
      const y = top + r * cellSize;
      out.push(
        `<rect x="${x}" y="${y}" width="${cellSize}" height="${cellSize}" fill="${fill}" ` +
          `stroke="${r === c ? "#D55E00" : "#d0d0d0"}" stroke-width="${r === c ? 1.5 : 0.5}">` +
          `<title>true ${esc(labels[r])}, predicted ${esc(labels[c])}: ${n(v)}</title></rect>`,
      );
      if (cellSize >= 18) {
        out.push(
          `<text x="${n(x + cellSize / 2)}" y="${n(y + cellSize / 2 + font * 0.35)}" ` +
            `text-anchor="middle" fill="${share > 0.5 ? "#ffffff" : "#000000"}">${n(v)}</text>`,
        );
      }
    }
    out.push(
      `<text x="${left - 6}" y="${n(top + r * cellSize + cellSize / 2 + font * 0.35)}" ` +
        `text-anchor="end">${esc(names[r])}</text>`,
    );
  }
  for (let c = 0; c < C; c++) {
    const x = left + c * cellSize + cellSize / 2 + font * 0.35;
    out.push(
      `<text x="${n(x)}" y="${top - 6}" transform="rotate(-90 ${n(x)} ${top - 6})">` +
        `${esc(names[c])}</text>`,
    );
  }
  out.push(
    `<text x="${n(left + (C * cellSize) / 2)}" y="${height - 10}" text-anchor="middle">` +
      `predicted class (columns); true class (rows)</text>`,
    `<text x="12" y="${n(top + (C * cellSize) / 2)}" text-anchor="middle" ` +
      `transform="rotate(-90 12 ${n(top + (C * cellSize) / 2)})">true class</text>`,
    "</svg>",
  );
  return out.join("\n") + "\n";
}
