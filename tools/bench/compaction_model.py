#!/usr/bin/env python3
"""Host model of indexer_topk's candidate buffers: how often a CTA's queries compact.

The cuda kernel (plugins/backends/cuda/indexer_topk.cu) keeps, per query, a buffer of topk + S
candidates: a score enters it when it is above the query's threshold, and the buffer compacts to
its topk largest (raising the threshold to the topk-th) before a 64-key block could overflow it.
The CTA's warps meet at a barrier every block, so a compaction holds the whole CTA; what costs
time is the largest compaction of each block, summed over the blocks. With gang compaction
(kernel version 4) a warp that must compact at its next block says so at the barrier and every
query holding more than S / 4 extra entries compacts at that block too.

With --sampled (kernel version 12) each query's threshold starts at the rank-th largest of a
strided sample of the stream (sample_blocks in the kernel: one 64-key block per 2048 keys, a power
of two up to 16; the rank whose expected share less 4 standard deviations still holds topk keys)
instead of admitting every key until the buffer first fills.

This replays that bookkeeping on random normal scores (the same stream statistics for each of
the CTA's queries, independent draws) and prints, without and with gang compaction: the blocks
with a compaction, the compactions (the last one after the stream included), the keys compacted
in all, the serialized keys (per block, the largest buffer compacted, summed) and the keys
appended per query. Usage:

  tools/bench/compaction_model.py [--keys 32768] [--topk 2048] [--slack 1024] [--queries 8]
                                  [--sampled]
"""
import argparse
import heapq
import math
import random

BLOCK = 64  # keys per block: the kernel's wgmma N


def sample_blocks(n, topk, capacity):
    """The kernel's sample_blocks: (blocks, rank), blocks 0 where it does not sample."""
    blocks = 16
    while blocks > 0 and (blocks * 2048 > n or blocks * BLOCK > capacity):
        blocks //= 2
    if n <= capacity or blocks < 1:
        return 0, 0
    m = blocks * BLOCK
    f = topk / n
    for r in range(1 + int(f * (m + 1)), m + 1):
        share = r / (m + 1)
        if share - 4 * math.sqrt(share * (1 - share) / (m + 2)) < f:
            continue
        if share * n + m >= topk * (1 + math.log(1 / f)):
            return 0, 0
        return blocks, r
    return 0, 0


def replay(keys, topk, slack, queries, gang_on, sampled, seed):
    rng = random.Random(seed)
    capacity = topk + slack
    streams = [[rng.gauss(0.0, 1.0) for _ in range(keys)] for _ in range(queries)]
    buffers = [[] for _ in range(queries)]
    thresholds = [float("-inf")] * queries
    blocks, rank = sample_blocks(keys, topk, capacity) if sampled else (0, 0)
    if blocks:
        m = blocks * BLOCK
        for q in range(queries):
            sample = sorted((streams[q][(2 * i + 1) * keys // (2 * m)] for i in range(m)),
                            reverse=True)
            thresholds[q] = math.nextafter(sample[rank - 1], -math.inf)  # admits that score
    need = [False] * queries
    stats = {"blocks": 0, "compactions": 0, "keys": 0, "serialized": 0, "appended": 0}
    for b in range(keys // BLOCK):
        gang = gang_on and any(need)
        largest = 0
        for q in range(queries):
            size = len(buffers[q])
            if size > capacity - BLOCK or (gang and size > topk + slack // 4):
                stats["compactions"] += 1
                stats["keys"] += size
                largest = max(largest, size)
                buffers[q] = heapq.nlargest(topk, buffers[q])
                thresholds[q] = buffers[q][-1]
            for score in streams[q][b * BLOCK:(b + 1) * BLOCK]:
                if score > thresholds[q]:
                    buffers[q].append(score)
                    stats["appended"] += 1
            need[q] = len(buffers[q]) > capacity - BLOCK
        if largest:
            stats["blocks"] += 1
            stats["serialized"] += largest
    largest = 0
    for q in range(queries):  # the last compaction (a misled sample would stream again)
        if len(buffers[q]) > topk:
            stats["compactions"] += 1
            stats["keys"] += len(buffers[q])
            largest = max(largest, len(buffers[q]))
    stats["serialized"] += largest
    stats["appended"] //= queries
    return stats


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=32768, help="keys a query sees")
    parser.add_argument("--topk", type=int, default=2048)
    parser.add_argument("--slack", type=int, default=1024, help="S, candidate slots past topk")
    parser.add_argument("--queries", type=int, default=8, help="queries per CTA")
    parser.add_argument("--sampled", action="store_true",
                        help="start each threshold from the kernel's sample (version 12)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.keys < BLOCK or args.topk < 1 or args.slack < BLOCK or args.queries < 1:
        parser.error("need --keys >= 64, --topk >= 1, --slack >= 64 and --queries >= 1")
    print(f"keys {args.keys}, topk {args.topk}, S {args.slack}, {args.queries} queries per CTA"
          f"{', sampled thresholds' if args.sampled else ''}")
    for gang_on in (False, True):
        s = replay(args.keys, args.topk, args.slack, args.queries, gang_on, args.sampled,
                   args.seed)
        name = "gang" if gang_on else "one by one"
        print(f"{name:10}  blocks with a compaction {s['blocks']:4}  compactions {s['compactions']:4}"
              f"  keys compacted {s['keys']:7}  serialized keys {s['serialized']:7}"
              f"  appended per query {s['appended']:6}")


if __name__ == "__main__":
    main()
