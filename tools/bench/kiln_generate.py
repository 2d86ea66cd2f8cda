"""Times `kiln generate` on a checkpoint written by tools/bench/hf_generate.py and prints the same
JSON lines as hf_generate.py (impl "kiln generate").

  python3 tools/bench/kiln_generate.py --kiln BUILD/bin/kiln --model DIR --family F
      [--batch 1,16] [--new-tokens 128] [--context 8192,32768] [--context-new-tokens 64]
      [--seed 0] [--log FILE]

Decode (bench "decode"): for each batch size B, the first B rows of DIR/prompts.txt go to a file
DIR/ids-bB.txt (one comma-separated row per line) and kiln runs

  kiln generate --model DIR --input-ids-file DIR/ids-bB.txt --max-new-tokens N
      --dtype bfloat16 --device cuda --stats --print-ids

(stdout discarded). The first kiln call of the run is a warm-up (page cache, driver) and is
measured again. kiln's --stats line on stderr,

  kiln generate: R row(s), P prompt tokens, G generated; first token F ms;
      decode D tokens in S s = X tokens/s; cache C MiB

becomes decode_tokens_per_s = X (D = the tokens after each row's first, S = the steps after the
first token) and first_token_ms = F, comparable with hf_generate.py's B * (N - 1) / (tN - t1).

Long context (bench "dsa_decode_per_token", with --context): one row of C uniform random ids
(seeded, below the config's vocab_size) at batch 1, --context-new-tokens new tokens;
ms_per_token = 1000 * S / (D / R) (one decode step).

Exit status 1 when a kiln call fails or prints no stats line (its stderr tail goes to stderr);
the other measurements still run.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys

STATS = re.compile(
    r"kiln generate: (?P<rows>\d+) row\(s\), (?P<prompt>\d+) prompt tokens, (?P<generated>\d+) generated; "
    r"first token (?P<first_ms>[\d.]+) ms; decode (?P<decode_tokens>\d+) tokens in (?P<decode_s>[\d.]+) s = "
    r"(?P<tps>[\d.]+|inf|nan) tokens/s; cache (?P<cache_mib>[\d.]+) MiB"
)


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def parse_stats(text: str) -> dict | None:
    """The last --stats line in `text` as numbers, or None."""
    found = None
    for line in text.splitlines():
        m = STATS.search(line)
        if m:
            found = m
    if found is None:
        return None
    g = found.groupdict()
    return dict(
        rows=int(g["rows"]),
        prompt_tokens=int(g["prompt"]),
        generated=int(g["generated"]),
        first_token_ms=float(g["first_ms"]),
        decode_tokens=int(g["decode_tokens"]),
        decode_s=float(g["decode_s"]),
        tokens_per_s=float(g["tps"]),
        cache_mib=float(g["cache_mib"]),
    )


def write_rows(path: str, rows: list[list[int]]):
    with open(path, "w") as f:
        for row in rows:
            f.write(",".join(map(str, row)) + "\n")


class Kiln:
    def __init__(self, args):
        self.args = args
        self.warm = False
        self.failed = False

    def run(self, ids_file: str, new_tokens: int, what: str) -> dict | None:
        a = self.args
        cmd = [a.kiln, "generate", "--model", a.model, a.ids_flag, ids_file, "--max-new-tokens", str(new_tokens),
               "--dtype", a.dtype, "--device", a.device, "--stats", "--print-ids"] + a.kiln_arg
        for attempt in ([] if self.warm else ["warm-up"]) + ["measured"]:
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if a.log:
                with open(a.log, "a") as f:
                    f.write(f"$ {' '.join(cmd)}  # {what}, {attempt}, exit {proc.returncode}\n{proc.stderr}\n")
            stats = parse_stats(proc.stderr)
            if proc.returncode != 0 or stats is None:
                log(f"kiln generate failed ({what}, exit {proc.returncode}):")
                log("\n".join(proc.stderr.splitlines()[-10:]))
                self.failed = True
                return None
            self.warm = True
        return stats


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kiln", required=True, help="the kiln executable")
    p.add_argument("--model", required=True, help="checkpoint folder from hf_generate.py")
    p.add_argument("--family", required=True)
    p.add_argument("--batch", default="1,16")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--context", default="", help="comma-separated long-context prompt lengths, batch 1")
    p.add_argument("--context-new-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--device", default="cuda")
    p.add_argument("--ids-flag", default="--input-ids-file", help="kiln's flag for a file of prompt rows")
    p.add_argument("--kiln-arg", action="append", default=[], help="extra kiln argument (repeatable)")
    p.add_argument("--log", help="append every kiln command and its stderr here")
    args = p.parse_args()

    with open(os.path.join(args.model, "prompts.txt")) as f:
        prompts = [[int(x) for x in line.split(",")] for line in f if line.strip()]
    kiln = Kiln(args)
    for b in [int(x) for x in args.batch.split(",") if x]:
        if b > len(prompts):
            log(f"batch {b}: prompts.txt has only {len(prompts)} rows")
            kiln.failed = True
            continue
        ids_file = os.path.join(args.model, f"ids-b{b}.txt")
        write_rows(ids_file, prompts[:b])
        s = kiln.run(ids_file, args.new_tokens, f"batch {b}")
        if s is None:
            continue
        assert s["rows"] == b and s["generated"] == b * args.new_tokens, s
        print(json.dumps({
            "impl": "kiln generate", "bench": "decode", "family": args.family, "batch": b,
            "prompt_len": len(prompts[0]), "new_tokens": args.new_tokens,
            "decode_tokens_per_s": s["tokens_per_s"], "first_token_ms": s["first_token_ms"],
            "decode_s": s["decode_s"], "cache_mib": s["cache_mib"],
        }), flush=True)

    if args.context:
        with open(os.path.join(args.model, "config.json")) as f:
            vocab = json.load(f)["vocab_size"]
        for c in [int(x) for x in args.context.split(",") if x]:
            rng = random.Random(args.seed * 1000003 + c)
            ids_file = os.path.join(args.model, f"ids-ctx{c}.txt")
            write_rows(ids_file, [[rng.randrange(vocab) for _ in range(c)]])
            s = kiln.run(ids_file, args.context_new_tokens, f"context {c}")
            if s is None:
                continue
            assert s["rows"] == 1 and s["prompt_tokens"] == c, s
            print(json.dumps({
                "impl": "kiln generate", "bench": "dsa_decode_per_token", "family": args.family, "context": c,
                "new_tokens": args.context_new_tokens,
                "ms_per_token": 1e3 * s["decode_s"] / (s["decode_tokens"] / s["rows"]),
                "first_token_ms": s["first_token_ms"], "cache_mib": s["cache_mib"],
            }), flush=True)
    sys.exit(1 if kiln.failed else 0)


if __name__ == "__main__":
    main()
