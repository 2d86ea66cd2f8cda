#!/usr/bin/env python3
"""Host model of indexer_topk's candidate buffers: how often a CTA's queries compact.

The cuda kernel (plugins/backends/cuda/indexer_topk.cu) keeps, per query, a buffer of topk + S
candidates: a score enters it when it is above the query's threshold, and the buffer compacts to
its topk largest (raising the threshold to the topk-th) before a 64-key block could overflow it.
The CTA's warps meet at a barrier every block, so a compaction holds the whole CTA; what costs
time is the largest compaction of each block, summed over the blocks. With gang compaction
(kernel version 4) a warp that must compact at its next block says so at the barrier and every
query holding more than S / 4 extra entries compacts at that block too.

This replays that bookkeeping on random normal scores (the same stream statistics for each of
the CTA's queries, independent draws) and prints, without and with gang compaction: the blocks
with a compaction, the compactions, the keys compacted in all, and the serialized keys (per
block, the largest buffer compacted, summed). Usage:

  tools/bench/compaction_model.py [--keys 32768] [--topk 2048] [--slack 1024] [--queries 8]
"""
import argparse
import heapq
import random

BLOCK = 64  # keys per block: the kernel's wgmma N


def replay(keys, topk, slack, queries, gang_on, seed):
    rng = random.Random(seed)
    capacity = topk + slack
    buffers = [[] for _ in range(queries)]
    thresholds = [float("-inf")] * queries
    need = [False] * queries
    stats = {"blocks": 0, "compactions": 0, "keys": 0, "serialized": 0}
    for _ in range(keys // BLOCK):
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
            for _ in range(BLOCK):
                score = rng.gauss(0.0, 1.0)
                if score > thresholds[q]:
                    buffers[q].append(score)
            need[q] = len(buffers[q]) > capacity - BLOCK
        if largest:
            stats["blocks"] += 1
            stats["serialized"] += largest
    return stats


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=32768, help="keys a query sees")
    parser.add_argument("--topk", type=int, default=2048)
    parser.add_argument("--slack", type=int, default=1024, help="S, candidate slots past topk")
    parser.add_argument("--queries", type=int, default=8, help="queries per CTA")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.keys < BLOCK or args.topk < 1 or args.slack < BLOCK or args.queries < 1:
        parser.error("need --keys >= 64, --topk >= 1, --slack >= 64 and --queries >= 1")
    print(f"keys {args.keys}, topk {args.topk}, S {args.slack}, {args.queries} queries per CTA")
    for gang_on in (False, True):
        s = replay(args.keys, args.topk, args.slack, args.queries, gang_on, args.seed)
        name = "gang" if gang_on else "one by one"
        print(f"{name:10}  blocks with a compaction {s['blocks']:4}  compactions {s['compactions']:4}"
              f"  keys compacted {s['keys']:7}  serialized keys {s['serialized']:7}")


if __name__ == "__main__":
    main()
