/**
 * Slot error rate of data-to-text output (E2E NLG style): the share of a meaning representation's
 * slots that the output fails to state, plus the slot values it states that the meaning
 * representation does not hold.
 *
 * A meaning representation (MR) is a list `slot[value], slot[value], ...`. A slot is realised
 * when one of its value's patterns occurs in the output (case-insensitive, bounded by non-letters
 * on both sides). A value's patterns are its literal text (a leading "the" optional, spaces and
 * hyphens interchangeable) unless a paraphrase lexicon below covers it: price ranges, customer
 * ratings and family-friendliness are usually paraphrased ("expensive" for `priceRange[high]`,
 * "children are welcome" for `familyFriendly[yes]`), and a few eat types, areas and foods have
 * common alternatives. Every pattern of the split's known values (the values seen in its MRs,
 * plus the lexicon's values of the slots seen) is searched at once; where matches overlap, the
 * longest wins (ties: a value of the MR), so "not family friendly" is not also read as "family
 * friendly" and "Harbour Lights" (a name) is not also the area "harbour".
 *
 * Counts, per output: missing = slots of its MR not realised; hallucinated = known values
 * realised that its MR does not hold (a wrong price counts once as missing and once as
 * hallucinated). The rate is `(missing + hallucinated) / (slots of all MRs)`, in percent like
 * BLEU and ROUGE-L (above 100 when outputs state more wrong values than the MRs have slots).
 * Paraphrases outside the lexicon count as missing, and negations other than the
 * family-friendly ones ("not expensive") are not understood: the figure errs high, and is meant
 * to compare systems on the same data.
 *
 * @module
 */

/** One slot of a meaning representation, as written. */
export interface Slot {
  /** The slot's name, e.g. `priceRange` or `customer rating`. */
  slot: string;
  /** Its value, e.g. `£20-25`. */
  value: string;
}

/** What one output got wrong. */
export interface SlotCheck {
  /** Slots of the MR the output does not realise. */
  missing: Slot[];
  /**
   * Known slot values the output realises that the MR does not hold, one per distinct value, in
   * the order the output states them.
   */
  hallucinated: Slot[];
}

/** Corpus slot error figures; rates in percent of the MRs' slots. */
export interface SlotErrorResult {
  /** `100 * (missing + hallucinated) / slots`. */
  slotError: number;
  /** `100 * missing / slots`. */
  missing: number;
  /** `100 * hallucinated / slots`. */
  hallucinated: number;
  /** Slots of all MRs. */
  slots: number;
  /** Slots not realised. */
  missingCount: number;
  /** Values realised but not in the MR. */
  hallucinatedCount: number;
  /** Per output, what it got wrong. */
  checks: SlotCheck[];
}

// A paraphrase group: MR values (lower case) that mean the same, and how text states them.
// Pattern sources are regular expressions, matched case-insensitively; a space stands for any
// run of white space, ` ?` for an optional one and `[- ]` for one white space or hyphen.
interface Paraphrase {
  values: string[];
  patterns: string[];
}

// Slot names are compared lower-cased with all but letters and digits dropped:
// `customer rating`, `customerRating` and `customer_rating` are one slot.
// An amount in pounds: "£20", "20 pounds", "20 British pounds".
const amount = (n: number) => `(?:£ ?${n}(?: pounds)?|${n}(?: british)? (?:pounds?|gbp))`;
// How a price or a rating is said to be something: "price range is high", "rated as average".
const PRICE_IS = "(?:prices?|price range|pricing) (?:is|are) (?:very )?";
const RATED = "(?:rated|ratings?(?: is| are| of)?|rates) (?:as )?";
const KIDS = "(?:children|kids|famil(?:y|ies)|the (?:whole )?family)";
const NOT = "(?:not|isn['’]t|aren['’]t|non|no)(?: very| so| too)?";

