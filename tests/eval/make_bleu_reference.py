#!/usr/bin/python3
"""Writes tests/eval/bleu_reference.json: a small BLEU test set scored by NLTK.

Run with Debian's Python and NLTK (apt-get install -y python3-nltk), from the repository root:

    /usr/bin/python3 tests/eval/make_bleu_reference.py && deno fmt tests/eval/bleu_reference.json

The text is tokenized by a port of mteval-v13a's rules (the steps of sacreBLEU's tokenizer_13a),
and NLTK's corpus_bleu / modified_precision / closest_ref_length score the token lists. For every
case the file holds the tokens, NLTK's clipped matches and denominators per order and the closest
reference length; for several sub-corpora it holds NLTK's corpus BLEU (0-100 scale).

NLTK counts max(1, n-grams) in each hypothesis' denominator while mteval and sacreBLEU (and
eval/bleu.ts) count the real number, so NLTK's corpus_bleu is compared directly only on corpora
whose hypotheses have 4 tokens or more ("long", "no_4gram_match"); for the whole set the file gives
the mteval-definition score assembled from NLTK's own per-case counts and brevity penalty.
"""

import json
import math
import re
import sys
import warnings
from fractions import Fraction

import nltk
from nltk.translate.bleu_score import (
    SmoothingFunction,
    brevity_penalty,
    closest_ref_length,
    corpus_bleu,
    modified_precision,
)

OUT = "tests/eval/bleu_reference.json"

# (hypothesis, [references]); edge cases: short and empty hypotheses, punctuation, numbers,
# entities, repeated n-grams, ties between reference lengths, non-ASCII text.
CASES = [
    ("The Eagle is a coffee shop near Burger King.",
     ["The Eagle is a coffee shop near Burger King.", "Near Burger King is The Eagle coffee shop."]),
    ("The Phoenix is a cheap pub in the city centre, rated 5 out of 5.",
     ["The Phoenix pub in the city centre is cheap and has a customer rating of 5 out of 5.",
      "In the city centre, The Phoenix is a pub with low prices and a 5 out of 5 rating."]),
    ("the the the the the the the", ["The cat is on the mat.", "There is a cat on the mat."]),
    ("the cat the cat the cat on the mat", ["the cat is on the mat", "there is a cat on the mat"]),
    ("Yes.", ["Yes."]),
    ("OK", ["Okay then.", "OK."]),
    ("", ["An empty hypothesis still has a reference."]),
    ("Aromi", ["Aromi is a coffee shop.", "Aromi"]),
    ("It costs $3.50, or 1,000 yen (approx.).", ["It costs $3.50 - about 1,000 yen."]),
    ("Pi is 3.14159; e is 2.71828...", ["Pi is about 3.14159, and e is 2.71828."]),
    ("Open 1990-1995 and 2001-2003.", ["Opened from 1990-1995, then 2001-2003."]),
    ("He said &quot;hello&quot; &amp; left &lt;quickly&gt;.",
     ['He said "hello" & left <quickly>.', "He said hello and left."]),
    ("A kid-friendly place: Zizzi's - rated 3/5!",
     ["Zizzi's is kid-friendly and rated 3/5.", "Kid friendly Zizzi's has a 3/5 rating!"]),
    ("Fitzbillies [near] {the} river | #1 @ ~home^ _ok_ `tick`",
     ["Fitzbillies is near the river, #1 at home."]),
    ("Wait,what?No.Yes,maybe.", ["Wait, what? No. Yes, maybe."]),
    ("Prices: £20-25, rating 4.5/5.", ["Prices are £20-25 and the rating is 4.5/5."]),
    ("Le café naïve serves crème brûlée — très bon.",
     ["Le café sert une crème brûlée très bonne.", "The naïve café serves crème brûlée."]),
    ("This line<skipped> has a hyphen-\nated word\nand a newline.",
     ["This line has a hyphenated word and a newline."]),
    ("Strada is a family friendly restaurant serving Italian food near the river.",
     ["Strada is a family friendly Italian restaurant near the river.",
      "Near the river is Strada, a family friendly restaurant that serves Italian food.",
      "Strada serves Italian food near the river and is family friendly."]),
    ("The Wrestlers is a high priced Japanese restaurant.",
     ["The Wrestlers is an expensive Japanese restaurant.",
      "The Wrestlers serves Japanese food at high prices."]),
    ("Cotto is a coffee shop that serves fast food in the riverside area near The Portland Arms.",
     ["Cotto is a coffee shop near The Portland Arms in riverside, serving fast food.",
      "Near The Portland Arms in the riverside area, Cotto is a fast food coffee shop."]),
    ("a b c d e f g h", ["a b c d", "a b c d e f g h i j k l"]),
    ("one two three four", ["one two three", "one two three four five"]),
    ("x y z w v", ["x y z w", "x y z w v u"]),
    ("Blue Spice is not family-friendly.", ["Blue Spice is not family-friendly.",
                                           "Blue Spice is not kid friendly."]),
    ("The Golden Curry is rated 1 out of 5 and is near Café Rouge.",
     ["The Golden Curry, near Café Rouge, has a 1 out of 5 rating."]),
    ("Loch Fyne Loch Fyne Loch Fyne Loch Fyne serves seafood.",
     ["Loch Fyne serves seafood.", "Loch Fyne is a seafood restaurant."]),
    ("10.5.2020: opened at 9:30 a.m., closed 5.30pm", ["Opened 10.5.2020 at 9:30 a.m.; closed at 5.30pm."]),
    ("  Extra   spaces\tand\ttabs here.  ", ["Extra spaces and tabs here."]),
    ("Browns Cambridge is a cheap French coffee shop.",
     ["Browns Cambridge is a French coffee shop with cheap prices.",
      "Browns Cambridge serves cheap French food in a coffee shop.",
      "The coffee shop Browns Cambridge serves French food cheaply."]),
    ("Giraffe is a pub.", ["Giraffe is a pub."]),
    ("zero overlap entirely here", ["nothing matches at all now"]),
]

