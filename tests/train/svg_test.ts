import assert from "node:assert/strict";
import { axisScale, formatTick, lineChart, logTicks, niceTicks } from "../../train/svg.ts";

interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
  text: string;
}

const ENTITY = /&(?:#\d+|#x[0-9a-fA-F]+|amp|lt|gt|quot|apos);/y;
const NAME = /[A-Za-z_][\w.:-]*/y;

/**
 * A strict little XML reader: balanced tags, quoted attributes without duplicates, escaped `<`
 * and `&` in text and attributes, one root. Throws with the offset of the first fault.
 */
function parseXml(xml: string): XmlElement {
  let i = 0;
  const fail = (why: string): never => {
    throw new SyntaxError(`${why} at ${i}: ${JSON.stringify(xml.slice(i, i + 40))}`);
  };
  const name = (): string => {
    NAME.lastIndex = i;
    const m = NAME.exec(xml) ?? fail("Expected a name");
    i += m[0].length;
    return m[0];
  };
  const skipSpace = () => {
    while (/\s/.test(xml[i] ?? "")) i++;
  };
  const checkEscapes = (text: string, at: number) => {
    for (let j = 0; j < text.length; j++) {
      if (text[j] === "<") {
        i = at + j;
        fail("Unescaped <");
      }
      if (text[j] === "&") {
        ENTITY.lastIndex = j;
        if (!ENTITY.test(text)) {
          i = at + j;
          fail("Bad entity");
        }
      }
    }
  };
  const decode = (text: string) =>
    text.replace(/&#(\d+);/g, (_, d) => String.fromCharCode(Number(d)))
      .replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"')
      .replace(/&apos;/g, "'").replace(/&amp;/g, "&");

  skipSpace();
  if (xml.startsWith("<?xml", i)) i = xml.indexOf("?>", i) + 2;
  skipSpace();
  const stack: XmlElement[] = [];
  let root: XmlElement | undefined;
  while (i < xml.length) {
    if (xml.startsWith("<!--", i)) {
      const end = xml.indexOf("-->", i);
      if (end < 0) fail("Unclosed comment");
      i = end + 3;
    } else if (xml.startsWith("</", i)) {
      i += 2;
      const n = name();
      skipSpace();
      if (xml[i] !== ">") fail("Expected >");
      i++;
      const open = stack.pop() ?? fail(`Unexpected </${n}>`);
      if (open.name !== n) fail(`</${n}> closes <${open.name}>`);
    } else if (xml[i] === "<") {
      i++;
      const el: XmlElement = { name: name(), attrs: {}, children: [], text: "" };
      for (;;) {
        const before = i;
        skipSpace();
        if (xml.startsWith("/>", i) || xml[i] === ">") break;
        if (i === before) fail("Expected space before an attribute");
        const a = name();
        if (a in el.attrs) fail(`Duplicate attribute ${a}`);
        if (xml[i] !== "=") fail("Expected =");
        const quote = xml[i + 1];
        if (quote !== '"' && quote !== "'") fail("Unquoted attribute");
        const end = xml.indexOf(quote, i + 2);
        if (end < 0) fail("Unclosed attribute");
        const raw = xml.slice(i + 2, end);
        checkEscapes(raw, i + 2);
        el.attrs[a] = decode(raw);
        i = end + 1;
      }
      if (stack.length) stack[stack.length - 1].children.push(el);
      else if (root) fail("Second root element");
      else root = el;
      if (xml[i] === "/") {
        i += 2;
      } else {
        i++;
        stack.push(el);
      }
    } else {
      const end = xml.indexOf("<", i);
      const text = xml.slice(i, end < 0 ? xml.length : end);
      if (!stack.length && text.trim()) fail("Text outside the root");
      checkEscapes(text, i);
      if (stack.length) stack[stack.length - 1].text += decode(text);
      i += text.length;
    }
  }
  if (stack.length) fail(`Unclosed <${stack[stack.length - 1].name}>`);
  return root ?? fail("No root element");
}

function all(el: XmlElement, name: string): XmlElement[] {
  return el.children.flatMap((c) => [...(c.name === name ? [c] : []), ...all(c, name)]);
}

const texts = (svg: XmlElement) => all(svg, "text").map((t) => t.text);

Deno.test("the XML checker itself rejects what a browser would", () => {
  assert.equal(parseXml('<a x="1"><b/>t &amp; u</a>').children[0].name, "b");
  for (
    const bad of ["<a><b></a></b>", "<a x=1/>", '<a x="1" x="2"/>', "<a>&</a>", "<a>", "<a/><b/>"]
  ) {
    assert.throws(() => parseXml(bad), SyntaxError, bad);
  }
});

Deno.test("lineChart writes a standalone, well-formed SVG with title, labels and legend", () => {
  const svg = lineChart([
    { name: "train loss", points: [1, 2, 3, 4].map((x) => ({ x, y: 5 - x })) },
    {
      name: "validation <loss>",
      points: [{ x: 2, y: 3.2 }, { x: 4, y: 1.4 }],
      style: "line+markers",
    },
  ], { title: `Loss & "friends"`, xLabel: "step", yLabel: "loss" });
  const root = parseXml(svg);
  assert.equal(root.name, "svg");
  assert.equal(root.attrs.xmlns, "http://www.w3.org/2000/svg");
  assert.equal(root.attrs.viewBox, "0 0 720 420");
  assert.equal(all(root, "title")[0].text, `Loss & "friends"`);
  const t = texts(root);
  for (const want of [`Loss & "friends"`, "step", "loss", "train loss", "validation <loss>"]) {
    assert.ok(t.includes(want), `missing text ${want}: ${t.join(" | ")}`);
  }
  assert.equal(all(root, "path").length, 2, "one path per line series");
  assert.equal(all(root, "circle").length, 2 + 1, "markers of the validation series + legend");
  assert.ok(!svg.includes("NaN") && !svg.includes("Infinity"));
});

Deno.test("niceTicks steps are 1, 2 or 5 times a power of ten and cover the data", () => {
  const next = (() => {
    let s = 12345;
    return () => (s = (s * 16807) % 2147483647) / 2147483647;
  })();
  for (let trial = 0; trial < 500; trial++) {
    const scale = 10 ** Math.floor(next() * 12 - 6);
    const a = (next() - 0.3) * 10 * scale;
    const b = a + next() * 10 * scale;
    const { values, domain, step } = niceTicks(a, b);
    const mantissa = step / 10 ** Math.floor(Math.log10(step) + 1e-9);
    assert.ok([1, 2, 5].some((m) => Math.abs(mantissa - m) < 1e-9), `step ${step} for ${a}..${b}`);
    assert.ok(domain[0] <= a && domain[1] >= b, `${domain} covers ${a}..${b}`);
    assert.ok(values.length >= 3 && values.length <= 12, `${values.length} ticks`);
    for (const v of values) {
      assert.ok(Math.abs(v / step - Math.round(v / step)) < 1e-6, `${v} is a multiple of ${step}`);
      assert.equal(
        String(v),
        String(Number(v.toPrecision(10))),
        "no float noise like 0.30000000000000004",
      );
    }
  }
  assert.deepEqual(niceTicks(2.13, 4.61).values, [2, 2.5, 3, 3.5, 4, 4.5, 5]);
  assert.deepEqual(niceTicks(0, 1200, 6).values, [0, 200, 400, 600, 800, 1000, 1200]);
  assert.deepEqual(niceTicks(0.1, 0.7, 6).values, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]);
  assert.deepEqual(niceTicks(0.1, 0.7).values, [0, 0.2, 0.4, 0.6, 0.8]);
  assert.deepEqual(niceTicks(3, 3).domain, [2.6, 3.4], "a flat series gets a range around it");
  assert.deepEqual(niceTicks(NaN, NaN).domain, [0, 1]);
});

Deno.test("logTicks are powers of ten, with 2 and 5 when the range is short", () => {
  assert.deepEqual(logTicks(3e4, 2e6).values, [1e4, 1e5, 1e6, 1e7]);
  assert.deepEqual(logTicks(2, 50).values, [1, 2, 5, 10, 20, 50, 100]);
  assert.deepEqual(logTicks(10, 10).values, [10, 20, 50, 100]);
  assert.deepEqual(logTicks(0.002, 0.9).values, [0.001, 0.01, 0.1, 1], "three decades");
  assert.deepEqual(logTicks(0.02, 0.9).values, [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1]);
  assert.deepEqual(logTicks(-1, 5).domain, [1, 10], "no positive range: a default decade");
});

Deno.test("tick labels use the step's decimals and k/M suffixes", () => {
  assert.equal(formatTick(2.5, 0.5), "2.5");
  assert.equal(formatTick(3, 0.5), "3.0");
  assert.equal(formatTick(0.02, 0.01), "0.02");
  assert.equal(formatTick(800, 200), "800");
  assert.equal(formatTick(20_000, 5000), "20k");
  assert.equal(formatTick(2_500_000, 500_000), "2.5M");
  assert.equal(formatTick(1e5, NaN), "100k");
  assert.equal(formatTick(0.01, NaN), "0.01");
  assert.equal(formatTick(1e-5, NaN), "1e-5");
  assert.equal(formatTick(0, 0.1), "0");
});

Deno.test("log axes place each decade an equal distance apart", () => {
  const s = axisScale([1, 1000], [0, 300], { log: true });
  assert.deepEqual([1, 10, 100, 1000].map(s), [0, 100, 200, 300]);
  assert.ok(Math.abs(s(Math.sqrt(10)) - 50) < 1e-9);
  assert.ok(Number.isNaN(s(0)));
  const y = axisScale([0, 10], [400, 0]);
  assert.equal(y(2.5), 300, "a reversed range maps upward");

  const svg = parseXml(lineChart([{
    name: "runs",
    style: "scatter",
    points: [1e3, 1e4, 1e5, 1e6].map((x, i) => ({ x, y: 3 - i * 0.1, label: `p${i}` })),
  }], { xLog: true }));
  const cx = all(svg, "circle").slice(0, 4).map((c) => Number(c.attrs.cx));
  const gaps = cx.slice(1).map((x, i) => x - cx[i]);
  assert.ok(gaps.every((g) => g > 50 && Math.abs(g - gaps[0]) < 0.02), `decade gaps ${gaps}`);
  assert.deepEqual(texts(svg).filter((t) => t.startsWith("p")), ["p0", "p1", "p2", "p3"]);
  assert.ok(texts(svg).includes("1k") && texts(svg).includes("1M"), texts(svg).join(" "));
});

Deno.test("non-finite points leave a gap in the line instead of breaking the chart", () => {
  const points = [1, 2, NaN, 4, 5, Infinity, 7, -Infinity, 9, 10].map((y, i) => ({ x: i, y }));
  const svg = lineChart([{ name: "loss", points }]);
  assert.ok(!/NaN|Infinity/.test(svg));
  const root = parseXml(svg);
  const d = all(root, "path")[0].attrs.d;
  assert.equal(d.match(/M/g)?.length, 3, `three drawn runs (0-1, 3-4, 8-9): ${d}`);
  assert.equal(d.match(/L/g)?.length, 3);
  assert.equal(all(root, "circle").length, 1, "point 6, alone between gaps, is a dot");
});

Deno.test("log axes skip non-positive points, and empty or all-NaN charts still render", () => {
  const svg = lineChart([{
    name: "a",
    points: [{ x: 0, y: 1 }, { x: 10, y: 2 }, { x: 100, y: 3 }],
  }], {
    xLog: true,
  });
  assert.equal(all(parseXml(svg), "path")[0].attrs.d.match(/[ML]/g)?.join(""), "ML");
  for (
    const chart of [
      lineChart([]),
      lineChart([{ name: "nan", points: [{ x: NaN, y: NaN }] }], { yLog: true, title: "empty" }),
      lineChart([{ name: "one", points: [{ x: 5, y: 2 }] }]),
    ]
  ) {
    assert.equal(parseXml(chart).name, "svg");
    assert.ok(!/NaN|Infinity/.test(chart));
  }
});

Deno.test("long runs render without exhausting the stack", () => {
  const points = Array.from({ length: 200_000 }, (_, i) => ({ x: i, y: 1 / (i + 1) }));
  const svg = lineChart([{ name: "train loss", points }]);
  assert.ok(svg.length > 1_000_000);
  assert.equal(svg.match(/<path /g)?.length, 1);
});

Deno.test("error bars span y ± yError on the axis, centred on their markers, inside the plot", () => {
  const points = [
    { x: 1e3, y: 40, yError: 2, label: "a" },
    { x: 1e4, y: 55, yError: 6, label: "b" },
    { x: 1e5, y: 61, yError: 0.5, label: "c" },
  ];
  const root = parseXml(
    lineChart([{ name: "BLEU", style: "line+markers", points }], { xLog: true }),
  );
  const bars = all(root, "path").filter((p) => p.attrs.class === "error-bar");
  assert.equal(bars.length, 3);
  const markers = all(root, "circle").slice(0, 3);
  const frame = all(root, "rect").find((r) => r.attrs.stroke === "#444444")!;
  const [top, bottom] = [Number(frame.attrs.y), Number(frame.attrs.y) + Number(frame.attrs.height)];
  const perUnit: number[] = [];
  bars.forEach((bar, i) => {
    // M x lo L x hi, then the two caps.
    const nums = bar.attrs.d.match(/-?[\d.]+/g)!.map(Number);
    const [x, lo, x2, hi] = nums;
    assert.equal(x, x2, "the whisker is vertical");
    assert.equal(x, Number(markers[i].attrs.cx), "at its marker's x");
    assert.ok(Math.abs((lo + hi) / 2 - Number(markers[i].attrs.cy)) < 0.02, "centred on y");
    assert.ok(lo > hi && hi >= top && lo <= bottom, `inside the plot: ${hi}..${lo}`);
    perUnit.push((lo - hi) / (2 * points[i].yError));
    assert.equal(nums.length, 12, "a whisker and two caps");
  });
  // A linear y axis: every bar has the pixels per unit that separate the markers.
  const cy = markers.map((m) => Number(m.attrs.cy));
  const axis = (cy[0] - cy[2]) / (points[2].y - points[0].y);
  for (const p of perUnit) assert.ok(Math.abs(p - axis) < 0.01 * axis, `${perUnit} vs ${axis}`);
});

Deno.test("error bars widen the y axis to fit, and none is drawn for 0, NaN or absent", () => {
  const base = [{ x: 1, y: 10 }, { x: 2, y: 11 }];
  const plain = lineChart([{ name: "s", style: "line+markers", points: base }]);
  for (const yError of [0, NaN, -1, undefined]) {
    const same = lineChart([{
      name: "s",
      style: "line+markers",
      points: base.map((p) => ({ ...p, yError })),
    }]);
    assert.equal(same, plain, `yError ${yError} changes nothing`);
  }
  const wide = parseXml(lineChart([{
    name: "s",
    style: "line+markers",
    points: base.map((p) => ({ ...p, yError: 5 })),
  }]));
  const labels = all(wide, "g").find((g) => g.attrs["text-anchor"] === "end")!;
  const ticks = all(labels, "text").map((t) => Number(t.text));
  assert.ok(Math.min(...ticks) <= 5 && Math.max(...ticks) >= 16, `y ticks ${ticks} cover 5..16`);

  // On a log axis an end at or below zero runs to the bottom of the plot instead of vanishing.
  const log = lineChart([{ name: "s", style: "scatter", points: [{ x: 1, y: 2, yError: 3 }] }], {
    yLog: true,
  });
  assert.ok(!/NaN|Infinity/.test(log));
  const bar = all(parseXml(log), "path").find((p) => p.attrs.class === "error-bar")!;
  const frame = all(parseXml(log), "rect").find((r) => r.attrs.stroke === "#444444")!;
  const lo = Number(bar.attrs.d.match(/-?[\d.]+/g)![1]);
  assert.equal(lo, Number(frame.attrs.y) + Number(frame.attrs.height));
});
