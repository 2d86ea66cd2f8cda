#!/usr/bin/env python3
"""Where a kernel's time goes, from Nsight Compute's per-instruction page.

  ncu --section SourceCounters --import-source no -o REPORT ...
  ncu -i REPORT.ncu-rep --page source --csv --print-source sass > SASS.csv
  tools/bench/ncu_sass_blocks.py SASS.csv [--top N]

Consecutive instructions executed equally often form a block (a loop body or a straight run);
the blocks are listed by their share of the warp stall samples (where warps spent their time),
with their share of the executed instructions, the instructions per execution and the first
instructions, so that a loop costing a fifth of the kernel stands out without reading the SASS.
"""
import argparse
import csv
import gzip
import sys


def read(path):
    """(address, source, stall samples, executed) per instruction; PATH may be gzipped (.gz)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        rows = list(csv.reader(f))
    header = next(i for i, r in enumerate(rows) if "Address" in r and "Source" in r)
    names = rows[header]
    col = {n: names.index(n) for n in names}
    need = ["Address", "Source", "Warp Stall Sampling (All Samples)", "Instructions Executed"]
    missing = [n for n in need if n not in col]
    if missing:
        sys.exit(f"{path}: no column {', '.join(missing)}; export it with "
                 "`ncu -i REPORT --page source --csv --print-source sass`")
    out = []
    for r in rows[header + 1:]:
        if len(r) < len(names) or not r[col["Address"]].strip():
            continue
        out.append((int(r[col["Address"]], 16), r[col["Source"]].strip(),
                    int(r[col["Warp Stall Sampling (All Samples)"]] or 0),
                    int(r[col["Instructions Executed"]] or 0)))
    if not out:
        sys.exit(f"{path}: no instructions found")
    return out


def blocks(instructions):
    out = []
    for ins in instructions:
        if out and out[-1]["executed"] == ins[3]:
            out[-1]["items"].append(ins)
        else:
            out.append({"executed": ins[3], "items": [ins]})
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    instructions = read(args.csv)
    base = instructions[0][0]
    samples = sum(i[2] for i in instructions) or 1
    executed = sum(i[3] for i in instructions) or 1
    print(f"{len(instructions)} instructions, {executed:,} executed (warp level), "
          f"{samples:,} stall samples")
    print(f"{'offset':>13} {'samples':>8} {'instr':>7} {'length':>6} {'runs':>12}  first instructions")
    ranked = sorted(blocks(instructions), key=lambda b: -sum(i[2] for i in b["items"]))
    for b in ranked[:args.top]:
        items = b["items"]
        s = sum(i[2] for i in items)
        e = sum(i[3] for i in items)
        first = "; ".join(i[1].split(";")[0] for i in items[:3])
        print(f"{items[0][0] - base:06x}-{items[-1][0] - base:06x} {100 * s / samples:7.1f}% "
              f"{100 * e / executed:6.1f}% {len(items):6d} {b['executed']:12,}  {first[:90]}")


if __name__ == "__main__":
    main()
