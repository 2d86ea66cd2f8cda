#!/usr/bin/env python3
"""Writes framework/io/unicode_tables.inc: the Unicode data kiln's tokenizer needs to reproduce HF
`tokenizers` exactly.

HF `tokenizers` 0.23.3 does not use one Unicode version. Its regexes run on Oniguruma with
Unicode 16.0 tables; its NFC normalizer comes from the `unicode-normalization-alignments` crate,
whose tables are years older. kiln matches with PCRE2 10.42 (Unicode 14.0, the same tables as
Python 3.11's `unicodedata`). So every table here is measured on the installed `tokenizers` itself,
code point by code point, and Python's `unicodedata` only serves as the starting guess that the
measurement confirms or corrects:

- `kWhiteSpace`: what Oniguruma's `\\s` matches (PCRE2's `\\s` also matches U+180E).
- `kCategory*`: per general category, the code points Oniguruma puts in it that Unicode 14.0 does
  not (added after 14.0), or, where a code point left the category since, the full list.
- `kCombiningClasses`, `kDecompositions`, `kCompositions`: canonical combining classes, full
  canonical decompositions and primary composites as `tokenizers`' NFC sees them (it knows none
  of the combining marks or compositions added in the last several Unicode versions).
- `kAsciiMultiCharFolds`: ASCII strings some character case-folds to (`ss` for U+00DF), which
  Oniguruma matches case-insensitively and PCRE2 does not.

  ~/.cache/kiln/torch-2.11.0/bin/python tools/make_unicode_tables.py           # rewrite the file
  ~/.cache/kiln/torch-2.11.0/bin/python tools/make_unicode_tables.py --check   # compare only

A run takes a few minutes (it asks tokenizers about every code point, and checks the NFC tables
on 200000 random sequences).
"""
import argparse
import random
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "framework/io/unicode_tables.inc"
TOKENIZERS_VERSION = "0.23.3"
UNICODE_VERSION = "14.0.0"  # Python 3.11's unicodedata == PCRE2 10.42's tables

CATEGORIES = ["Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps",
              "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp"]
GROUPS = ["L", "M", "N", "P", "S", "Z"]
HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3


def fail(message):
    sys.exit(f"make_unicode_tables: {message}")


def code_points():
    return [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]


def ranges(points):
    out = []
    for c in sorted(points):
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


class Probe:
    """Asks the installed `tokenizers` what it does, many questions per call."""

    def __init__(self):
        from tokenizers import Regex, normalizers, pre_tokenizers
        self.regex, self.pre_tokenizers = Regex, pre_tokenizers
        self.nfc, self.nfd = normalizers.NFC(), normalizers.NFD()
        self.points = code_points()
        self.everything = "".join(map(chr, self.points))

    def members(self, pattern):
        """Code points the regex PATTERN (one character wide) matches."""
        split = self.pre_tokenizers.Split(self.regex(pattern), behavior="removed")
        kept = set()
        for piece, _ in split.pre_tokenize_str(self.everything):
            kept.update(map(ord, piece))
        return set(self.points) - kept

    def normalize_many(self, normalizer, strings):
        """NORMALIZER applied to each string on its own (joined by a newline, which is a starter
        that never composes, so the strings cannot interact)."""
        assert not any("\n" in s for s in strings)
        out = normalizer.normalize_str("\n".join(strings)).split("\n")
        assert len(out) == len(strings)
        return out


def category_tables(probe):
    tables = {}
    for cat in CATEGORIES + GROUPS:
        onig = probe.members(r"\p{%s}" % cat)
        local = {c for c in probe.points if unicodedata.category(chr(c)).startswith(cat)}
        if local - onig:
            tables[cat] = ("full", ranges(onig))  # something left the category since 14.0
        else:
            tables[cat] = ("add", ranges(onig - local))
    white = probe.members(r"\s")
    if white != {c for c in probe.points if chr(c).isspace() and c not in range(0x1C, 0x20)}:
        fail("Oniguruma's \\s is not the White_Space property; check the tables by hand")
    return tables, ranges(white)