const PARAPHRASES: Record<string, Paraphrase[]> = {
  pricerange: [
    {
      values: ["cheap", "less than £20"],
      patterns: [
        "cheap(?:ly)?(?: priced)?",
        "inexpensive",
        "low[- ]?(?:cost|priced|prices?)",
        "affordabl[ey]",
        `(?:less than|under|below) ${amount(20)}`,
        `${PRICE_IS}low`,
      ],
    },
    {
      values: ["moderate", "£20-25"],
      patterns: [
        "moderate(?:ly)?(?: priced)?",
        "average[- ]priced",
        "average prices?",
        "mid[- ]?(?:range|priced)",
        "reasonabl[ey](?: priced)?",
        "£? ?20 ?(?:-|–|to) ?£? ?25(?: british)?(?: pounds)?",
        `${PRICE_IS}(?:average|medium)`,
      ],
    },
    {
      values: ["high", "more than £30"],
      patterns: [
        "high(?:er)?[- ]?(?:priced|prices?|end)",
        "expensive",
        "pricey",
        "costly",
        `(?:more than|over|above) ${amount(30)}`,
        `(?:start(?:s|ing)? (?:at|from)|from) ${amount(30)}`,
        `${PRICE_IS}high`,
      ],
    },
  ],
  customerrating: [
    {
      values: ["low", "1 out of 5"],
      patterns: [
        "(?:low(?:ly)?|poorly)[- ]rated",
        `${RATED}(?:low|poor(?:ly)?|bad)`,
        "(?:low|poor|bad) (?:customer )?(?:ratings?|reviews?)",
        "(?:1|one) (?:out of|of) (?:5|five)",
        "(?:1|one)[- ]stars?",
      ],
    },
    {
      values: ["average", "3 out of 5"],
      patterns: [
        "average[- ]rated",
        `${RATED}average`,
        "average (?:customer )?(?:ratings?|reviews?)",
        "(?:3|three) (?:out of|of) (?:5|five)",
        "(?:3|three)[- ]stars?",
      ],
    },
    {
      values: ["high", "5 out of 5"],
      patterns: [
        "high(?:ly)?[- ]rated",
        "rated (?:very )?highly",
        `${RATED}high`,
        "high (?:customer )?(?:ratings?|reviews?)",
        "(?:5|five) (?:out of|of) (?:5|five)",
        "(?:5|five)[- ]stars?",
      ],
    },
  ],
  familyfriendly: [
    {
      values: ["yes"],
      patterns: [
        "(?:family|kids?|child(?:ren)?)[\\s-]*friendly",
        "family[- ]oriented",
        "(?:children|kids|families) are (?:welcome|allowed)",
        "welcomes? (?:children|kids|families)",
        `(?:good|great|ideal|suitable) for ${KIDS}`,
      ],
    },
    {
      values: ["no"],
      patterns: [
        `${NOT}[\\s-]*(?:a )?(?:family|kids?|child(?:ren)?)[\\s-]*friendly`,
        "(?:family|kids?|child(?:ren)?)[- ]unfriendly",
        "(?:children|kids|families) are not (?:welcome|allowed)",
        "(?:does not|doesn['’]t|do not|don['’]t) (?:welcome|allow|permit|cater (?:for|to)) " +
        "(?:children|kids|families)",
        `not (?:(?:good|great|ideal|suitable|conducive) )?for ${KIDS}`,
        "no (?:children|kids)",
        "adults?[- ]only",
      ],
    },
  ],
  eattype: [
    { values: ["coffee shop"], patterns: ["coffee[- ]?shops?", "caf[eé]s?"] },
    { values: ["pub"], patterns: ["pubs?", "public house"] },
  ],
  area: [
    {
      values: ["city centre"],
      patterns: ["(?:city|town) cent(?:re|er)", "cent(?:re|er) of (?:the )?(?:city|town)"],
    },
    {
      values: ["riverside"],
      patterns: ["river ?side", "(?:by|on|along|beside|near) the river", "riverfront"],
    },
  ],
  food: [{ values: ["english"], patterns: ["english", "british"] }],
};

/** The name of a slot as compared: lower case, letters and digits only. */
function slotKey(slot: string): string {
  return slot.toLowerCase().replace(/[^\p{L}\p{N}]/gu, "");
}

/** A value as compared: lower case, single spaces. */
function valueKey(value: string): string {
  return value.toLowerCase().replace(/\s+/g, " ").trim();
}

function literalPattern(value: string): string {
  const words = valueKey(value).replace(/^the /, "").split(/[\s-]+/);
  const escaped = words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  return `(?:the[\\s-]+)?${escaped.join("[\\s-]+")}`;
}

function compile(source: string): RegExp {
  const body = source.replaceAll("[- ]", "[\\s-]").replaceAll(" ?", "\\s*")
    .replaceAll(" ", "\\s+");
  return new RegExp(`(?<![\\p{L}\\p{N}])(?:${body})(?![\\p{L}\\p{N}])`, "giu");
}

// One value (or paraphrase group) of one slot and its compiled patterns.
interface Concept {
  key: string;
  slot: string;
  label: string;
  patterns: RegExp[];
  // Whether `label` is a value of the data (else the lexicon's name of the group).
  seen: boolean;
}

/**
 * Reads a meaning representation: `slot[value]` items separated by commas.
 *
 * @param mr The text, e.g. `name[The Mill], eatType[pub], priceRange[£20-25]`.
 * @returns Its slots in order.
 * @throws {SyntaxError} If it is not such a list (naming the column), a slot name or value is
 * empty, or it holds no slot.
 *
 * @example
 * ```ts
 * import { parseMr } from "./slot_error.ts";
 * parseMr("name[The Mill], customer rating[5 out of 5]");
 * // [{ slot: "name", value: "The Mill" }, { slot: "customer rating", value: "5 out of 5" }]
 * ```
 */
