#!/usr/bin/env python3
"""Host model of indexer_topk's radix select (find_cut): passes over a query's whole buffer.

A compaction finds the rank-th largest of the buffer's n score keys (order-preserving uint32 of
the float scores) by counting 16 bins a level; every level counts the whole buffer until the keys
still in the running fit the S-word scratch (and are at most half of n), and then only them. The
counting passes over the whole buffer are what a compaction costs, with one keep pass after them.

Two first levels are compared:
  fitted   16 bins from the buffer's smallest key, as narrow as still cover its largest (kernel
           version 21). Scores of both signs put nearly every key into two bins (the sign), the
           next level into a few binades, so the cut is found at the third or fourth level.
  sampled  bins 1..14 between the (r - 6)-th and (r + 6)-th largest of a strided 32-key sample
           (r: the sample rank of the rank-th largest), bin 0 below, bin 15 above; where the cut
           falls into bin 0 or 15 the fitted level is counted after all
           (tools/bench/experiments/indexer-sampled-cut.patch).

Scores as `kiln bench op --op indexer_topk` draws them: sum over H_I heads of w relu(q . k), q and
k standard normal, w normal / sqrt(H_I D_I). Two cases: the last compaction of a window that fits
the buffer (n = window, rank = topk), and the compactions of a long window streamed 128 keys at a
time from a threshold of 0. Needs numpy (the pinned torch wheel's environment has it).

  tools/bench/cut_model.py [--topk 2048] [--slack 1088] [--heads 32] [--dim 128] [--trials 30]
"""
import argparse

import numpy as np


def order_key(x):
    b = x.astype(np.float32).view(np.uint32).astype(np.int64)
    return np.where((b >> 31) == 1, (~b) & 0xFFFFFFFF, b | 0x80000000).astype(np.int64)


def fit(span):
    """The shift of 16 bins as narrow as still cover span + 1 keys."""
    return max(0, int(span).bit_length() - 4)


def hit_bin(counts, rank):
    """(bin of the rank-th largest, entries in the bins above it)."""
    above = 0
    for b in range(15, -1, -1):
        if above + counts[b] >= rank:
            return b, above
        above += counts[b]
    raise ValueError("rank beyond the entries")


def full_passes(keys, rank, slack, sampled):
    """Counting passes over the whole buffer until the rank-th largest's bin is found."""
    n = len(keys)
    kmin, kmax = int(keys.min()), int(keys.max())
    if kmin == kmax:
        return 0
    passes, bins, running = 0, 16, n
    lo, shift = kmin, fit(kmax - kmin)
    if sampled:
        sample = np.sort(keys[(np.arange(32) * n) >> 5])[::-1]
        r = rank * 32 // n
        top = kmax if r - 6 <= 0 else int(sample[r - 6])
        base = kmin if r + 6 >= 31 else int(sample[r + 6])
        span = top - base
        s = 0 if span == 0 else fit(span)
        if (span >> s) > 13:
            s += 1
        digits = np.where(keys < base, 0, np.minimum((keys - base) >> s, 14) + 1)
        counts = np.bincount(digits, minlength=16)
        passes += 1
        b, above = hit_bin(counts, rank)
        if b not in (0, 15):  # otherwise the fitted level after all
            rank -= above
            lo, running = base + ((b - 1) << s), int(counts[b])
            if running == rank or s == 0:
                return passes
            shift = max(s - 4, 0)
            bins = 1 << (s - shift)
    src, listed = keys, False
    while True:
        list_now = not listed and running <= slack and 2 * running <= n
        if not listed:
            passes += 1
        inside = src[(src >= lo) & (src < lo + (bins << shift))]
        counts = np.bincount((inside - lo) >> shift, minlength=16)
        b, above = hit_bin(counts, rank)
        rank -= above
        lo += b << shift
        running = int(counts[b])
        if list_now:
            src, listed = inside, True
        if running == rank or shift == 0:
            return passes
        wider = shift
        shift = max(shift - 4, 0)
        bins = 1 << (wider - shift)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--topk", type=int, default=2048)
    ap.add_argument("--slack", type=int, default=1088)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--trials", type=int, default=30)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    capacity = args.topk + args.slack

    def scores(window):
        q = rng.standard_normal((args.heads, args.dim))
        k = rng.standard_normal((window, args.dim))
        w = rng.standard_normal(args.heads) / np.sqrt(args.heads * args.dim)
        return order_key((np.maximum(q @ k.T, 0) * w[:, None]).sum(0).astype(np.float32))

    print(f"last compaction of a window that fits the buffer (rank {args.topk}, S {args.slack})")
    for window in sorted({args.topk + capacity // 20, (args.topk + capacity) // 2, capacity}):
        fitted, sampled = [], []
        for _ in range(args.trials):
            keys = scores(window)
            fitted.append(full_passes(keys, args.topk, args.slack, False))
            sampled.append(full_passes(keys, args.topk, args.slack, True))
        print(f"  window {window}: whole-buffer counting passes fitted {np.mean(fitted):.2f}, "
              f"sampled {np.mean(sampled):.2f} (most {max(sampled)})")
    print("compactions of a long window streamed from a threshold of 0")
    for window in (8 * args.topk, 16 * args.topk):
        fitted, sampled = [], []
        for _ in range(max(1, args.trials // 5)):
            keys = scores(window)
            buffer, thr = np.empty(0, dtype=np.int64), -1
            for j in range(0, window, 128):
                block = keys[j:j + 128]
                buffer = np.concatenate([buffer, block[block > thr]])
                if (len(buffer) > capacity - 128 or j + 128 >= window) and len(buffer) > args.topk:
                    fitted.append(full_passes(buffer, args.topk, args.slack, False))
                    sampled.append(full_passes(buffer, args.topk, args.slack, True))
                    buffer = np.sort(buffer)[::-1][:args.topk]
                    thr = int(buffer[-1])
        print(f"  window {window}: {len(fitted)} compactions, whole-buffer counting passes each "
              f"fitted {np.mean(fitted):.2f}, sampled {np.mean(sampled):.2f}")


if __name__ == "__main__":
    main()
