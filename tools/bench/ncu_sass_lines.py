#!/usr/bin/env python3
"""Where a kernel's time goes, by source line and region, from Nsight Compute's per-instruction page.

  ncu --section SourceCounters --import-source no -o REPORT ...        (on the GPU machine)
  ncu -i REPORT.ncu-rep --page source --csv --print-source sass > SASS.csv
  tools/cuda_sass --lines plugins/backends/cuda/KERNEL.cu > LINES.sass  (here: the same nvcc)
  tools/bench/ncu_sass_lines.py SASS.csv LINES.sass --kernel ILi8ELb0E \\
      [--source plugins/backends/cuda/KERNEL.cu --region NAME=TEXT ...] [--top N]

The profiled kernel is matched by its offsets to the function of LINES.sass whose name holds
--kernel (a template's instantiation, e.g. ILi8ELb0E); every instruction then has the source line
nvdisasm gives it. Prints the stall samples and executed instructions per source line (the
costliest --top), and with --region, per region: a region starts at the first line of --source
that holds TEXT and runs to the next region's start; an instruction from another file (an inlined
helper of a header) counts to the region of the instruction before it. It stops when the opcodes
at the same offsets disagree for more than 1% of the instructions (the local build is not the
profiled one).
"""
import argparse
import collections
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ncu_sass_blocks import read  # noqa: E402  (the same CSV reader)


def sass_lines(path, kernel):
    """{offset: (opcode, file, line)} of the one function whose name holds `kernel`."""
    functions = {}
    name = None
    where = (None, 0)
    with open(path) as f:
        for text in f:
            head = re.match(r"^\.text\.(\S+):", text)
            if head:
                name = head.group(1)
                functions[name] = {}
                where = (None, 0)
                continue
            loc = re.search(r'//## File "(.*)", line (\d+)', text)
            if loc:
                where = (os.path.basename(loc.group(1)), int(loc.group(2)))
                continue
            ins = re.match(r"\s*/\*([0-9a-f]{4,6})\*/\s*(.*?)\s*;", text)
            if ins and name is not None:
                functions[name][int(ins.group(1), 16)] = (opcode(ins.group(2)),) + where
    hits = [n for n in functions if kernel in n]
    if len(hits) != 1:
        sys.exit(f"{path}: {len(hits)} functions hold '{kernel}' (expected one of: "
                 f"{', '.join(sorted(functions)) or 'none: was it made with --lines?'})")
    return functions[hits[0]]


def opcode(source):
    words = source.split()
    if words and words[0].startswith("@"):
        words = words[1:]
    return words[0].split(".")[0] if words else ""


def regions_of(source, specs):
    """[(first line, name)] sorted, from NAME=TEXT specs against the source file's lines."""
    with open(source) as f:
        lines = f.read().splitlines()
    out = []
    for spec in specs:
        name, sep, text = spec.partition("=")
        if not sep or not text:
            sys.exit(f"--region '{spec}': expected NAME=TEXT")
        hit = next((i + 1 for i, line in enumerate(lines) if text in line), None)
        if hit is None:
            sys.exit(f"--region '{spec}': no line of {source} holds '{text}'")
        out.append((hit, name))
    return sorted(out), lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv")
    parser.add_argument("sass", help="tools/cuda_sass --lines output of the same source")
    parser.add_argument("--kernel", required=True, help="a substring of the function's name")
    parser.add_argument("--source", help="the kernel's .cu file (line texts and regions)")
    parser.add_argument("--region", action="append", default=[], help="NAME=TEXT, repeatable")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    if args.region and not args.source:
        parser.error("--region needs --source")
    profiled = read(args.csv)
    local = sass_lines(args.sass, args.kernel)
    base = profiled[0][0]
    differ = sum(1 for a, src, _, _ in profiled
                 if local.get(a - base, ("",))[0] != opcode(src))
    if differ > len(profiled) // 100:
        sys.exit(f"{differ} of {len(profiled)} instructions differ between {args.csv} and "
                 f"{args.sass}: compile the same source with the same nvcc")
    starts, text = regions_of(args.source, args.region) if args.region else ([], [])
    source_name = os.path.basename(args.source) if args.source else None
    by_line = collections.Counter()
    by_line_ins = collections.Counter()
    by_region = collections.Counter()
    by_region_ins = collections.Counter()
    region = "(before the first region)"
    for a, _, samples, executed in profiled:
        _, file, line = local.get(a - base, ("", None, 0))
        by_line[(file, line)] += samples
        by_line_ins[(file, line)] += executed
        if file == source_name:
            region = next((n for first, n in reversed(starts) if line >= first),
                          "(before the first region)")
        by_region[region] += samples
        by_region_ins[region] += executed
    samples = sum(by_line.values()) or 1
    executed = sum(by_line_ins.values()) or 1
    print(f"{len(profiled)} instructions ({differ} opcodes differ), {executed:,} executed (warp "
          f"level), {samples:,} stall samples")
    if starts:
        print(f"\n{'region':28} {'samples':>8} {'instr':>7}")
        for name, s in by_region.most_common():
            print(f"{name:28} {100 * s / samples:7.1f}% {100 * by_region_ins[name] / executed:6.1f}%")
    print(f"\n{'line':>28} {'samples':>8} {'instr':>7}")
    for (file, line), s in by_line.most_common(args.top):
        where = f"{file}:{line}" if file else "(no line)"
        code = text[line - 1].strip()[:70] if file == source_name and 0 < line <= len(text) else ""
        print(f"{where:>28} {100 * s / samples:7.1f}% {100 * by_line_ins[(file, line)] / executed:6.1f}%"
              f"  {code}")


if __name__ == "__main__":
    main()