export function parseMr(mr: string): Slot[] {
  const slots: Slot[] = [];
  const fail = (what: string, at: number): never => {
    throw new SyntaxError(
      `Cannot read meaning representation ${JSON.stringify(mr)}: ${what} at column ${at + 1}; ` +
        "write it as slot[value], slot[value], ...",
    );
  };
  let i = 0;
  while (true) {
    while (i < mr.length && /\s/.test(mr[i])) i++;
    if (i >= mr.length) break;
    const open = mr.indexOf("[", i);
    if (open < 0) fail("expected a slot name followed by [", i);
    const slot = mr.slice(i, open).trim();
    if (slot === "" || /[\],]/.test(slot)) fail("expected a slot name before [", i);
    const close = mr.indexOf("]", open);
    if (close < 0) fail(`the value of "${slot}" has no closing ]`, open);
    const value = mr.slice(open + 1, close).trim();
    if (value === "" || value.includes("[")) fail(`"${slot}" has no single value`, open);
    slots.push({ slot, value });
    i = close + 1;
    while (i < mr.length && /\s/.test(mr[i])) i++;
    if (i < mr.length && mr[i] !== ",") fail("expected , after ]", i);
    i++;
  }
  if (slots.length === 0) fail("no slot", 0);
  return slots;
}

/**
 * The meaning representation inside a prompt: the last line holding a `[`, from after a label
 * that ends in a colon before its first `[` (`Data: name[X], ...` gives `name[X], ...`).
 *
 * @param prompt A rendered prompt, e.g. `"name[The Mill], eatType[pub]\n"`.
 * @returns The MR's text, or undefined when no line holds a `[`.
 *
 * @example
 * ```ts
 * import { findMr } from "./slot_error.ts";
 * findMr("Data: name[The Mill], eatType[pub]\nText:"); // "name[The Mill], eatType[pub]"
 * ```
 */
export function findMr(prompt: string): string | undefined {
  const line = prompt.split(/\r?\n/).findLast((l) => l.includes("["));
  if (line === undefined) return undefined;
  const colon = line.lastIndexOf(":", line.indexOf("["));
  return line.slice(colon + 1).trim();
}

/**
 * The values a split's outputs are checked against: every value seen per slot in its meaning
 * representations, and the paraphrase groups of the slots seen (price ranges, customer ratings,
 * family-friendliness, some eat types and areas).
 */
export class SlotLexicon {
  readonly #concepts = new Map<string, Concept>();
  // Slot key and value key to the concept key that realises it.
  readonly #index = new Map<string, string>();
  readonly #slots = new Set<string>();

  /**
   * A lexicon of the values in `mrs`.
   *
   * @param mrs Meaning representations, as text or parsed.
   * @returns The lexicon.
   * @throws {SyntaxError} If a text MR cannot be read.
   */
  static fromMrs(mrs: Iterable<string | readonly Slot[]>): SlotLexicon {
    const lexicon = new SlotLexicon();
    for (const mr of mrs) {
      for (const { slot, value } of typeof mr === "string" ? parseMr(mr) : mr) {
        lexicon.#add(slot, value);
      }
    }
    return lexicon;
  }

