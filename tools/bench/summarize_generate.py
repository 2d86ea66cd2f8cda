"""Markdown tables for tools/bench/RESULTS.md from the generation rows of a bench.jsonl
(tools/bench/hf_generate.py and tools/bench/kiln_generate.py output; other rows are skipped).

  python3 tools/bench/summarize_generate.py OUT/bench.jsonl [--date YYYY-MM-DD] [--device NAME]

--device defaults to the first field of gpu.txt next to bench.jsonl (tools/gpu writes it), --date
to today. Table 1: one row per (family, batch, prompt length, new tokens) with kiln's and HF's
decode tokens/s and kiln / HF; a side missing from the file shows as "—". Table 2: kiln's DSA
decode time per token at each long context.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os

FAMILY_ORDER = ("glm4_moe", "glm_moe_dsa", "nemotron_v3")


def fmt(x, digits=1):
    return "—" if x is None else f"{x:,.{digits}f}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results")
    p.add_argument("--date", default=datetime.date.today().isoformat())
    p.add_argument("--device")
    args = p.parse_args()
    device = args.device
    gpu_txt = os.path.join(os.path.dirname(os.path.abspath(args.results)), "gpu.txt")
    if device is None and os.path.exists(gpu_txt):
        device = open(gpu_txt).readline().split(",")[0].strip()
    device = device or "?"

    decode, dsa = {}, []
    for line in open(args.results):
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if r.get("bench") == "decode" and r.get("impl") in ("kiln generate", "hf generate"):
            key = (r["family"], r["batch"], r["prompt_len"], r["new_tokens"])
            decode.setdefault(key, {})[r["impl"]] = r
        elif r.get("bench") == "dsa_decode_per_token":
            dsa.append(r)

    def order(key):
        fam = key[0]
        return (FAMILY_ORDER.index(fam) if fam in FAMILY_ORDER else len(FAMILY_ORDER), fam) + key[1:]

    print("| date | device | family | batch | prompt | new tokens | kiln tok/s | HF tok/s | kiln / HF "
          "| kiln first token ms | HF first token ms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for key in sorted(decode, key=order):
        k, h = decode[key].get("kiln generate"), decode[key].get("hf generate")
        kt = k and k["decode_tokens_per_s"]
        ht = h and h["decode_tokens_per_s"]
        ratio = f"{kt / ht:.2f}" if kt and ht else "—"
        fam, batch, prompt, new = key
        if (h or {}).get("tiny"):
            fam += " (tiny)"
        print(f"| {args.date} | {device} | {fam} | {batch} | {prompt} | {new} | {fmt(kt)} | {fmt(ht)} | {ratio} "
              f"| {fmt(k and k['first_token_ms'])} | {fmt(h and h['first_token_ms'])} |")
    if dsa:
        print()
        print("| date | device | family | context | new tokens | kiln decode ms / token | kiln first token ms "
              "| cache MiB |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in sorted(dsa, key=lambda r: (r["family"], r["context"])):
            print(f"| {args.date} | {device} | {r['family']} | {r['context']:,} | {r['new_tokens']} "
                  f"| {fmt(r['ms_per_token'], 2)} | {fmt(r.get('first_token_ms'))} | {fmt(r.get('cache_mib'))} |")


if __name__ == "__main__":
    main()