def combining_classes(probe, decomposes):
    """ccc as `tokenizers` reorders: Python's value, confirmed against reference marks of every
    class, or 0 where `tokenizers` treats the mark as a starter (unknown to its tables)."""
    candidates = [c for c in probe.points if c not in decomposes and chr(c) != "\n" and
                  not HANGUL_FIRST <= c <= HANGUL_LAST]
    # Zero or not: "a" + U+0301 (230) + c reorders iff 0 < ccc < 230; "a" + c + U+0334 (1)
    # reorders iff ccc > 1.
    first = probe.normalize_many(probe.nfd, ["a\u0301" + chr(c) for c in candidates])
    second = probe.normalize_many(probe.nfd, ["a" + chr(c) + "\u0334" for c in candidates])
    nonzero = []
    for c, x, y in zip(candidates, first, second):
        if x != "a\u0301" + chr(c) or y != "a" + chr(c) + "\u0334":
            nonzero.append(c)
    for c in nonzero:
        if unicodedata.combining(chr(c)) == 0:
            fail(f"U+{c:04X} reorders in tokenizers but has ccc 0 in Unicode {UNICODE_VERSION}")
    ccc = {c: unicodedata.combining(chr(c)) for c in nonzero}
    # One reference mark per class; every mark must sort against each of them as its class says.
    reference = {}
    for c, k in sorted(ccc.items()):
        reference.setdefault(k, c)
    questions, expected = [], []
    for c, k in ccc.items():
        for v, r in reference.items():
            if r == c:
                continue
            questions.append("a" + chr(r) + chr(c))
            expected.append("a" + (chr(c) + chr(r) if v > k else chr(r) + chr(c)))
            questions.append("a" + chr(c) + chr(r))
            expected.append("a" + (chr(r) + chr(c) if k > v else chr(c) + chr(r)))
    answers = probe.normalize_many(probe.nfd, questions)
    wrong = [q for q, a, e in zip(questions, answers, expected) if a != e]
    if wrong:
        fail(f"combining classes disagree with tokenizers on {len(wrong)} pairs, e.g. "
             f"{[hex(ord(x)) for x in wrong[0]]}")
    return ccc


def normalization_tables(probe):
    points = [c for c in probe.points if c != ord("\n")]
    nfd = probe.normalize_many(probe.nfd, [chr(c) for c in points])
    decompositions = {}
    for c, d in zip(points, nfd):
        if d != chr(c) and not HANGUL_FIRST <= c <= HANGUL_LAST:
            decompositions[c] = [ord(x) for x in d]
    ccc = combining_classes(probe, decompositions)
    # Primary composites: a decomposable character whose canonical mapping is a pair and which
    # tokenizers' NFC builds back from that pair.
    pairs = []
    for c in decompositions:
        mapping = unicodedata.decomposition(chr(c))
        if not mapping or mapping.startswith("<"):
            fail(f"U+{c:04X} decomposes in tokenizers but has no canonical mapping")
        parts = [int(x, 16) for x in mapping.split()]
        if len(parts) == 2:
            pairs.append((parts[0], parts[1], c))
    composed = probe.normalize_many(probe.nfc, [chr(a) + chr(b) for a, b, _ in pairs])
    compositions = sorted((a, b, c) for (a, b, c), x in zip(pairs, composed) if x == chr(c))
    return ccc, decompositions, compositions