  /** The known values of each slot (as first seen; paraphrase groups by their first value). */
  get values(): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const c of this.#concepts.values()) {
      out.set(c.slot, [...out.get(c.slot) ?? [], c.label]);
    }
    return out;
  }

  // The concept of a slot value; a slot's paraphrase groups are made when the slot is first seen.
  #add(slot: string, value: string): Concept {
    const sk = slotKey(slot);
    const vk = `${sk}\u0000${valueKey(value)}`;
    if (!this.#slots.has(sk)) {
      this.#slots.add(sk);
      for (const [g, group] of (PARAPHRASES[sk] ?? []).entries()) {
        const key = `${sk}\u0000#${g}`;
        const patterns = group.patterns.map(compile);
        this.#concepts.set(key, { key, slot, label: group.values[0], patterns, seen: false });
        for (const v of group.values) this.#index.set(`${sk}\u0000${v}`, key);
      }
    }
    let concept = this.#concepts.get(this.#index.get(vk) ?? "");
    if (concept === undefined) {
      const key = `${sk}\u0000=${valueKey(value)}`;
      const patterns = [compile(literalPattern(value))];
      concept = { key, slot, label: value, patterns, seen: true };
      this.#concepts.set(key, concept);
      this.#index.set(vk, key);
    } else if (!concept.seen) {
      // A paraphrase group is named by the first of its values the data holds.
      concept.label = value;
      concept.seen = true;
    }
    return concept;
  }

  /**
   * What `text` gets wrong about `mr`. Values of the MR the lexicon lacks are added to it.
   *
   * @param text One output.
   * @param mr Its meaning representation, as text or parsed.
   * @returns The MR's slots it misses and the values it states that the MR does not hold.
   * @throws {SyntaxError} If a text MR cannot be read.
   *
   * @example A wrong price
   * ```ts
   * import { SlotLexicon } from "./slot_error.ts";
   * const mr = "name[The Mill], priceRange[cheap]";
   * const lexicon = SlotLexicon.fromMrs([mr, "name[Zizzi], priceRange[high]"]);
   * lexicon.check("The Mill is expensive.", mr);
   * // { missing: [{ slot: "priceRange", value: "cheap" }],
   * //   hallucinated: [{ slot: "priceRange", value: "high" }] }
   * ```
   */
  check(text: string, mr: string | readonly Slot[]): SlotCheck {
    const slots = typeof mr === "string" ? parseMr(mr) : mr;
    const held = new Map<string, Slot[]>();
    for (const s of slots) {
      const key = this.#add(s.slot, s.value).key;
      held.set(key, [...held.get(key) ?? [], s]);
    }
    const spans: { start: number; end: number; key: string; held: boolean }[] = [];
    for (const c of this.#concepts.values()) {
      for (const pattern of c.patterns) {
        for (const m of text.matchAll(pattern)) {
          if (m[0].length === 0) continue;
          spans.push({
            start: m.index,
            end: m.index + m[0].length,
            key: c.key,
            held: held.has(c.key),
          });
        }
      }
    }
    spans.sort((a, b) =>
      (b.end - b.start) - (a.end - a.start) || Number(b.held) - Number(a.held) || a.start - b.start
    );
    const taken: { start: number; end: number }[] = [];
    // Each realised value and where it is first stated.
    const realised = new Map<string, number>();
    for (const s of spans) {
      if (taken.some((t) => s.start < t.end && t.start < s.end)) continue;
      taken.push(s);
      realised.set(s.key, Math.min(s.start, realised.get(s.key) ?? Infinity));
    }
    const missing = [...held].filter(([key]) => !realised.has(key)).flatMap(([, s]) => s);
    const stated = [...realised].sort((a, b) => a[1] - b[1]).map(([key]) => key);
    const hallucinated = stated.filter((key) => !held.has(key)).map((key) => {
      const c = this.#concepts.get(key)!;
      return { slot: c.slot, value: c.label };
    });
    return { missing, hallucinated };
  }
}

/**
 * Slot error rate of outputs against their meaning representations, in percent of the MRs'
 * slots. Without a lexicon, the values are those of `mrs` (see {@link SlotLexicon}).
 *
 * @param hyps One output per MR.
 * @param mrs The meaning representations, as text or parsed.
 * @param options `lexicon`: the values to check against (for example those of a whole split
 * when only part of it is scored).
 * @returns The rates, the counts and what each output got wrong.
 * @throws {RangeError} If the lengths differ or there is no output.
 * @throws {SyntaxError} If an MR cannot be read.
 *
 * @example
 * ```ts
 * import { slotErrorRate } from "./slot_error.ts";
 * const r = slotErrorRate(
 *   ["The Mill is a pub.", "Zizzi is a pub."],
 *   ["name[The Mill], eatType[pub]", "name[Zizzi], food[Italian]"],
 * );
 * console.log(r.slotError, r.missing, r.hallucinated); // 50 25 25
 * ```
 */
export function slotErrorRate(
  hyps: readonly string[],
  mrs: readonly (string | readonly Slot[])[],
  options: { lexicon?: SlotLexicon } = {},
): SlotErrorResult {
  if (hyps.length !== mrs.length) {
    throw new RangeError(
      `Cannot score slot errors: ${hyps.length} outputs for ${mrs.length} meaning representations`,
    );
  }
  if (hyps.length === 0) throw new RangeError("Cannot score slot errors of no output");
  const parsed = mrs.map((mr) => typeof mr === "string" ? parseMr(mr) : mr);
  const lexicon = options.lexicon ?? SlotLexicon.fromMrs(parsed);
  const checks = hyps.map((hyp, i) => lexicon.check(hyp, parsed[i]));
  const slots = parsed.reduce((n, mr) => n + mr.length, 0);
  const missingCount = checks.reduce((n, c) => n + c.missing.length, 0);
  const hallucinatedCount = checks.reduce((n, c) => n + c.hallucinated.length, 0);
  const pct = (n: number) => (100 * n) / slots;
  return {
    slotError: pct(missingCount + hallucinatedCount),
    missing: pct(missingCount),
    hallucinated: pct(hallucinatedCount),
    slots,
    missingCount,
    hallucinatedCount,
    checks,
  };
}