# mteval-v13a's language-dependent part, in sacreBLEU's tokenizer_13a order.
_RULES = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
]


def tokenize_13a(line):
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&")
        line = line.replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, repl in _RULES:
        line = pattern.sub(repl, line)
    return line.split()


def nltk_corpus(indices, hyp_tokens, ref_tokens, smoothing=None):
    hyps = [hyp_tokens[i] for i in indices]
    refs = [ref_tokens[i] for i in indices]
    return 100 * corpus_bleu(refs, hyps, smoothing_function=smoothing)


def mteval_from_nltk_counts(indices, cases):
    """Corpus BLEU with mteval's denominators, from NLTK's per-case counts and brevity penalty."""
    num = [0] * 4
    den = [0] * 4
    hyp_len = 0
    ref_len = 0
    for i in indices:
        c = cases[i]
        for n in range(4):
            num[n] += c["nltk_matches"][n]
            den[n] += max(0, len(c["hyp_tokens"]) - n)
        hyp_len += len(c["hyp_tokens"])
        ref_len += c["closest_ref_length"]
    if min(num) == 0:
        return 0.0
    bp = brevity_penalty(ref_len, hyp_len)
    return 100 * bp * math.exp(sum(math.log(num[n] / den[n]) for n in range(4)) / 4)


def to_json(value, indent=""):
    """JSON with one line per case and per short list, close to `deno fmt`'s layout."""
    inner = indent + "  "
    if isinstance(value, dict) and len(json.dumps(value, ensure_ascii=False)) > 80:
        items = [f"{inner}{json.dumps(k)}: {to_json(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}" + ("\n" if not indent else "")
    if isinstance(value, list) and len(json.dumps(value, ensure_ascii=False)) > 80:
        items = [f"{inner}{to_json(v, inner)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{indent}]"
    return json.dumps(value, ensure_ascii=False)


def main():
    # NLTK warns on every corpus with an order that has no match: that is the point of some here.
    warnings.simplefilter("ignore")
    hyp_tokens = [tokenize_13a(h) for h, _ in CASES]
    ref_tokens = [[tokenize_13a(r) for r in refs] for _, refs in CASES]
    cases = []
    for i, (hyp, refs) in enumerate(CASES):
        h = hyp_tokens[i]
        rs = ref_tokens[i]
        precisions = [modified_precision(rs, h, n) for n in range(1, 5)]
        cases.append({
            "hyp": hyp,
            "refs": refs,
            "hyp_tokens": h,
            "ref_tokens": rs,
            # NLTK returns unnormalized fractions: clipped matches over max(1, n-grams).
            "nltk_matches": [p.numerator for p in precisions],
            "nltk_denominators": [p.denominator for p in precisions],
            "closest_ref_length": closest_ref_length(rs, len(h)),
        })
    everything = list(range(len(CASES)))
    long = [i for i in everything if len(hyp_tokens[i]) >= 4]
    no_4gram = [i for i in long if cases[i]["nltk_matches"][3] == 0]
    method1 = SmoothingFunction().method1
    corpora = {
        "all": {
            "indices": everything,
            "nltk_corpus_bleu": nltk_corpus(everything, hyp_tokens, ref_tokens),
            "mteval_bleu_from_nltk_counts": mteval_from_nltk_counts(everything, cases),
        },
        "long": {
            "indices": long,
            "nltk_corpus_bleu": nltk_corpus(long, hyp_tokens, ref_tokens),
        },
        "no_4gram_match": {
            "indices": no_4gram,
            "nltk_corpus_bleu": nltk_corpus(no_4gram, hyp_tokens, ref_tokens),
            "nltk_corpus_bleu_method1": nltk_corpus(no_4gram, hyp_tokens, ref_tokens, method1),
        },
    }
    # Single-segment corpora with a 4-gram match: NLTK's sentence-level figure.
    singles = {}
    for i in long:
        if cases[i]["nltk_matches"][3] > 0:
            singles[str(i)] = nltk_corpus([i], hyp_tokens, ref_tokens)
    corpora["singles"] = singles
    out = {
        "generator": "tests/eval/make_bleu_reference.py",
        "nltk_version": nltk.__version__,
        "python_version": sys.version.split()[0],
        "scale": "0-100",
        "cases": cases,
        "corpora": corpora,
    }
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(to_json(out))
    print(f"Wrote {OUT}: {len(cases)} cases, all {corpora['all']['nltk_corpus_bleu']:.4f} (NLTK) "
          f"{corpora['all']['mteval_bleu_from_nltk_counts']:.4f} (mteval), "
          f"long {corpora['long']['nltk_corpus_bleu']:.4f}, {len(no_4gram)} without 4-gram match, "
          f"{len(singles)} singles")


if __name__ == "__main__":
    main()