def nfc(text, ccc, decompositions, compositions):
    """The algorithm framework/io/unicode.cpp implements, on these tables: full canonical
    decomposition (Hangul by arithmetic), canonical ordering, then canonical composition."""
    pair = {(a, b): c for a, b, c in compositions}
    out = []
    for ch in text:
        c = ord(ch)
        if HANGUL_FIRST <= c <= HANGUL_LAST:
            s = c - HANGUL_FIRST
            out += [0x1100 + s // 588, 0x1161 + (s % 588) // 28] + ([0x11A7 + s % 28] if s % 28 else [])
        else:
            out += decompositions.get(c, [c])
    i = 0
    while i < len(out):  # stable sort of each run of non-starters by class
        j = i
        while j < len(out) and ccc.get(out[j], 0):
            j += 1
        if j > i:
            out[i:j] = sorted(out[i:j], key=lambda x: ccc[x])
            i = j
        else:
            i += 1
    result, starter, last_class = [], None, -1
    for c in out:
        k = ccc.get(c, 0)
        adjacent = starter is not None and len(result) - 1 == starter
        # Not blocked: right after the starter, or every mark since has a lower class.
        if starter is not None and (adjacent or last_class < k):
            s = result[starter]
            if 0x1100 <= s <= 0x1112 and 0x1161 <= c <= 0x1175:
                result[starter] = HANGUL_FIRST + ((s - 0x1100) * 21 + c - 0x1161) * 28
                continue
            if (HANGUL_FIRST <= s <= HANGUL_LAST and (s - HANGUL_FIRST) % 28 == 0 and
                    0x11A8 <= c <= 0x11C2):
                result[starter] = s + c - 0x11A7
                continue
            if (s, c) in pair:
                result[starter] = pair[(s, c)]
                continue
        if k == 0:
            starter, last_class = len(result), 0
        else:
            last_class = k
        result.append(c)
    return "".join(map(chr, result))


def check_nfc(probe, ccc, decompositions, compositions):
    """The tables reproduce tokenizers' NFC on every code point, every decomposition, and random
    mixes of starters, marks of every class and Hangul jamo."""
    points = [c for c in probe.points if c != ord("\n")]
    strings = [chr(c) for c in points]
    strings += ["".join(map(chr, d)) for d in decompositions.values()]
    rng = random.Random(6)
    pool = sorted({c for d in decompositions.values() for c in d} | set(ccc) |
                  {a for a, _, _ in compositions} | set(range(0x1100, 0x1113)) |
                  set(range(0x1161, 0x1176)) | set(range(0x11A7, 0x11C3)) | {0xAC00, 0xAC1C, 0x41})
    strings += ["".join(chr(rng.choice(pool)) for _ in range(rng.randint(2, 8)))
                for _ in range(200000)]
    expected = probe.normalize_many(probe.nfc, strings)
    for s, e in zip(strings, expected):
        got = nfc(s, ccc, decompositions, compositions)
        if got != e:
            fail(f"NFC of {[hex(ord(x)) for x in s]}: tables give {[hex(ord(x)) for x in got]}, "
                 f"tokenizers {[hex(ord(x)) for x in e]}")


def ascii_multi_char_folds():
    folds = set()
    for c in code_points():
        f = chr(c).casefold()
        if len(f) > 1 and f.isascii():
            folds.add(f)
    return sorted(folds)


def hex_ranges(rs, per_line=6):
    items = [f"{{0x{a:04X}, 0x{b:04X}}}" for a, b in rs]
    return "\n".join("    " + ", ".join(items[i:i + per_line]) + ","
                     for i in range(0, len(items), per_line))


def render(tables, white, ccc, decompositions, compositions, folds):
    lines = [
        "// Generated by tools/make_unicode_tables.py from HF tokenizers "
        f"{TOKENIZERS_VERSION} (measured) and",
        f"// Unicode {UNICODE_VERSION} (Python's unicodedata, PCRE2 10.42's tables). Do not edit; "
        "run the script.",
        "// Included once, by framework/io/unicode.cpp, which declares the entry types.",
        "",
        "// Oniguruma's \\s (the White_Space property).",
        "constexpr CodeRange kWhiteSpace[] = {",
        hex_ranges(white),
        "};",
        "",
        "// Per general category: kAdd = code points Oniguruma (Unicode 16.0) puts in the category",
        "// beyond PCRE2's Unicode 14.0; kReplace = the whole category (a code point left it).",
    ]
    for cat in CATEGORIES + GROUPS:
        kind, rs = tables[cat]
        lines.append(f"constexpr CodeRange kCategory{cat}[] = {{")
        lines.append(hex_ranges(rs) if rs else "    {0x110000, 0x110000}, // none")
        lines.append("};")
    lines.append("constexpr CategoryTable kCategories[] = {")
    for cat in CATEGORIES + GROUPS:
        kind, rs = tables[cat]
        count = len(rs)
        lines.append(f"    {{\"{cat}\", CategoryTable::{'kReplace' if kind == 'full' else 'kAdd'}, "
                     f"std::span(kCategory{cat}, {count})}},")
    lines.append("};")
    lines += ["", "// Canonical combining classes (non-zero) as tokenizers' NFC orders marks.",
              "constexpr CombiningClassRange kCombiningClasses[] = {"]
    runs = []
    for c in sorted(ccc):
        if runs and runs[-1][1] == c - 1 and runs[-1][2] == ccc[c]:
            runs[-1][1] = c
        else:
            runs.append([c, c, ccc[c]])
    items = [f"{{0x{a:04X}, 0x{b:04X}, {k}}}" for a, b, k in runs]
    lines += ["    " + ", ".join(items[i:i + 4]) + "," for i in range(0, len(items), 4)]
    lines += ["};", "",
              "// Full canonical decompositions (Hangul syllables excluded: arithmetic), by code point:",
              "// {code point, first, second, third, fourth} with 0 for unused.",
              "constexpr DecompositionEntry kDecompositions[] = {"]
    items = []
    for c in sorted(decompositions):
        d = decompositions[c]
        if len(d) > 4:
            fail(f"U+{c:04X} decomposes into {len(d)} code points; widen DecompositionEntry")
        d = d + [0] * (4 - len(d))
        items.append("{" + ", ".join(f"0x{x:04X}" if x else "0" for x in [c] + d) + "}")
    lines += ["    " + ", ".join(items[i:i + 3]) + "," for i in range(0, len(items), 3)]
    lines += ["};", "", "// Primary composites {first, second, composite}, sorted by (first, second).",
              "constexpr CompositionEntry kCompositions[] = {"]
    items = [f"{{0x{a:04X}, 0x{b:04X}, 0x{c:04X}}}" for a, b, c in compositions]
    lines += ["    " + ", ".join(items[i:i + 4]) + "," for i in range(0, len(items), 4)]
    lines += ["};", "", "// ASCII strings that a single character case-folds to.",
              "constexpr std::string_view kAsciiMultiCharFolds[] = {",
              "    " + ", ".join(f"\"{f}\"" for f in folds) + ",", "};", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the file, write nothing")
    args = parser.parse_args()
    try:
        import tokenizers
    except ImportError:
        fail(f"needs tokenizers=={TOKENIZERS_VERSION} (pip install transformers==5.17.0)")
    if tokenizers.__version__ != TOKENIZERS_VERSION:
        fail(f"needs tokenizers {TOKENIZERS_VERSION}, found {tokenizers.__version__}")
    if unicodedata.unidata_version != UNICODE_VERSION:
        fail(f"needs Python's unicodedata {UNICODE_VERSION} (Python 3.11), "
             f"found {unicodedata.unidata_version}")
    probe = Probe()
    tables, white = category_tables(probe)
    ccc, decompositions, compositions = normalization_tables(probe)
    check_nfc(probe, ccc, decompositions, compositions)
    text = render(tables, white, ccc, decompositions, compositions, ascii_multi_char_folds())
    if args.check:
        if OUT.read_text() != text:
            fail(f"{OUT.relative_to(ROOT)} differs from what the script writes; rerun it")
        print(f"{OUT.relative_to(ROOT)}: up to date")
        return
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}: {len(ccc)} combining marks, {len(decompositions)} "
          f"decompositions, {len(compositions)} compositions")


if __name__ == "__main__":
    main()
