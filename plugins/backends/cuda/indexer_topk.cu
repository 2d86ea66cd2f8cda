// `indexer_topk` on Hopper: the lightning indexer's scores and a running causal top-k in one
// kernel. The [Tq, Tk] score matrix never exists, and there is no workspace: a query's candidates
// live in shared memory and in its own output row. Contract: launch.h (IndexerTopkParams).
//
// Work: one CTA owns BQ consecutive query rows (BQ <= 8; 8 for H_I = 32, 4 for H_I = 64) and
// streams over the 64-key blocks that its long-window queries see. Two warpgroups (8 warps) run
// the GEMM and the head sums. Where H_p >= 32 and D_I <= 128, selection warps, one per query,
// select (warp-specialized: 4 of them where a CTA holds at most 4 queries, 384 threads; 8 at
// H_p = 32, 512 threads); otherwise the MMA warps select too (in lockstep, 256 threads): at
// D_I > 128 Q's registers leave no room for selection warps, and at H_p <= 16 the MMA rows of 8
// queries are mostly padding.
//
//   GEMM, per key block: S[(q, h), key] = Q[q, h, :] . K[key, :] on the tensor cores by wgmma
//     (m64n64k16, bf16, float32 accumulators). The MMA rows (M) are the CTA's (query, head)
//     pairs, heads padded to H_p = max(8, 2^ceil(log2 H_I)), BQ * H_p <= 256 rows in 4 M tiles
//     of 64, two per warpgroup (a warp's 32 rows are one query's: Epilogue); the columns (N) are
//     the block's 64 keys. Q is the A operand from registers (m16n8k16 A fragments, loaded once:
//     D_I / 2 registers at D_I = 128); the K tile, the B operand, is read by both warpgroups from
//     shared memory (K-major, 128-byte swizzle), 2 stages deep (3 with 4 selection warps:
//     blocks in pairs, below), copied by cp.async, or with 8 selection warps by TMA (below).
//     D_I is padded to 16 * KSTEPS with zeros (KSTEPS in {2, 4, 8, 16}). All 4 M tiles run whatever
//     BQ * H_p is (no wgmma behind a branch): padding rows (zero Q, zero weight) cost MMA time only
//     when BQ * H_p < 256 (decode, small H_I).
//   Overlap: each warpgroup runs its two M tiles half a block apart (one commit group each):
//     tile 1's scores of block j - 1 are weighed while the tensor cores run tile 0 of block j,
//     tile 0's while they run tile 1 (the loop's comment has the order). The tensor cores
//     drain once a block, at the barrier of the MMA warps that makes the next K tile visible;
//     with 4 selection warps once a pair of blocks (the second block's barrier and M tile 0 run
//     while the first's M tile 1 is in flight; a third K stage, whose 16 KiB would cost the
//     8-query CTA candidate slots). With 8 selection warps there is no such barrier: a stream
//     block's tile comes by TMA (one thread issues it), each MMA warp waits for the tile's
//     mbarrier, and the last MMA warp to retire a stage (a shared count) refills it, so each
//     warpgroup drains on its own, under the other's MMAs; and the MMA warps issue no copies
//     (56 of their 342 instructions a block in version 20). The sampled blocks' rows, gathered,
//     still come by cp.async behind the barrier.
//   Warp specialization (H_p >= 32, D_I <= 128): the MMA warps store each block's partial sums
//     in a ring of 6 slots of 2 blocks and go on; the selection warps take them a slot at a time
//     (named barriers: one "full" and one "empty" per slot; both blocks of a slot offered in one
//     call, 4 independent 32-key halves), so a compaction stalls the tensor cores only when it
//     outlasts the ring (12 blocks). Gang compaction, loosely: a selection warp that must compact
//     at a slot records it (gang_at), and another that reaches that slot, or has not yet, compacts
//     too where its buffer holds more than S / 4 extra entries and the rest of its window would
//     not fit, so the ring waits for compactions side by side instead of one after another (H_I
//     32, T 16K: 31.7 -> 37.0% of peak).
//     setmaxnreg moves registers from the selection warps to the MMA warps (120 and 192 with 4
//     selection warps, 72 and 184 with 8: mma_regs). The lockstep kernel instead: selection
//     warp q takes block j - 1's scores while the tensor cores run block j's tile 1, behind a
//     second barrier per block, and the whole CTA waits for each compaction (gang compaction).
//   Epilogue: w[q, h] * relu(s) summed over each query's heads. A warp's 32 MMA rows (16 of
//     each of its warpgroup's M tiles) are 32 heads of one query, so a thread's four rows (R and
//     R + 8 of both tiles) are one query's: it adds them, then a reduce-scatter over the 8 lanes
//     of a column quad (3 shuffle steps, 14 shuffles) leaves each lane two keys' sums, once per
//     block and warp. Queries wider than 32 rows (H_p >= 64) span H_p / 32 warps, whose partials
//     selection adds from shared memory. The weighted ReLU is float32, as the reference; only the
//     summation order differs.
//   Selection, per query (one warp per query, all state warp-private): a score becomes a
//     candidate when its key is visible and its order-preserving uint32 key is above the query's
//     threshold `thr` (one compare for most scores once `thr` has risen). Candidates append to a
//     buffer of C = topk + S entries: keys in shared memory, key indices in the query's output
//     row (slots [0, topk)) and in shared memory (slots [topk, C)). When a block could overflow
//     it, the warp compacts the buffer to exactly its topk largest (radix select: the first
//     level a histogram of up to 1024 bins by shared-memory atomics in the query's S-word
//     scratch, its bins starting at the buffer's smallest key and as narrow as still covers its
//     largest; the cut bin's keys then copied to the scratch where they fit, and the later
//     levels 16 bins each, counted in 4-bit register fields, over those only: find_cut) and
//     raises `thr` to the smallest key kept. Compaction fills the holes of slots
//     [0, topk) with the survivors of [topk, C), so the output row is never read back.
//     After the last block one more compaction leaves the exact top-k in the output row.
//     Invariant (what makes the result exact): the buffer holds every seen visible key whose
//     score key is > thr, and at least topk entries with score key >= thr. Keys equal to thr
//     may be dropped: they cannot change the multiset of selected scores.
//   Sampled threshold: started at 0, thr admits every key until the buffer first fills, and a
//     stream of n random scores appends ~topk (1 + ln(n / topk)) keys (7.5K of n = 16K at topk
//     2048, five compactions). So where a CTA's long windows start at the same key and span more
//     keys than the buffer holds (topk + S; and D_I <= 128: at 256 the second pass's registers
//     would spill in the MMA loop), the CTA first scores a strided sample of the keys they all see
//     (one 64-key block per 2048 keys, a power of two up to 16: ~3% more MMA; none under 2048 keys;
//     sample_blocks, which also declines where the sample would not save appends) and each query
//     starts at the sample's rank-th largest score: the rank whose expected share of the window,
//     less 4 standard deviations, still holds topk keys (found by one thread from the closed form
//     of that bound, while the CTA waits: version 20; before, a search of ~30 steps cost 3% at
//     T 8K). The invariant's second half then holds only once topk keys have entered: a query
//     that ends its stream with fewer (its sample misled it, ~3e-5 for random order, or a pattern
//     aligned with the sample's stride) streams the window again from 0 (a second pass of the
//     CTA, for those queries only), so the result stays exact.
//     Host model (tools/bench/compaction_model.py --keys 16384 --slack 1344 [--sampled]; 8 queries
//     of random scores): 7.5K -> 3.0K keys appended per query, 40 -> 9 compactions, 125K -> 26K
//     keys compacted. Measured (T 16K, H_I 32, ncu): compaction's instructions -55%, all -16%; time
//     (16-32K): -5-7% at H_I 32, -12-14% at H_I 64, where the selection warps no longer fall behind
//     on the early blocks in which every key entered.
//   Gang compaction (not specialized): the CTA waits at each block's barrier for its slowest
//     warp, so compactions are lined up: a warp that must compact at its next block says so at
//     the barrier (__syncthreads_or), and then every query holding more than S / 4 extra
//     entries compacts at that block too. The compactions of a CTA run side by side instead of one
//     after another (tools/bench/compaction_model.py, a host model of a 32K-key random stream, 8
//     queries, topk 2048, S 1024: 37 -> 7 blocks with a compaction; the largest compaction of each
//     such block summed: 112K -> 21K keys).
//   Short windows: a query that sees at most topk keys selects all of them (positions lo..p,
//     then -1, written by the whole CTA a row at a time); it takes no part in the GEMM. Padding
//     queries (no document) write -1s. A CTA whose queries all have short windows does no GEMM at
//     all.
//   Order: CTAs take row blocks from the last one down, so a single causal document starts its
//     longest rows first.
//
// Limits (indexer_topk_supported is exact): bf16; 1 <= H_I <= 256; D_I a multiple of 8 up to 256;
// 1 <= topk while the per-query buffers fit next to the K stages in 227 KB of shared memory with
// S >= 64 (topk up to 40,728 at D_I = 256, 48,920 at 128, 53,016 at 64 or less; BQ shrinks when
// 8 do not fit).
// Shared memory per CTA (dynamic; plan in make_plan; + 1 KiB to align the K tiles to 1024 bytes):
// GLM-5 H_I = 32, D_I = 128, topk = 2048 (warp-specialized): BQ = 8, S = 1088, 228,512 bytes;
// H_I = 64 (3 K stages): BQ = 4, S = 2048, 205,984 bytes; decode (one row, 3 stages): BQ = 1,
// 107,680 bytes. One CTA per SM (shared memory and registers). The ring of 12 blocks' partial
// sums (24 KiB), and the third K stage, are taken only where they leave as many queries per CTA
// as the lockstep kernel's layout (one block's partials, 2 stages), so the limits are the same at
// every H_I.
// Cost of the selection, from a host model of a 32K-key random score stream (topk 2048, S 1024):
// 7 compactions of ~3K keys per query against 512 key blocks of MMA work; a worst case (scores
// rising with the key) compacts every S - 64 keys. Measured (ncu, T=16K, H_I 32, gang compaction
// on): ~3 compactions per long-window query during the stream and the final one, each counting
// the whole buffer for ~3-4 digits before the keys still in the running fit the scratch (scores
// crowd into few 4-bit bins), ~35K keys counted per query. Counting costs ~14 instructions per key
// (4-bit fields of one 64-bit value per lane; 28 with the 8-bit fields and the listing branch of
// version 4), the keep passes ~10. Version 22 counts the whole buffer once, into a histogram of up
// to 1024 bins, and lists the cut bin's keys in a second pass (find_cut).
//
// Budget at T = 32768, H_I = 32, D_I = 128, one document: 4.4 TFLOP by the convention (2 * causal
// pairs * H_I * D_I); the MMA work computed is that plus the 64-key and 8-query block edges
// (< 1%). Bytes: Q 256 MiB and the output 256 MiB once; K (8 MiB, L2-resident) is read from L2
// once per CTA and key block, ~17 GB in all (~256 FLOP per L2 byte).
// Budget per key block and CTA at GLM-5 shapes: 4.2 MFLOP of MMA (~1,024 cycles at the SM's
// dense bf16 wgmma rate), overlapped with the selection of the previous block; shared-memory
// operand traffic 64 KiB (B only: Q comes from registers), half what the SM reads in that time.
// Achieved (H100; topk 2048, D_I 128, one causal document; tools/bench/RESULTS.md, "2026-12-07
// (eighth session)"; each row the median of 50 after 10 warm-up): version 24 (fifth call, beside a
// branch): H_I 32: 42.7% of 989 at T=4K (the middle of 5 runs, 41.8-43.0%), 40.8% at 8K
// (40.0-41.3%), 44.3% at 16K, 47.8% at 32K; H_I 64: 50.0% at 4K, 46.4% at 8K, 48.6% at 16K, 49.0%
// at 32K. In the fourth call (version 23 side by side in one process): H_I 32 40.7 / 42.0 / 42.4%
// at 4K, 39.2 / 41.2 / 40.9% at 8K, 44.9% at 16K, 48.1% at 32K; D_I 256 (lockstep) 48.1% at 4K.
// Speed-up over version 23: 1.00 / 1.01 / 1.03x at H_I 32 4K, 1.03-1.04x at 8K, 1.03x at 16K and
// 32K, 1.00x / 1.01x at H_I 64 4K / 8K, 1.03x at D_I 256. Version 23 (version 22 side by side): H_I
// 32: 41.4 / 41.1% of 989 at T=4K (two runs), 39.4 / 40.0% at 8K, 43.1% at 16K; H_I 64: 49.7% at
// 4K. Speed-up over version 22: 1.02 / 1.14x at H_I 32 4K, 1.02 / 1.03x at 8K, 1.00x at 16K, 1.04x
// at H_I 64 4K (version 22 in those runs: 40.5 / 36.0%, 38.6 / 38.7%, 43.2%, 47.6%). ("2026-12-07
// (seventh session)"; version 22 and 21 side by side, 1-5 runs a shape, each the median of 20 or
// 50): version 22 H_I 32: 36.4% of 989 at T=4K (the middle of 5 runs, 34.2-39.2%), 37.8% at 8K
// (37.4-38.5%), 42.2% at 16K, 45.9% at 32K; H_I 64: 44.6% at 4K (4 runs, 43.0-45.6%), 44.7% at 8K,
// 47.9% at 16K. Speed-up over version 21 (its time / version 22's): 1.04x at H_I 32 4K and 8K
// (0.99-1.06x), 1.03x at 16K, 1.00x at 32K; 1.03x at H_I 64 4K, 1.01x at 8K, 1.00x at 16K; in the
// same runs version 21 read 35.6% at 4K and 36.4% at 8K. ("2026-12-07 (fourth session)", median of
// 20; an A/A run of this kernel against itself agreed within 0.5% up to 16K): version 21 H_I 32:
// 38.3% of 989 at T=4K, 37.7% at 8K, 41.9% at 16K, 46.6% at 32K; H_I 64: 47.3, 44.4, 47.5, 48.3%.
// Before ("2026-12-07 (second session)", median of 5): version 20 H_I 32 38.1, 37.2%; ("2026-12-06
// (eighth session)") version 19 H_I 32: 37.0, 36.1, 39.9, 44.8%; H_I 64: 45.8, 42.9, 45.8, 49.0%
// (version 18, sixth session: 37.5, 36.4, 40.5, 45.6; 46.7, 43.2, 45.4, 48.2). D_I 256, H_I 32
// (lockstep, version 14): 44.8% at 4K, 40.5% at 16K.
// The 40% bar holds at every shape; H_I 32 at 8K by about one point (version 24: 39.2-41.3%).
// Diagnostic builds ("2026-12-07 (fifth session)"; one line each, results wrong), H_I 32 at 4K /
// 8K: without the final compaction 43.2 / 42.9% (1.14x), without any selection 55.4 / 51.9%, with w
// * |s| for w * relu(s) (64 of the MMA warps' ~280 instructions a block gone) 1.03 / 1.05x: the
// final compaction, not the MMA warps' instruction count, is the lever left; shared by selection
// warp q and MMA warp q (a branch, same session) it read 1.00x, 0.94-0.97x in a later form (sixth
// session: the pair's per-level trades cost more than the halved counting saves). clock64 probes of
// version 19 at H_I 32 (4K / 8K; the probes cost ~8%): the MMA warps take ~2.2-2.4K cycles a block
// against 1,024 of tensor-core work, with no ring stalls (~10 cycles a block) and ~100 cycles at
// B1; the selection warps are busy ~2.1K cycles a block even where nothing compacts (likely: both
// roles share the SM's issue); at each CTA's end the MMA warps wait ~36K cycles (18-26% of their
// time), the final compaction (one warp per query, ~2,600 entries to 2,048) taking 25-28K of them.
// ncu of version 19 at H_I 32, T 8K (ninth session): the tensor pipe busy 36% of the time, issue
// slots 44%; per MMA warp and block 342 instructions (the weighing 128, the reduce-scatter ~56, the
// K copies 56, B1 37) at 0.17 IPC, the wgmma waits 5% of the loop's stalls: the MMA warps are bound
// by their own instruction stream (the MMA loop alone, tools/bench/wgmma_rate.cu: 89% of peak); 3%
// of the time every warp but one waited at the CTA's start for thread 0's sample rank search
// (version 20: closed form; 37.0 -> 38.1% at 4K, 36.1 -> 37.2% at 8K, runs of two sessions). Before
// (version 12, lockstep at H_I 32, ncu at 16K): the head sums (w * relu(s) and the reduce-scatter)
// 43% of the instructions, the selection's fast path 15%, compaction 19%; with 2 warps per
// scheduler the epilogue and the selection were latency-bound. Diagnostic builds of version 8:
// without the selection 53-56%, without the head sums too 62-67%. The warp-specialized kernel at
// H_I 32 with 4 selection warps of 2 queries each (not shipped) ran at 32.4-36.3%; with 8 before
// gang compaction at 30.9-36.3%.
// ptxas (sm_90a, CUDA 13.0, -Xptxas -v; version 24), per D_I instantiation (two inlined passes up
// to D_I 128):
//   lockstep, 256 threads, 1 barrier (SASS as version 22's; version 23 took 247 / 243 / 254
//   registers at KSTEPS 2 / 4 / 8 and spilled 44 bytes at 16):
//     KSTEPS  2 (D_I <= 32):  213 registers, 0 bytes stack frame, 0 spill stores, 0 spill loads
//     KSTEPS  4 (D_I <= 64):  229 registers, 0 bytes stack frame, 0 spill stores, 0 spill loads
//     KSTEPS  8 (D_I <= 128): 242 registers, 0 bytes stack frame, 0 spill stores, 0 spill loads
//     KSTEPS 16 (D_I <= 256): 255 registers, 24 bytes stack frame, 24 spill stores, 28 spill loads
//   warp-specialized, 4 selection warps, 384 threads (168 registers at launch; setmaxnreg 192 /
//   120), 16 barriers, blocks in pairs:
//     KSTEPS 2, 4, 8: 0 bytes stack frame, 0 spill stores, 0 spill loads
//   warp-specialized, 8 selection warps, 512 threads (128 at launch; setmaxnreg 184 / 72), 16
//   barriers (version 23 spilled 48-72 bytes in the selection warps' 72 registers; 64 / 64 of the
//   MMA loop's weighing instructions between the wgmma waits, 43 / 32 in version 23):
//     KSTEPS 2: 8 bytes stack frame, 24 spill stores, 32 spill loads
//     KSTEPS 4: 0 bytes stack frame, 0 spill stores, 0 spill loads
//     KSTEPS 8: 0 bytes stack frame, 0 spill stores, 0 spill loads
#include "device.cuh"
#include "launch.h"

#include <cuda.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <type_traits>

namespace kiln::backends::cuda {
namespace {

constexpr int kThreads = 256; // the MMA warps: two warpgroups
constexpr int kWarps = kThreads / 32;
constexpr int kCols = 256;             // (query, head) rows of a CTA: 4 M tiles of 64
constexpr int kMaxQueries = kWarps;    // one selection warp per query
constexpr int kBlockKeys = 64;         // keys of one block: the wgmma N
constexpr int kStages = 2;             // cp.async stages of K tiles (a block outlasts an L2 load)
constexpr int kParts = kWarps;         // partial-sum rows: one per warp (32 MMA rows)
constexpr int kMaxSlack = 2048;        // S is at most this (and at most topk rounded up)
constexpr int kSmemLimit = 227 * 1024; // opt-in shared memory per block on sm_90
constexpr int kAlignSlack = 1024;      // the K tiles start on a 1024-byte boundary
constexpr unsigned kFull = 0xffffffffu;
// Warp-specialized launches (select_warps() below): selection warps, one per query, fed through
// a ring of partial-sum slots by named barriers: the MMA warps' own, then one full and one empty
// per slot.
constexpr int kRing = 6;       // slots
constexpr int kSlotBlocks = 2; // key blocks of partial sums per slot
constexpr int kMmaBarrier = 1;
constexpr int kFullBarrier = 2;
constexpr int kEmptyBarrier = kFullBarrier + kRing;
static_assert(kEmptyBarrier + kRing <= 16, "16 hardware barriers per CTA");
// Registers per thread (setmaxnreg) of the MMA warps and of the selection warps: the 64K of the
// SM's register file, where each of the 384 (512) threads would get 168 (128): too few for Q,
// the two accumulators and the held one at D_I = 128 (spills). With 8 selection warps, 72 for
// them and 184 for the MMA warps leave neither spilling (64 and 192 spilled a few words of the
// selection warps' loop: H_I 32 1.02-1.03x faster without).
constexpr int mma_regs(int sel) {
  return sel > 4 ? 184 : 192;
}
constexpr int select_regs(int sel) {
  return sel > 4 ? 72 : 120;
}
// Selection warps of a launch: one per query where Q's registers leave room (D_I <= 128) and
// H_p >= 32 (a CTA holds 4 queries at H_p 64, 8 at 32); 0 otherwise: the MMA warps select too
// (lockstep).
constexpr int select_warps(int ksteps, int hp) {
  return ksteps > 8 || hp < 32 ? 0 : hp == 32 ? 8 : 4;
}
constexpr int block_threads(int sel) {
  return kThreads + 32 * sel;
}
static_assert(2 * 128 * mma_regs(4) + 32 * 4 * select_regs(4) <= 65536, "the SM's register file");
static_assert(2 * 128 * mma_regs(8) + 32 * 8 * select_regs(8) <= 65536, "the SM's register file");
// K stages of the warp-specialized kernels: 3 with 4 selection warps, whose MMA loop takes
// blocks in pairs (the kernel's loop comment); with 8 the third stage would cost each of their 8
// queries 192 candidate slots (S 1,088 -> 896 at topk 2048), and their MMA warps the registers.
constexpr int ws_stages(int sel) {
  return sel == 4 ? 3 : kStages;
}
// With 8 selection warps the stream's K tiles come by TMA (tma_tiles; the sampled blocks' rows,
// gathered, still by cp.async): one thread issues a tile's copies, each MMA warp waits for its
// mbarrier, and the last MMA warp to retire a stage refills it, so the MMA warps neither copy
// (56 of their ~340 instructions a block) nor meet at a barrier each block. A plan takes it only
// where K suits a tensor map (launch_indexer_topk: 16-byte aligned rows); else the lockstep kernel.
constexpr bool tma_tiles(int sel) {
  return sel == 8;
}
constexpr int kTmaStages = kStages;
// K rows between one thread's copies of a tile (kRowStep in the kernel): its kThreads each copy one
// of a row's 2 * ksteps 16-byte chunks.
constexpr int copy_row_step(int ksteps) {
  return kThreads / (2 * ksteps);
}

// The sampled threshold's size (header: "Sampled threshold"): for n keys that a CTA's long windows
// all see, [lo, lo + n), the sample is m = 64 * blocks keys lo + ((2 i + 1) n) / (2 m), i < m,
// blocks the largest power of two up to kMaxSampleBlocks with one per kSampleKeys keys of n whose
// sample fits the buffer (`capacity`), where n > capacity. rank: the smallest whose expected share
// of the n keys (the rank-th largest of m samples lies above a Beta(rank, m + 1 - rank) share of
// them), less kSampleSigmas standard deviations, is still topk / n. Returns blocks (0: no sampling,
// also where the sample and the ~rank / (m + 1) n keys it admits are more than an unsampled
// stream's ~topk (1 + ln(n / topk))) and sets rank.
constexpr int kSampleKeys = 2048;
constexpr int kMaxSampleBlocks = 16;
constexpr float kSampleSigmas = 4.f;
__host__ __device__ inline int sample_blocks(int n, int topk, int capacity, int& rank) {
  rank = 0;
  int blocks = kMaxSampleBlocks; // a power of two: the sample's positions need no division
  while (blocks > 0 && (blocks * kSampleKeys > n || blocks * kBlockKeys > capacity)) blocks /= 2;
  // n <= capacity: an unsampled stream never compacts before its end.
  if (n <= capacity || blocks < 1) return 0;
  const int m = blocks * kBlockKeys;
  const float f = static_cast<float>(topk) / static_cast<float>(n);
  // For share >= f the test below holds from the larger root x+ of (1 + c) x^2 - (2 f + c) x +
  // f^2 (c = sigmas^2 / (m + 2)) on: the search starts two ranks under x+ (m + 1) instead of at f
  // (m + 1), the same first rank in a few steps instead of ~30 (each a division and a square root,
  // by one thread while the CTA waits: 3% of the kernel at T 8K).
  const float c = kSampleSigmas * kSampleSigmas / static_cast<float>(m + 2);
  const float b = 2.f * f + c;
  const float root = (b + sqrtf(fmaxf(b * b - 4.f * (1.f + c) * f * f, 0.f))) / (2.f * (1.f + c));
  const int from = max(1 + static_cast<int>(f * (m + 1)), static_cast<int>(root * (m + 1)) - 2);
  for (int r = from; r <= m; ++r) {
    const float share = static_cast<float>(r) / static_cast<float>(m + 1);
    const float sd = sqrtf(share * (1.f - share) / static_cast<float>(m + 2));
    if (share - kSampleSigmas * sd < f) continue;
    const float unsampled = static_cast<float>(topk) * (1.f + logf(1.f / f));
    if (share * static_cast<float>(n) + static_cast<float>(m) >= unsampled) return 0;
    rank = r;
    return blocks;
  }
  return 0;
}

// Shapes and shared-memory layout of one launch; computed on the host, read by the kernel.
struct Plan {
  int ksteps = 0; // 16-wide k steps: D_I padded to 16 * ksteps
  int atoms = 0;  // 64-channel (128-byte) column blocks of a K tile (wgmma 128-byte swizzle)
  int hp = 0;     // heads padded to a power of two >= 8
  int bq = 0;     // query rows per CTA
  int slack = 0;  // S: candidate slots beyond topk
  int stage_bytes = 0;
  int sel = 0;          // selection warps (select_warps()): 0 lockstep, else warp-specialized
  int ring = 0;         // blocks of partial sums: kRing * kSlotBlocks (warp-specialized) or 1
  int part_offset = 0;  // float partial sums [ring][kParts][kBlockKeys], a block a slot
  int win_offset = 0;   // int windows lo[kMaxQueries], hi[kMaxQueries]
  int seg_offset = 0;   // int block intervals first[kMaxQueries], last[...], count, sample[3], gang
  int bar_offset = 0;   // TMA (kTmaStages): mbarriers full[stage], then uint32 retired[stage]
  int query_offset = 0; // per query: keys[topk + S], nidx[S], scratch[S]
  int query_bytes = 0;
  int smem_bytes = 0;
  // Set by the launch: K's element offsets of one key block (64 rows) and of copy_row_step rows,
  // so that the loop's copy addresses take them from the parameter bank, not from registers.
  int64_t k_block = 0;
  int64_t k_rows = 0;
};

int64_t query_bytes(int topk, int slack) {
  const int64_t bytes = 4 * (int64_t{topk} + slack) + 4 * slack + 4 * slack;
  return (bytes + 15) / 16 * 16;
}

// The layout after the K stages (p.sel set) and the most queries per CTA whose buffers fit with
// a slack S of at least min(topk, 512) (fewer compactions), else one query with any S >= 64.
bool fit_queries(Plan p, int topk, int rows, Plan& plan) {
  p.ring = p.sel > 0 ? kRing * kSlotBlocks : 1;
  p.win_offset = p.part_offset + p.ring * kParts * kBlockKeys * 4;
  p.seg_offset = p.win_offset + 2 * kMaxQueries * 4;
  p.bar_offset = p.seg_offset + (2 * kMaxQueries + 8) * 4; // + 3 unused: 16-byte aligned
  p.query_offset = p.bar_offset + (tma_tiles(p.sel) ? kTmaStages * 16 : 0);
  const int max_slack = std::min(kMaxSlack, (topk + kBlockKeys - 1) / kBlockKeys * kBlockKeys);
  for (int bq = std::min({kMaxQueries, kCols / p.hp, rows}); bq >= 1; --bq) {
    const int min_slack = bq == 1 ? kBlockKeys : std::max(kBlockKeys, std::min(max_slack, 512));
    for (int slack = std::max(max_slack, kBlockKeys); slack >= min_slack; slack -= kBlockKeys) {
      const int64_t bytes = kAlignSlack + p.query_offset + int64_t{bq} * query_bytes(topk, slack);
      // topk + S < 65536: compact's digit counts are 16 bits wide (shared memory alone keeps
      // topk under ~48K).
      if (bytes <= kSmemLimit && topk + slack < 65536) {
        p.bq = bq;
        p.slack = slack;
        p.query_bytes = static_cast<int>(query_bytes(topk, slack));
        p.smem_bytes = static_cast<int>(bytes);
        plan = p;
        return true;
      }
    }
  }
  return false;
}

// Fills `plan` for these sizes; false when they are outside the kernel's limits. `rows` (>= 1)
// caps the queries per CTA (a decode call with one row gives all the shared memory to it).
// Warp-specialized where select_warps() says so and its ring of partial sums still leaves room
// for as many queries per CTA as without it (so it never narrows what the kernel takes), and,
// with 8 selection warps, where K's tiles can come by TMA (`tma`).
bool make_plan(int heads, int dim, int topk, int rows, bool tma, Plan& plan) {
  if (heads < 1 || dim < 8 || dim % 8 != 0 || dim > 256 || topk < 1 || rows < 1) return false;
  Plan p;
  p.hp = 8;
  while (p.hp < heads) p.hp *= 2;
  if (p.hp > kCols) return false;
  p.ksteps = 2;
  while (16 * p.ksteps < dim) p.ksteps *= 2;
  p.atoms = (2 * p.ksteps + 7) / 8;
  p.stage_bytes = kBlockKeys * p.atoms * 128;
  p.part_offset = kStages * p.stage_bytes;
  if (!fit_queries(p, topk, rows, plan)) return false;
  if (select_warps(p.ksteps, p.hp) > 0) {
    // 4 selection warps where a CTA holds at most 4 queries (decode: more registers each)
    p.sel = plan.bq <= 4 ? 4 : select_warps(p.ksteps, p.hp);
    if (tma_tiles(p.sel) && !tma) return true;
    p.part_offset = ws_stages(p.sel) * p.stage_bytes;
    Plan ws;
    if (fit_queries(p, topk, rows, ws) && ws.bq == plan.bq) plan = ws;
  }
  return true;
}

// ---- device helpers -----------------------------------------------------------------------------

// Order-preserving map of a float to uint32 (a > b as floats <=> key(a) > key(b)); -0 maps as +0.
// No finite float maps to 0, so a threshold of 0 admits every score.
__device__ __forceinline__ uint32_t order_key(float x) {
  uint32_t u = __float_as_uint(x);
  if (u == 0x80000000u) u = 0;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ uint32_t lanes_below(int lane) {
  return (1u << lane) - 1u;
}

// The key window [lo, hi) of query row `row` (empty: lo == hi == 0), as the op contract says.
__device__ void query_window(const IndexerTopkParams& p, int row, int& lo, int& hi) {
  lo = hi = 0;
  const int pos = p.query_indices != nullptr ? p.query_indices[row] : row;
  const int32_t* starts = p.cu_padded != nullptr ? p.cu_padded : p.cu_seqlens;
  int a = 0, b = p.docs; // the first document whose start is > pos
  while (a < b) {
    const int m = (a + b) / 2;
    if (starts[m] <= pos) {
      a = m + 1;
    } else {
      b = m;
    }
  }
  const int doc = a - 1; // the last document starting at or before pos
  if (doc < 0) return;
  const int length = p.cu_seqlens[doc + 1] - p.cu_seqlens[doc];
  if (pos >= starts[doc] + length) return; // padding after the document's real tokens
  lo = max(starts[doc], 0);
  hi = min(pos + 1, p.tk);
  if (hi <= lo) lo = hi = 0;
}

// Sums v (16 values of a row set: key tile t = 0..7, e = 0..1) over the 8 lanes that share
// lane % 4 by a reduce-scatter in three shuffle steps (each lane keeps half of what is left and
// sends the other half), leaving the lane with g = lane / 4 the sums of key tile g: keys
// 8 g + 2 (lane % 4) + e. 14 shuffles instead of 48 for a full reduction.
__device__ __forceinline__ float2 reduce_rows(const float (&v)[8][2], int lane) {
  const bool hi4 = (lane & 16) != 0, hi3 = (lane & 8) != 0, hi2 = (lane & 4) != 0;
  float a[4][2], b[2][2], c[2];
#pragma unroll
  for (int t = 0; t < 4; ++t) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const float keep = hi4 ? v[4 + t][e] : v[t][e], give = hi4 ? v[t][e] : v[4 + t][e];
      a[t][e] = keep + __shfl_xor_sync(kFull, give, 16);
    }
  }
#pragma unroll
  for (int t = 0; t < 2; ++t) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const float keep = hi3 ? a[2 + t][e] : a[t][e], give = hi3 ? a[t][e] : a[2 + t][e];
      b[t][e] = keep + __shfl_xor_sync(kFull, give, 8);
    }
  }
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const float keep = hi2 ? b[1][e] : b[0][e], give = hi2 ? b[0][e] : b[1][e];
    c[e] = keep + __shfl_xor_sync(kFull, give, 4);
  }
  return make_float2(c[0], c[1]);
}

// w * relu(s) of one M tile's accumulator (rows 16 w' + g and + 8, w' = warp % 4; columns the
// block's 64 keys) added into v[t][e] (key 8 t + 2 (lane % 4) + e): a thread's two rows of the
// tile are heads of the warp's query (see the kernel), so their sum needs no other lane.
__device__ __forceinline__ void weigh_rows(const float (&acc)[32], const float (&wr)[2],
                                           float (&v)[8][2]) {
#pragma unroll
  for (int t = 0; t < 8; ++t) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      v[t][e] = fmaf(wr[1], fmaxf(acc[4 * t + 2 + e], 0.f),
                     fmaf(wr[0], fmaxf(acc[4 * t + e], 0.f), v[t][e]));
    }
  }
}

// One query's candidate buffer, owned by one warp; the scalars are warp-uniform but for kmin and
// kmax, which each lane keeps for the keys it appended (a compaction reduces them over the warp:
// no warp reduction per block).
struct Candidates {
  uint32_t* keys;    // [topk + S] score keys, shared memory
  int32_t* nidx;     // [S] key indices of slots topk.., shared memory
  uint32_t* scratch; // [S] the keys still in the running during a compaction, then the holes
  int32_t* out;      // the query's output row: key indices of slots 0..topk-1
  int count;         // entries in the buffer
  uint32_t thr;      // scores with key <= thr are not candidates
  uint32_t kmin;     // bounds of the buffer's keys: their min and max over the warp bound every
  uint32_t kmax;     // key (per lane: of the keys it appended, or of the buffer after a compaction)
};

// How a selection pass walks a buffer: kUnroll keys a lane loaded ahead, and, where kWhole, the
// whole steps of 32 kUnroll keys first, without per-key bound tests. The warp-specialized
// kernels' selection warps take 8 keys and whole steps (version 24 against 23's 4 keys: 1.03x at
// H_I 32 8K-32K, 1.01x at 4K; their 72 registers spill less). The lockstep kernel, whose
// selection shares the MMA warps' registers, takes 4 (2 at D_I > 128) without whole steps: with
// them (version 23) its registers grew (242 -> 254 at D_I 128) and it spilled more at D_I 256,
// 0.95-0.97x there.
template <int kUnrollKeys, bool kWholeSteps>
struct Walk {
  static constexpr int kUnroll = kUnrollKeys;
  static constexpr bool kWhole = kWholeSteps;
};

// Calls f(key, i, valid, u) for i = begin + lane, + 32, ... while i < end, in warp-uniform steps
// (every lane calls f as often, with valid = i < end and key = keys[i] or 0: f may use warp
// collectives), W::kUnroll keys loaded ahead of the calls; u < W::kUnroll is the call's place
// among them (a constant once unrolled: it may index registers). Where W::kWhole, the whole steps
// come first, with valid the constant true (f inlined without its bound tests and the branches
// they guard), then the last partial step.
template <typename W, typename F>
__device__ __forceinline__ void for_each_key(const uint32_t* keys, int begin, int end, int lane,
                                             F&& f) {
  constexpr int kUnroll = W::kUnroll, kStep = 32 * kUnroll;
  int base = begin;
  if constexpr (W::kWhole) {
    for (const int whole_end = begin + (end - begin) / kStep * kStep; base < whole_end;
         base += kStep) {
      uint32_t key[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) key[u] = keys[base + 32 * u + lane];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) f(key[u], base + 32 * u + lane, true, u);
    }
  }
  for (; base < end; base += kStep) { // one step at most where W::kWhole
    uint32_t key[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int i = base + 32 * u + lane;
      key[u] = i < end ? keys[i] : 0u;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int i = base + 32 * u + lane;
      f(key[u], i, i < end, u);
    }
  }
}

// How many of src[0, n) lie in each of the bins [base + d 2^shift, base + (d + 1) 2^shift),
// d < bins <= 16, as 16 16-bit fields of total (the same in every lane; digit_count reads them;
// n < 65536, make_plan; digits from `bins` up count nothing). find_cut's levels after the first
// (count_bins).
// Each lane counts its keys in three levels of registers, so nothing waits on a shared-memory
// read-modify-write and a key costs two funnel shifts and two adds: 16 4-bit fields of two 32-bit
// values (digit d at bit 4 d of the pair, digits 8..15 in the second) for kGroup keys, in two such
// pairs (even and odd unrolled keys: two independent add chains), added into 16 8-bit fields (4
// registers) after each group, and those into the 16-bit fields after kGroupsPerFlush groups.
template <typename W>
__device__ void count_digits(const uint32_t* src, int n, uint32_t base, int shift, uint32_t bins,
                             int lane, uint32_t (&total)[8]) {
  static_assert(W::kUnroll <= 15, "a 4-bit field counts up to 15 keys a lane");
  constexpr int kGroup = 15 / W::kUnroll * W::kUnroll; // keys per lane under 4-bit fields
  constexpr int kGroupsPerFlush = 255 / kGroup; // groups per lane under 8-bit fields (<= 255)
  constexpr int kGroupKeys = 32 * kGroup;
  constexpr int kFlushKeys = kGroupKeys * kGroupsPerFlush;
#pragma unroll
  for (int w = 0; w < 8; ++w) total[w] = 0;
  for (int flush = 0; flush < n; flush += kFlushKeys) {
    const int flush_end = min(n, flush + kFlushKeys);
    // bytes[0]: digits 0, 2, 4, 6 (byte k: digit 2 k); [1]: 1, 3, 5, 7; [2], [3]: the same + 8
    uint32_t bytes[4] = {0u, 0u, 0u, 0u};
    for (int group = flush; group < flush_end; group += kGroupKeys) {
      const int group_end = min(flush_end, group + kGroupKeys);
      uint32_t lo[2] = {0u, 0u}, hi[2] = {0u, 0u}; // [u % 2]: digits 0..7, 8..15 (bits 4 d % 32)
      for_each_key<W>(src, group, group_end, lane, [&](uint32_t key, int, bool valid, int u) {
        const uint32_t d = (key - base) >> shift;
        const bool in_range = valid && key >= base && d < bins;
        // a funnel shift clamps at 32: one of the two adds gets 0
        const uint32_t one = in_range ? 1u : 0u, at = d << 2;
        lo[u % 2] += __funnelshift_lc(0u, one, at);
        hi[u % 2] += __funnelshift_lc(0u, one, at ^ 32u);
      });
      const uint32_t l = lo[0] + lo[1], h = hi[0] + hi[1]; // <= 15 keys per field in all
      bytes[0] += l & 0x0f0f0f0fu;
      bytes[1] += (l >> 4) & 0x0f0f0f0fu;
      bytes[2] += h & 0x0f0f0f0fu;
      bytes[3] += (h >> 4) & 0x0f0f0f0fu;
    }
#pragma unroll
    for (int b = 0; b < 4; ++b) { // bytes 0, 2 to total[2 b]; bytes 1, 3 to total[2 b + 1]
      total[2 * b] += bytes[b] & 0x00ff00ffu;
      total[2 * b + 1] += (bytes[b] >> 8) & 0x00ff00ffu;
    }
  }
#pragma unroll
  for (int w = 0; w < 8; ++w) total[w] = __reduce_add_sync(kFull, total[w]);
}

// Digit d's count in count_digits' total: bytes[b] with b = 2 (d / 8) + d % 2 held digit d in
// byte k = (d % 8) / 2; its bytes k = 0, 2 went to total[2 b] (16-bit field k / 2), 1, 3 to
// total[2 b + 1].
__device__ __forceinline__ uint32_t digit_count(const uint32_t (&total)[8], int d) {
  const int b = 2 * (d / 8) + d % 2, k = (d % 8) / 2;
  return (total[2 * b + k % 2] >> (16 * (k / 2))) & 0xffffu;
}

// Where the rank-th largest of the buffer's first n entries lies (rank <= n): the bin [lo, ..)
// that holds it, `rank` now how many of the bin's entries rank among the rank largest, and
// whether that is all of them (`whole`; otherwise the bin is one key value: ties). Radix select:
// the first level (count_bins) counts all n entries into as many bins as the S-word scratch holds,
// up to 1024, by shared-memory atomics; its bins start at the smallest key kmin and are as narrow
// as still covers the largest kmax (2^shift keys each, not aligned to a digit). Each later level
// splits the bin that holds the rank-th largest into 16 (shift - 4; count_digits, in registers),
// or, where the bin is narrower than 16 keys, into its single key values (shift 0, fewer bins:
// those past the bin would count entries of the bins above it, already ranked), until that bin is
// taken whole or is one key value. Once that bin's entries fit the scratch, a list-only pass
// (list_bin) copies them there and the later levels count only them.
// Cost: ~2 passes over the entries (the histogram; the listing).
// The 16-bin first level it replaced (version 21) left the bench's signed scores in 2 of its 16
// bins, so that level and usually the next were whole-buffer passes of ~14 instructions a key.
struct Cut {
  uint32_t lo;
  int rank;
  bool whole;
};

// A warp's suffix sums: lanes >= lane's values added (inclusive).
__device__ __forceinline__ uint32_t suffix_sum(uint32_t x, int lane) {
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t y = __shfl_down_sync(kFull, x, o);
    if (lane + o < 32) x += y;
  }
  return x;
}

// find_cut's first level: keys[0, n) counted into `bins` (a power of 2, 64..1024) bins of 2^shift
// keys from kmin, hist[d] in shared memory (the query's scratch) by shared-memory atomics, then
// the bin of the rank-th largest: cut.lo and cut.rank moved to it; returns its count. Every key
// lies in a bin (kmax - kmin < bins 2^shift): no range test.
template <typename W>
__device__ uint32_t count_bins(const uint32_t* keys, int n, int shift, int bins, uint32_t* hist,
                               Cut& cut, int lane) {
  for (int d = lane; d < bins; d += 32) hist[d] = 0u;
  __syncwarp();
  const uint32_t kmin = cut.lo;
  for_each_key<W>(keys, 0, n, lane, [&](uint32_t key, int, bool valid, int) {
    if (valid) atomicAdd(hist + ((key - kmin) >> shift), 1u);
  });
  __syncwarp();
  // Lane l sums its run of bins [l per, (l + 1) per), read rotated: the lanes' reads of one step
  // fall in distinct banks (per 32) or two lanes a bank.
  const int per = bins / 32;
  uint32_t run = 0u;
  for (int i = 0; i < per; ++i) run += hist[lane * per + ((i + lane) & (per - 1))];
  // The run of the rank-th largest: the highest lane whose suffix reaches rank (lane 0's is n).
  const uint32_t rank = static_cast<uint32_t>(cut.rank);
  const uint32_t suffix = suffix_sum(run, lane);
  const int at = 31 - __clz(static_cast<int>(__ballot_sync(kFull, suffix >= rank)));
  const uint32_t above_run = __shfl_sync(kFull, suffix - run, at);
  // Within it, the same over its bins, one a lane.
  const uint32_t in_d = lane < per ? hist[at * per + lane] : 0u;
  const uint32_t inner = suffix_sum(in_d, lane) + above_run;
  const int d = 31 - __clz(static_cast<int>(__ballot_sync(kFull, lane < per && inner >= rank)));
  const uint32_t in_bin = __shfl_sync(kFull, in_d, d);
  cut.rank -= static_cast<int>(__shfl_sync(kFull, inner, d) - in_bin);
  cut.lo = kmin + (static_cast<uint32_t>(at * per + d) << shift);
  __syncwarp(); // every lane has read the bins before the scratch is written again
  return in_bin;
}

// Copies the keys of src[0, n) in [lo, lo + 2^shift) to list[0, ..) in slot order.
template <typename W>
__device__ void list_bin(const uint32_t* src, int n, uint32_t lo, int shift, uint32_t* list,
                         int lane) {
  int listed = 0;
  for_each_key<W>(src, 0, n, lane, [&](uint32_t key, int, bool valid, int) {
    const bool in = valid && key >= lo && ((key - lo) >> shift) == 0u;
    const uint32_t ins = __ballot_sync(kFull, in);
    if (in) list[listed + __popc(ins & lanes_below(lane))] = key;
    listed += __popc(ins);
  });
  __syncwarp(); // the list is complete for every lane
}

template <typename W>
__device__ Cut find_cut(const Candidates& c, int n, int rank, int slack, int lane) {
  __syncwarp(); // the buffer entries other lanes just stored are visible to every lane
  const uint32_t kmin = __reduce_min_sync(kFull, c.kmin), kmax = __reduce_max_sync(kFull, c.kmax);
  Cut cut{kmin, rank, false};
  if (kmin == kmax) return cut;
  // The first level: as many bins as the scratch holds, up to 1024 (slack >= 64, make_plan), as
  // narrow as still covers kmax.
  const int bin_bits = min(10, 31 - __clz(slack));
  int shift = max(0, 32 - __clz(static_cast<int>(kmax - kmin)) - bin_bits);
  uint32_t in_bin = count_bins<W>(c.keys, n, shift, 1 << bin_bits, c.scratch, cut, lane);
  const uint32_t* src = c.keys; // the entries counted: the buffer, or the running ones
  int src_n = n;
  bool listed = false;
  while (in_bin != static_cast<uint32_t>(cut.rank) && shift > 0) {
    if (!listed && in_bin <= static_cast<uint32_t>(slack)) {
      list_bin<W>(c.keys, n, cut.lo, shift, c.scratch, lane);
      src = c.scratch;
      src_n = static_cast<int>(in_bin);
      listed = true;
    }
    const int wider = shift;
    shift = max(shift - 4, 0);
    const uint32_t bins = 1u << (wider - shift); // 16, or the bin's 2..8 key values
    uint32_t total[8];
    count_digits<W>(src, src_n, cut.lo, shift, bins, lane, total);
    // The bin of the rank-th largest: the highest d with (entries in bins >= d) >= rank.
    uint32_t above = 0, above_bin = 0;
    int bin = 0;
    bool found = false;
    in_bin = 0;
#pragma unroll
    for (int d = 15; d >= 0; --d) {
      const uint32_t in_d = digit_count(total, d);
      const bool hit = !found && above + in_d >= static_cast<uint32_t>(cut.rank);
      if (hit) {
        bin = d;
        in_bin = in_d;
        above_bin = above;
      }
      found = found || hit;
      above += in_d;
    }
    cut.rank -= static_cast<int>(above_bin);
    cut.lo += static_cast<uint32_t>(bin) << shift;
  }
  cut.whole = in_bin == static_cast<uint32_t>(cut.rank);
  __syncwarp(); // the caller may rewrite the scratch
  return cut;
}

// Keeps exactly the `topk` largest of the buffer's count (> topk) entries in slots [0, topk) and
// raises thr to the smallest of them. find_cut gives the bin of the topk-th largest; the kept
// set: every entry above the bin, and the bin's entries: all of them, or (one key value, ties)
// the first `rank` in slot order.
// Cost: ~2 passes over the buffer for the levels, 1 for the kept set.
template <typename W>
__device__ void compact(Candidates& c, int topk, int slack, int lane) {
  const int n = c.count;
  const uint32_t kmax = __reduce_max_sync(kFull, c.kmax);
  const Cut cut = find_cut<W>(c, n, topk, slack, lane);
  const uint32_t lo = cut.lo;
  const int rank = cut.rank;
  const bool whole = cut.whole;

  // Slots [0, topk) that lose their entry, in order; as many survivors of [topk, n) fill them.
  // kWhole: an entry is kept when it is at least lo; otherwise (lo one key value) when above lo
  // or among the first `rank` equal to it.
  uint32_t* holes = c.scratch;
  uint32_t kept_min = lo; // the smallest kept key: lo unless the bin is kept whole (then tracked)
  auto keep_pass = [&](auto whole_tag) {
    constexpr bool kWhole = decltype(whole_tag)::value;
    int taken = 0; // entries equal to lo kept so far, in slot order
    auto keep_of = [&](uint32_t key, bool valid) {
      if constexpr (kWhole) {
        return valid && key >= lo;
      } else {
        const bool equal = valid && key == lo;
        const uint32_t equals = __ballot_sync(kFull, equal);
        const bool keep =
            valid && (key > lo || (equal && taken + __popc(equals & lanes_below(lane)) < rank));
        taken += __popc(equals);
        return keep;
      }
    };
    int hole_count = 0;
    for_each_key<W>(c.keys, 0, topk, lane, [&](uint32_t key, int i, bool valid, int) {
      const bool keep = keep_of(key, valid); // every lane (keep_of may ballot)
      if (kWhole && keep) kept_min = min(kept_min, key);
      const bool hole = valid && !keep;
      const uint32_t hole_mask = __ballot_sync(kFull, hole);
      if (hole) holes[hole_count + __popc(hole_mask & lanes_below(lane))] = i;
      hole_count += __popc(hole_mask);
    });
    __syncwarp();
    int filled = 0;
    for_each_key<W>(c.keys, topk, n, lane, [&](uint32_t key, int i, bool valid, int) {
      const bool keep = keep_of(key, valid);
      const uint32_t keep_mask = __ballot_sync(kFull, keep);
      if (keep) {
        if constexpr (kWhole) kept_min = min(kept_min, key);
        const int slot = static_cast<int>(holes[filled + __popc(keep_mask & lanes_below(lane))]);
        c.keys[slot] = key;
        c.out[slot] = c.nidx[i - topk];
      }
      filled += __popc(keep_mask);
    });
  };
  if (whole) {
    kept_min = ~0u; // this lane's smallest kept key, reduced over the warp below
    keep_pass(std::true_type{});
  } else {
    keep_pass(std::false_type{});
  }
  __syncwarp();
  // Every key dropped here is below lo <= kept_min, and a later key equal to the smallest kept
  // one cannot change the selected multiset: thr is that smallest kept key.
  if (whole) kept_min = __reduce_min_sync(kFull, kept_min);
  c.count = topk;
  c.thr = kept_min;
  c.kmin = kept_min;
  c.kmax = kmax;
}

// A key's score for one query: its partial sums from[r * kBlockKeys], r < parts (one per warp
// of the query's MMA rows; parts > 1 at H_p >= 64 only), added.
__device__ __forceinline__ float query_score(const float* from, int parts) {
  float s = from[0];
  for (int r = 1; r < parts; ++r) s += from[r * kBlockKeys];
  return s;
}

// Offers kBlocks blocks' 64 scores each of query `q` to its buffer: block i's partials in
// part[i * block_stride + (q * parts + r) * kBlockKeys + key]. The buffer compacts first when the
// blocks might not fit, or, short of that, when `gang` says another query of the CTA compacts now
// and this one holds more than S / 4 extra entries: the CTA waits for its slowest compaction at
// the next barrier anyway, so compactions done together cost the time of one. Returns whether
// the buffer must compact before the next kBlocks blocks (kBlocks * 64 <= S).
template <typename W, int kBlocks = 1>
__device__ bool select_block(Candidates& c, const float* part, int block_stride, int q, int parts,
                             const int (&block)[kBlocks], int lo, int hi, int topk, int slack,
                             bool gang, int lane) {
  const int capacity = topk + slack;
  if (c.count > capacity - kBlocks * kBlockKeys || (gang && c.count > topk + slack / 4)) {
    compact<W>(c, topk, slack, lane);
  }
  // Every 32-key half scored and balloted before any appends (independent work in flight).
  constexpr int kHalves = kBlocks * kBlockKeys / 32;
  uint32_t key[kHalves], takes[kHalves];
  bool take[kHalves];
  const float* mine = part + q * parts * kBlockKeys + lane; // the query's first partial row
  auto key_index = [&](int half) { return block[half / 2] * kBlockKeys + (half % 2) * 32 + lane; };
#pragma unroll
  for (int half = 0; half < kHalves; ++half) {
    key[half] = order_key(query_score(mine + (half / 2) * block_stride + (half % 2) * 32, parts));
    take[half] = key_index(half) >= lo && key_index(half) < hi && key[half] > c.thr;
  }
#pragma unroll
  for (int half = 0; half < kHalves; ++half) takes[half] = __ballot_sync(kFull, take[half]);
#pragma unroll
  for (int half = 0; half < kHalves; ++half) {
    if (take[half]) {
      const int slot = c.count + __popc(takes[half] & lanes_below(lane));
      c.keys[slot] = key[half];
      if (slot < topk) {
        c.out[slot] = key_index(half);
      } else {
        c.nidx[slot - topk] = key_index(half);
      }
      c.kmax = max(c.kmax, key[half]);
      c.kmin = min(c.kmin, key[half]);
    }
    c.count += __popc(takes[half]);
  }
  return c.count > capacity - kBlocks * kBlockKeys;
}

// A sampled block (sample_blocks) of query q: its 64 scores appended without a window test or key
// indices (every sampled key lies in every long window of the CTA; the sample is dropped once
// it has given the threshold).
__device__ void sample_block(Candidates& c, const float* part, int q, int parts, int lane) {
  const float* mine = part + q * parts * kBlockKeys + lane;
#pragma unroll
  for (int half = 0; half < kBlockKeys / 32; ++half) {
    const uint32_t key = order_key(query_score(mine + half * 32, parts));
    c.keys[c.count + half * 32 + lane] = key;
    c.kmax = max(c.kmax, key);
    c.kmin = min(c.kmin, key);
  }
  c.count += kBlockKeys;
}

// After the last sampled block: the query's threshold from the sample's rank-th largest key
// (admitting that key's value: thr one below it), then an empty buffer for the stream.
template <typename W>
__device__ void sample_threshold(Candidates& c, int rank, int slack, int lane) {
  const Cut cut = find_cut<W>(c, c.count, rank, slack, lane);
  uint32_t kth = cut.lo; // the bin is one key value, or taken whole: then its smallest entry
  if (cut.whole) {
    uint32_t least = ~0u;
    for_each_key<W>(c.keys, 0, c.count, lane, [&](uint32_t key, int, bool valid, int) {
      if (valid && key >= cut.lo) least = min(least, key);
    });
    kth = __reduce_min_sync(kFull, least);
  }
  __syncwarp(); // every lane has read the sample before the stream overwrites it
  c.count = 0;
  c.thr = kth > 0 ? kth - 1 : 0;
  c.kmin = ~0u;
  c.kmax = 0;
}

template <int KSTEPS, int SEL>
__global__ void __launch_bounds__(block_threads(SEL), 1)
    indexer_topk_kernel(const IndexerTopkParams p, const Plan plan,
                        const __grid_constant__ CUtensorMap k_map) {
  static_assert(SEL == 0 || KSTEPS <= 8, "Q's registers leave the selection warps no room");
  constexpr bool kWs = SEL > 0;
  constexpr bool kPairs = SEL == 4; // the MMA loop takes blocks in pairs (3 K stages: ws_stages)
  constexpr bool kTma = tma_tiles(SEL); // the stream's K tiles by TMA (k_map; unused otherwise)
  static_assert(!kTma || (kWs && !kPairs && ws_stages(SEL) == kTmaStages));
  constexpr int kBlockThreads = block_threads(SEL);
  // Sampled thresholds (header) where Q's registers leave room for the second pass: D_I <= 128.
  // At D_I 256 (KSTEPS 16) its registers would spill in the MMA loop.
  constexpr bool kSampled = KSTEPS <= 8;
  extern __shared__ __align__(128) unsigned char smem[];
  // Everything from a 1024-byte boundary (the K tiles' swizzle pattern is anchored there).
  unsigned char* const sm = smem + (1024 - dev::smem_addr(smem) % 1024) % 1024;
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / 32, lane = tid % 32;
  const int row0 = static_cast<int>(gridDim.x - 1 - blockIdx.x) * plan.bq;
  const int bq = min(plan.bq, p.tq - row0);
  const int topk = p.topk;
  int* win_lo = reinterpret_cast<int*>(sm + plan.win_offset);
  int* win_hi = win_lo + kMaxQueries;
  int* seg_first = reinterpret_cast<int*>(sm + plan.seg_offset);
  int* seg_last = seg_first + kMaxQueries;
  int* seg_count = seg_last + kMaxQueries;
  int* sample = seg_count + 1; // sampled blocks | rank << 8, first key, keys (sample_blocks)
  int* gang_at = sample + 3;   // warp-specialized: the latest slot a selection warp compacts at
  // TMA: mbarrier full[s] completes when stage s's tile has landed; retired[s] counts the MMA
  // warps' retirements of stage s (the last of 8 refills it).
  const uint32_t full_bars = dev::smem_addr(sm + plan.bar_offset);
  const uint32_t retired = full_bars + 8 * kTmaStages;

  // Windows; short ones (<= topk keys, padding rows too) are answered here and leave the stream.
  if (tid < kMaxQueries) {
    int lo = 0, hi = 0;
    if (tid < bq) query_window(p, row0 + tid, lo, hi);
    win_lo[tid] = lo;
    win_hi[tid] = hi;
  }
  __syncthreads();
  for (int q = 0; q < bq; ++q) {
    const int lo = win_lo[q], length = win_hi[q] - lo;
    if (length > topk) continue;
    int32_t* row = p.out + int64_t{row0 + q} * topk;
    for (int j = tid; j < topk; j += kBlockThreads) row[j] = j < length ? lo + j : -1;
  }
  // The key blocks the long windows touch, as sorted disjoint intervals; and the sample's keys:
  // those every long window sees, [lo_all, hi_all), where they all start at the same key.
  if (tid == 0) {
    int count = 0;
    int lo_all = -1, hi_all = INT_MAX;
    bool shared = true;
    for (int q = 0; q < bq; ++q) {
      if (win_hi[q] - win_lo[q] <= topk) continue;
      shared = shared && (lo_all < 0 || win_lo[q] == lo_all);
      lo_all = win_lo[q];
      hi_all = min(hi_all, win_hi[q]);
      int first = win_lo[q] / kBlockKeys, last = (win_hi[q] - 1) / kBlockKeys;
      int at = count++; // insertion by first block
      while (at > 0 && seg_first[at - 1] > first) {
        seg_first[at] = seg_first[at - 1];
        seg_last[at] = seg_last[at - 1];
        --at;
      }
      seg_first[at] = first;
      seg_last[at] = last;
    }
    int merged = 0;
    for (int s = 0; s < count; ++s) {
      if (merged > 0 && seg_first[s] <= seg_last[merged - 1] + 1) {
        seg_last[merged - 1] = max(seg_last[merged - 1], seg_last[s]);
      } else {
        seg_first[merged] = seg_first[s];
        seg_last[merged] = seg_last[s];
        ++merged;
      }
    }
    *seg_count = merged;
    int rank = 0;
    const int sampled = kSampled && shared && lo_all >= 0
                            ? sample_blocks(hi_all - lo_all, topk, topk + plan.slack, rank)
                            : 0;
    sample[0] = sampled | rank << 8;
    sample[1] = lo_all;
    sample[2] = hi_all - lo_all;
    *gang_at = -1;
    if constexpr (kTma) {
      for (int s = 0; s < kTmaStages; ++s) {
        dev::mbarrier_init(full_bars + 8 * s, 1);
        reinterpret_cast<uint32_t*>(sm + plan.bar_offset + 8 * kTmaStages)[s] = 0;
      }
      dev::fence_mbarrier_init();
    }
  }
  __syncthreads();
  const int segments = *seg_count;
  if (segments == 0) return;
  const int sample_count = kSampled ? sample[0] & 0xff : 0, sample_rank = sample[0] >> 8;
  const int sample_lo = sample[1], sample_n = sample[2];
  // Cursor over the blocks: the sampled blocks (-sampled .. -1), then the segments' blocks;
  // block == INT_MAX past the end. The segment's last block stays in a register (no shared-memory
  // load on the loop's path but at a segment's end).
  struct Cursor {
    int seg, block, last;
  };
  auto start = [&](int sampled) {
    return Cursor{0, sampled > 0 ? -sampled : seg_first[0], seg_last[0]};
  };
  auto advance = [&](Cursor& c) {
    if (c.block < 0) {
      c.block = c.block + 1 < 0 ? c.block + 1 : seg_first[0];
    } else if (++c.block > c.last) {
      if (++c.seg < segments) {
        c.block = seg_first[c.seg];
        c.last = seg_last[c.seg];
      } else {
        c.block = INT_MAX;
      }
    }
  };
  const int hp = plan.hp;
  const int parts = hp > 32 ? hp / 32 : 1; // warps (partial sums) of a query
  const int capacity = topk + plan.slack;
  auto long_window = [&](int q) { return q < bq && win_hi[q] - win_lo[q] > topk; };
  // Query q's candidate buffer (empty).
  auto candidates = [&](int q) {
    unsigned char* mine = sm + plan.query_offset + q * plan.query_bytes;
    return Candidates{reinterpret_cast<uint32_t*>(mine),
                      reinterpret_cast<int32_t*>(mine + 4 * capacity),
                      reinterpret_cast<uint32_t*>(mine + 4 * (capacity + plan.slack)),
                      p.out + int64_t{row0 + q} * topk,
                      0,
                      0u,
                      ~0u,
                      0u};
  };
  int blocks = 0; // key blocks in all
  for (int s = 0; s < segments; ++s) blocks += seg_last[s] - seg_first[s] + 1;
  // The selection passes' walk (Walk): the selection warps 8 keys ahead in whole steps; the
  // lockstep kernel 4, or 2 where Q's registers leave too few for 4.
  using W = Walk<(SEL > 0 ? 8 : KSTEPS >= 16 ? 2 : 4), (SEL > 0)>;
  float* part = reinterpret_cast<float*>(sm + plan.part_offset); // [ring][kParts][kBlockKeys]
  // Offers block b's scores of query q (partials in `from`) to its buffer: a sampled block's
  // to the sample, whose last one sets the threshold. Returns whether the buffer must compact
  // before the next block.
  auto offer = [&](Candidates& cand, const float* from, int q, int b, int lo, int hi, bool gang) {
    if (b < 0) {
      sample_block(cand, from, q, parts, lane);
      if (b == -1) sample_threshold<W>(cand, sample_rank, plan.slack, lane);
      return false;
    }
    const int one[1] = {b};
    return select_block<W>(cand, from, 0, q, parts, one, lo, hi, topk, plan.slack, gang, lane);
  };
  // After a pass over the blocks, whether a query must stream again: from a threshold of 0 a long
  // window's keys were all candidates until the first compaction, so count >= topk; from a
  // sampled one fewer than topk may have been. Otherwise the last compaction leaves the exact
  // top-k.
  auto finish = [&](Candidates& cand, bool mine, int sampled) {
    const bool again = mine && sampled > 0 && cand.count < topk;
    if (mine && !again && cand.count > topk) compact<W>(cand, topk, plan.slack, lane);
    return again;
  };

  // Warp-specialized: the selection warps. Selection warp s takes query s (SEL >= the CTA's
  // queries: make_plan) slot after slot from the ring (full: the MMA warps have stored the
  // slot's blocks' partials; empty: the slot may take the blocks kRing slots later), and
  // compacts it a last time after the last block. A compaction here delays the MMA
  // warps only when it outlasts the ring. A warp without a long-window query still takes part in
  // every barrier.
  if constexpr (kWs) {
    if (warp >= kWarps) {
      dev::setmaxnreg_dec<select_regs(SEL)>();
      const int q = warp - kWarps;
      const int lo = win_lo[q], hi = win_hi[q];
      bool mine = long_window(q);
      // A second pass only for a query the sample misled (a loop here: these warps issue no
      // wgmma, whose descriptors a loop would move out of the uniform datapath; see stream()).
      for (int pass = 0;; ++pass) {
        const int sampled = pass == 0 ? sample_count : 0, total = blocks + sampled;
        Candidates cand = candidates(q);
        Cursor cur = start(sampled);
        // A slot's blocks at a time: both of a full slot of stream blocks offered together
        // (twice the independent work per call) where S holds them.
        static_assert(kSlotBlocks == 2, "slots of two blocks");
        for (int group = 0; cur.block != INT_MAX; ++group) {
          const int slot = group % kRing;
          dev::named_barrier_sync(kFullBarrier + slot, kBlockThreads);
          const float* part_s = part + slot * kSlotBlocks * kParts * kBlockKeys;
          int pair[2];
          pair[0] = cur.block;
          advance(cur);
          pair[1] = cur.block;
          if (pair[1] != INT_MAX) advance(cur);
          if (mine) {
            // Gang compaction, loosely: a warp that must compact at this slot says so in
            // gang_at, and a warp that sees a compaction at this slot or the one before compacts
            // too if its buffer holds more than S / 4 extra entries (select_block; gang_at is not
            // read otherwise), so that the ring waits for one compaction where it would wait for
            // several one after another.
            const int stamp = pass << 24 | group;
            const bool must = cand.count > capacity - kSlotBlocks * kBlockKeys;
            if (must && lane == 0) atomicMax(gang_at, stamp);
            // ... unless the rest of its window fits the buffer: it would not compact again.
            const int rest = pair[0] >= 0 ? hi - pair[0] * kBlockKeys : hi - lo;
            const bool gang =
                must ||
                (cand.count > topk + plan.slack / 4 && cand.count + rest > capacity &&
                 __shfl_sync(kFull, *reinterpret_cast<volatile int*>(gang_at), 0) >= stamp - 1);
            if (pair[0] >= 0 && pair[1] != INT_MAX && plan.slack >= 2 * kBlockKeys) {
              select_block<W, 2>(cand, part_s, kParts * kBlockKeys, q, parts, pair, lo, hi, topk,
                                 plan.slack, gang, lane);
            } else {
              offer(cand, part_s, q, pair[0], lo, hi, gang);
              if (pair[1] != INT_MAX) {
                offer(cand, part_s + kParts * kBlockKeys, q, pair[1], lo, hi, false);
              }
            }
          }
          if ((group + kRing) * kSlotBlocks < total) {
            dev::named_barrier_arrive(kEmptyBarrier + slot, kBlockThreads);
          }
        }
        mine = finish(cand, mine, sampled);
        if (!__syncthreads_or(mine)) return; // the MMA warps meet here after each pass too
      }
    }
  }

  // This thread's rows of the two M tiles of its warpgroup, R = 64 * (2 * warpgroup + mt) +
  // 16 * (warp % 4) + g + 8 half: a warp's 32 rows (r = g + 8 half + 16 mt) are 32 heads of one
  // query, so a thread's four rows are heads of the same query and the head sum reduces over
  // the 8 lanes of a column only. H_p <= 32: warp w holds query w, heads r (r >= H_I padding);
  // H_p >= 64: a query spans H_p / 32 warps (warp w: query w / (H_p / 32), heads 32 (w % (H_p /
  // 32)) + r), whose partial sums selection adds. Zero rows for padding. Q enters the tensor
  // cores from registers (the wgmma A operand, m16n8k16 A fragments), loaded once.
  if constexpr (kWs) dev::setmaxnreg_inc<mma_regs(SEL)>();
  const int g = lane >> 2, pair = 2 * (lane & 3);
  uint32_t qa[2][KSTEPS][4]; // [mt][ks]: rows R, R + 8 at k 16 ks + pair (+1), then k + 8
  float wr[2][2];            // [mt][half]: the weights of rows R and R + 8
  const auto* qp = static_cast<const __nv_bfloat16*>(p.q);
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int q = warp / parts, head = 32 * (warp % parts) + g + 8 * half + 16 * mt;
      const bool valid = q < bq && head < p.heads && win_hi[q] - win_lo[q] > topk;
      const int64_t row = row0 + q;
      const __nv_bfloat16* qrow = qp + (valid ? row * p.q_t + head * p.q_h : 0);
#pragma unroll
      for (int ks = 0; ks < KSTEPS; ++ks) {
#pragma unroll
        for (int kh = 0; kh < 2; ++kh) {
          const int d = ks * 16 + kh * 8 + pair;
          qa[mt][ks][half + 2 * kh] =
              valid && d < p.dim ? *reinterpret_cast<const uint32_t*>(qrow + d) : 0u;
        }
      }
      wr[mt][half] = valid ? p.w[row * p.w_t + head] : 0.f;
    }
  }

  // Not warp-specialized: the MMA warps select too. The query this warp selects for: its own
  // (H_p <= 32), or, when a query spans several warps, the one whose first warp it is (the
  // selection work spread over both warpgroups).
  const int sel_q = warp / parts;
  bool select_warp = !kWs && warp % parts == 0 && long_window(sel_q);
  const int query_lo = select_warp ? win_lo[sel_q] : 0;
  const int query_hi = select_warp ? win_hi[sel_q] : 0;

  // K tiles: 64 rows of 16 * KSTEPS channels, zero past tk and past D_I, swizzled chunks. A
  // thread copies chunk tid % kChunks of rows r0 + m * kRowStep, m < kLoads: kRowStep is a
  // multiple of 8, so every copy has row r0's swizzle and the addresses step by constants.
  const auto* kp = static_cast<const __nv_bfloat16*>(p.k);
  const uint32_t tiles = dev::smem_addr(sm);
  constexpr int kChunks = 2 * KSTEPS; // 16-byte chunks of a padded row
  constexpr int kRowStep = copy_row_step(KSTEPS);
  constexpr int kLoads = kBlockKeys / kRowStep;
  static_assert(kRowStep % 8 == 0 && kBlockKeys % kRowStep == 0);
  const int chunk = tid % kChunks, r0 = tid / kChunks;
  const bool chunk_ok = chunk < p.dim / 8;
  const uint32_t dst0 = dev::sw128(r0, chunk, kBlockKeys);
  const int64_t src_step = plan.k_rows; // kRowStep * p.k_t
  // this thread's first copy of block 0
  const __nv_bfloat16* const k_first = kp + int64_t{r0} * p.k_t + chunk * 8;
  const bool all_chunks = p.dim == 16 * KSTEPS; // every chunk of a row holds channels
  auto load_tile = [&](int block, int stage) {
    const uint32_t dst = tiles + stage * plan.stage_bytes + dst0;
    if (block < 0) { // sampled block -1 - s: keys i = 64 s + row of the sample (sample_blocks)
      const int shift = __ffs(2 * kBlockKeys * sample_count) - 1; // log2(2 m): a power of two
      const int i0 = (block + sample_count) * kBlockKeys + r0;
#pragma unroll
      for (int m = 0; m < kLoads; ++m) {
        const int64_t key = sample_lo + ((2 * int64_t{i0 + m * kRowStep} + 1) * sample_n >> shift);
        dev::cp_async_16(dst + m * kRowStep * 128,
                         chunk_ok ? static_cast<const void*>(kp + key * p.k_t + chunk * 8) : p.k,
                         chunk_ok ? 16 : 0);
      }
      return;
    }
    if constexpr (!kTma) { // (TMA: a stream block's tile is tma_tile's)
      const __nv_bfloat16* src = k_first + block * plan.k_block;
      // Every copy of every thread exists (any block but a partial last one, where D_I needs no
      // padding): a warp-uniform test, no per-thread row arithmetic on the loop's path.
      if (all_chunks && (block + 1) * kBlockKeys <= p.tk) {
#pragma unroll
        for (int m = 0; m < kLoads; ++m)
          dev::cp_async_16(dst + m * kRowStep * 128, src + m * src_step, 16);
        return;
      }
      const int rows = p.tk - block * kBlockKeys - r0; // copies m with m * kRowStep < rows exist
#pragma unroll
      for (int m = 0; m < kLoads; ++m) {
        const bool ok = chunk_ok && m * kRowStep < rows;
        dev::cp_async_16(dst + m * kRowStep * 128,
                         ok ? static_cast<const void*>(src + m * src_step) : p.k, ok ? 16 : 0);
      }
    }
  };
  // TMA, by one thread: stream block `block`'s tile into `stage`, one box of 64 keys and 64
  // channels (a 128-byte-swizzled atom; zeros past tk and D_I) per atom, landing on full[stage].
  auto tma_tile = [&](int block, int stage) {
    constexpr int kAtoms = (kChunks + 7) / 8; // plan.atoms; kAtoms boxes are plan.stage_bytes
    const uint32_t bar = full_bars + 8 * stage;
    dev::mbarrier_arrive_expect_tx(bar, kAtoms * kBlockKeys * 128);
#pragma unroll
    for (int a = 0; a < kAtoms; ++a) {
      dev::tma_load_2d(tiles + stage * plan.stage_bytes + a * kBlockKeys * 128, &k_map, 64 * a,
                       block * kBlockKeys, bar);
    }
  };
  uint32_t phases = 0; // TMA: bit s, the parity of the next phase of full[s] to wait for

  // The block's 16 weighted sums per lane after M tile 0 (v), or, at KSTEPS 16, where Q's
  // registers leave no room to keep them across the loop, their reduce-scatter (first).
  constexpr bool kEarlyReduce = KSTEPS >= 16;
  float v[8][2];
  float2 first = make_float2(0.f, 0.f);
  // M tile 1's weighted ReLU, added to v, reduced over the column's 8 lanes: this warp's partial
  // of the block (its query's scores when H_p <= 32), stored in `slot` for the selection.
  auto finish_block = [&](const float(&acc1)[32], float* slot) {
    weigh_rows(acc1, wr[1], v);
    float2 sum = reduce_rows(v, lane);
    if constexpr (kEarlyReduce) sum = make_float2(sum.x + first.x, sum.y + first.y);
    *reinterpret_cast<float2*>(slot + warp * kBlockKeys + 8 * g + pair) = sum;
  };
  // Warp-specialized: block b's partials into place b % kSlotBlocks of ring slot b / kSlotBlocks
  // % kRing, once the selection has taken the slot's previous blocks; the slot is full after its
  // last block.
  int total = 0; // blocks of this pass: the sampled ones (first pass) and the window's
  auto publish = [&](const float(&acc1)[32], int b) {
    const unsigned ub = static_cast<unsigned>(b); // b >= 0: divisions without sign fix-ups
    const unsigned group = ub / kSlotBlocks;
    const int at = static_cast<int>(ub % kSlotBlocks), slot = static_cast<int>(group % kRing);
    if (at == 0 && group >= static_cast<unsigned>(kRing))
      dev::named_barrier_sync(kEmptyBarrier + slot, kBlockThreads);
    finish_block(acc1, part + (slot * kSlotBlocks + at) * kParts * kBlockKeys);
    if (at == kSlotBlocks - 1 || b == total - 1) {
      dev::named_barrier_arrive(kFullBarrier + slot, kBlockThreads);
    }
  };

  // The loop runs each warpgroup's two M tiles half a block apart, so that the CUDA cores weigh
  // one tile's scores while the tensor cores run the other's MMA. Per block j:
  //   B1  tile j is visible; every MMA warp has retired both M tiles of block j - 1 (whose
  //       stage the next copy reuses); not warp-specialized: whether some query must compact at
  //       this block (select_block). TMA, a stream block: the wait for tile j's mbarrier instead
  //       issue M tile 0 of block j
  //       warp-specialized: copy tile j + 1 into the other stage (TMA: only where block j is
  //       a sampled one; else the warp counts its retirement of block j - 1, and the last one
  //       to retire it copies tile j + 1); publish block j - 1 (M tile 1's rows, held since
  //       its retirement)
  //       otherwise: finish block j - 1 into `part`; B2 (the partials are visible); copy tile
  //       j + 1; select block j - 1 (under the MMAs)
  //       issue M tile 1 of block j
  //       retire M tile 0 of block j, weigh its rows into v; retire M tile 1, hold its rows
  // The tensor cores drain once a block (the last wait, then B1 and an issue), not for an
  // epilogue. M tile 1's accumulator is copied to `held` right after its wait: ptxas (CUDA
  // 13.0) tracks wgmma results within a loop iteration only, and a read in the next iteration
  // of registers a wgmma defined gets a wait injected before it (C7514), serializing the MMAs.
  // With 4 selection warps (kPairs) the loop takes two blocks an iteration and drains once a
  // pair: the second block's B1 and M tile 0 run under the first's M tile 1 (H_I 64:
  // 1.02-1.03x); with 8 the third K stage it needs would cost S (0.95-0.99x at H_I 32).
  // Pass 0 streams the sampled blocks first where the CTA samples; pass 1 (rare: a query the
  // sample misled, finish()) streams the window again for such queries only. Two inlined calls,
  // not a loop: inside a loop that some warps might leave, ptxas keeps the wgmma descriptors in
  // vector registers (an R2UR before each wgmma) instead of the uniform datapath.
  auto stream = [&](int pass) {
    const int sampled = pass == 0 ? sample_count : 0;
    total = blocks + sampled;
    Candidates cand = candidates(sel_q);
    Cursor load = start(sampled), cur = load; // the next tile to copy, the next to compute
    int j = 0;                                // blocks issued
    int stage = 0; // the stage of tile j: j % 2 (j % 3 with blocks in pairs)
    // Copies: tile j + 1's, by every MMA thread after block j's barrier B1 (below), where B1 says
    // that every MMA warp has retired block j - 1, the stage's previous tile. TMA: where block j
    // is a stream block (no B1), the last MMA warp to retire block j copies tile j + 2 instead
    // (retire); the sampled blocks, a prefix of pass 0, and the first stream block after them
    // still come after B1. So where block j + 1 is a stream block, tile j + 2 is not yet copied
    // when block j retires, and where it is a sampled one, it is (at B1 of block j + 1).
    if (kTma && load.block >= 0) { // tiles 0 and 1 of stream blocks
      if (tid == 0) tma_tile(load.block, 0);
      advance(load);
      if (load.block != INT_MAX) {
        if (tid == 0) tma_tile(load.block, 1);
        advance(load);
      }
    } else {
      load_tile(load.block, 0);
      advance(load);
      dev::cp_async_commit();
    }
    auto load_next = [&](int stage) {
      if (load.block != INT_MAX) {
        if (kTma && load.block >= 0) {
          if (tid == 0) tma_tile(load.block, stage);
        } else {
          load_tile(load.block, stage);
        }
        advance(load);
      }
      dev::cp_async_commit();
    };
    // TMA: block b (the one before `cur`), in `stage`, retired by this warp (both M tiles' wgmma
    // waits behind it); the warp that retires it last copies tile b + 2 (`load`) into the stage
    // where block b + 1 is a stream block (else B1 copied tile b + 2) and there is a tile b + 2.
    // The count's acquire-release add orders every warp's retirement before the copy. (Called
    // under the next block's M tile 0: at the end of block b's iteration, ptxas would move M tile
    // 0's weighing below the last wgmma wait.)
    auto retire = [&](int stage) {
      const bool refill = cur.block >= 0 && load.block != INT_MAX;
      __syncwarp(); // every lane's wgmma wait before lane 0's release
      if (lane == 0) {
        const uint32_t before = dev::atomic_add_acq_rel(retired + 4 * stage, 1);
        if (refill && before % kWarps == kWarps - 1) tma_tile(load.block, stage);
      }
      if (refill) advance(load);
    };
    int prev_block = INT_MIN; // the block whose M tile 1 is held (finished in the next one)
    int need = 0; // not warp-specialized: this warp's query must compact at its next block
    float acc[2][32];
    float held[32] = {}; // M tile 1's scores of block j - 1 (the first iteration's are unused)
#pragma unroll
    for (int t = 0; t < 8; ++t) v[t][0] = v[t][1] = 0.f;
    // M tile mt of the K tile at `desc`; k step ks reads chunk 2 ks of the tile: its descriptor
    // is the tile's plus a constant.
    auto issue = [&](int mt, uint64_t desc) {
      dev::wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < KSTEPS; ++ks) {
        dev::wgmma_m64n64k16_rs(acc[mt], qa[mt][ks],
                                dev::desc_advance(desc, dev::sw128(0, 2 * ks, kBlockKeys)), ks > 0);
      }
      dev::wgmma_commit();
    };
    auto weigh_tile0 = [&] { // M tile 0 of block j, retired (tile 1 stays in flight)
      dev::wgmma_wait<1>();
      dev::fence_regs(acc[0]);
#pragma unroll
      for (int t = 0; t < 8; ++t) v[t][0] = v[t][1] = 0.f;
      weigh_rows(acc[0], wr[0], v);
    };
    auto hold_tile1 = [&] { // M tile 1 of block j, retired, its rows copied to `held`
      dev::wgmma_wait<0>();
      dev::fence_regs(acc[1]);
#pragma unroll
      for (int i = 0; i < 32; ++i) held[i] = dev::opaque_copy(acc[1][i]);
    };
    // B1: tile j is visible (this thread's copies landed, every MMA thread's behind the barrier)
    // and every MMA warp has retired block j - 1; lockstep: the barrier also says whether some
    // query must compact at this block (gang). Returns tile j's descriptor.
    bool gang = false;
    // TMA, a stream block: the tile's mbarrier instead, no barrier of the MMA warps.
    auto begin_block = [&] {
      if (kTma && cur.block >= 0) {
        dev::mbarrier_wait(full_bars + 8 * stage, phases >> stage & 1u);
        phases ^= 1u << stage;
      } else {
        dev::cp_async_wait<0>();
        dev::fence_proxy_async(); // the tensor cores read this thread's copies of tile j
        if constexpr (kWs) {
          dev::named_barrier_sync(kMmaBarrier, kThreads);
        } else {
          gang = __syncthreads_or(need) != 0;
        }
      }
      return dev::sw128_desc(tiles + stage * plan.stage_bytes);
    };
    if constexpr (kPairs) {
      // Blocks in pairs (one loop iteration, so ptxas sees which wgmma each wait retires): the
      // second block's B1 and its M tile 0 run while the first block's M tile 1 is in flight,
      // whose rows are published under the second block's tile 0; the tensor cores drain once a
      // pair. Tile j + 1's copy goes to the stage of tile j - 2 (3 stages).
      auto end_block = [&] {
        advance(cur);
        stage = (stage + 1) % ws_stages(SEL);
        ++j;
      };
      while (cur.block != INT_MAX) {
        uint64_t desc = begin_block(); // the pair's first block: nothing in flight
        issue(0, desc);
        load_next((stage + 1) % ws_stages(SEL));
        if (j > 0) publish(held, j - 1);
        issue(1, desc);
        weigh_tile0();
        end_block();
        if (cur.block == INT_MAX) { // an odd count: the last block is a pair's first
          dev::wgmma_wait<0>();
          dev::fence_regs(acc[1]);
          publish(acc[1], j - 1);
          return false;
        }
        desc = begin_block(); // the second: the first's M tile 1 in flight
        issue(0, desc);
        load_next((stage + 1) % ws_stages(SEL));
        dev::wgmma_wait<1>(); // the first block's M tile 1
        dev::fence_regs(acc[1]);
        publish(acc[1], j - 1);
        issue(1, desc);
        weigh_tile0();
        hold_tile1(); // published in the next pair's first block
        end_block();
      }
      publish(held, j - 1); // the last block was a pair's second
      return false;
    } else {
      for (; cur.block != INT_MAX; stage ^= 1, ++j) {
        const uint64_t desc = begin_block();
        issue(0, desc);
        if constexpr (kWs) {
          if (!kTma || cur.block < 0) load_next(stage ^ 1);
          if (kTma && j > 0) retire(stage ^ 1); // block j - 1
          if (j > 0) publish(held, j - 1);
          issue(1, desc);
        } else {
          finish_block(held, part); // tile 1 of block j - 1
          __syncthreads();          // B2
          issue(1, desc);
          // The next tile's copies after the MMA's issue, which they would otherwise delay.
          load_next(stage ^ 1);
          if (select_warp && prev_block != INT_MIN) {
            need = offer(cand, part, sel_q, prev_block, query_lo, query_hi, gang);
          }
        }
        weigh_tile0();
        if constexpr (kEarlyReduce) {
          first = reduce_rows(v, lane);
#pragma unroll
          for (int t = 0; t < 8; ++t) v[t][0] = v[t][1] = 0.f;
        }
        hold_tile1(); // weighed under tile 0 of block j + 1
        prev_block = cur.block;
        advance(cur);
      }
      bool again = false;
      if constexpr (kWs) {
        if (kTma) retire(stage ^ 1); // block j - 1 (counted: nothing left to copy)
        publish(held, j - 1);        // the last block's partials
      } else {
        // The last block: its tile 1, its partials, its selection.
        __syncthreads(); // the selection of the block before has read the partials
        finish_block(held, part);
        __syncthreads();
        if (select_warp) offer(cand, part, sel_q, prev_block, query_lo, query_hi, false);
        again = finish(cand, select_warp, sampled);
      }
      return again;
    }
  };
  const bool again = stream(0);
  if constexpr (kSampled) {
    if (__syncthreads_or(again)) { // warp-specialized: the selection warps' verdict
      select_warp = again;
      stream(1);
      __syncthreads_or(0); // the selection warps end their second pass with this barrier too
    }
  }
}

template <int KSTEPS, int SEL>
cudaError_t launch(const IndexerTopkParams& p, const Plan& plan, const CUtensorMap& k_map,
                   cudaStream_t stream) {
  auto* kernel = &indexer_topk_kernel<KSTEPS, SEL>;
  cudaError_t status =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, plan.smem_bytes);
  if (status != cudaSuccess) return status;
  const int blocks = (p.tq + plan.bq - 1) / plan.bq;
  kernel<<<blocks, block_threads(SEL), plan.smem_bytes, stream>>>(p, plan, k_map);
  return cudaGetLastError();
}

template <int KSTEPS>
cudaError_t launch(const IndexerTopkParams& p, const Plan& plan, const CUtensorMap& k_map,
                   cudaStream_t stream) {
  if constexpr (KSTEPS <= 8) {
    if (plan.sel == 8) return launch<KSTEPS, 8>(p, plan, k_map, stream);
    if (plan.sel == 4) return launch<KSTEPS, 4>(p, plan, k_map, stream);
  }
  return launch<KSTEPS, 0>(p, plan, k_map, stream);
}

// The driver's tensor-map encoder (through the runtime: no link to libcuda), or null.
decltype(&cuTensorMapEncodeTiled) tensor_map_encoder() {
  static const auto encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError(); // not the launch's error
      fn = nullptr;
    }
    return reinterpret_cast<decltype(&cuTensorMapEncodeTiled)>(fn);
  }();
  return encode;
}

// K [tk, D_I] (row stride k_t) as a TMA tensor map of 64-key, 64-channel boxes with the wgmma
// tiles' 128-byte swizzle; false where TMA cannot read it (rows not 16-byte aligned).
bool encode_k_map(const IndexerTopkParams& p, CUtensorMap& map) {
  const auto encode = tensor_map_encoder();
  if (encode == nullptr || p.tk < 1 || reinterpret_cast<uintptr_t>(p.k) % 16 != 0 ||
      p.k_t % 8 != 0) {
    return false;
  }
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(p.dim), static_cast<cuuint64_t>(p.tk)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(p.k_t) * 2};
  const cuuint32_t box[2] = {64, kBlockKeys};
  const cuuint32_t steps[2] = {1, 1};
  return encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(p.k), dims, strides,
                box, steps, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

} // namespace

bool indexer_topk_supported(int heads, int dim, int topk) {
  Plan plan;
  return make_plan(heads, dim, topk, kMaxQueries, true, plan);
}

cudaError_t launch_indexer_topk(const IndexerTopkParams& p, cudaStream_t stream) {
  Plan plan;
  if (p.tq <= 0) return cudaSuccess;
  if (!make_plan(p.heads, p.dim, p.topk, p.tq, true, plan)) return cudaErrorInvalidValue;
  CUtensorMap k_map{}; // read only by the kernels with 8 selection warps (tma_tiles)
  if (tma_tiles(plan.sel) && !encode_k_map(p, k_map)) {
    make_plan(p.heads, p.dim, p.topk, p.tq, false, plan); // the lockstep kernel
  }
  plan.k_block = int64_t{kBlockKeys} * p.k_t;
  plan.k_rows = int64_t{copy_row_step(plan.ksteps)} * p.k_t;
  int device = 0, optin = 0;
  cudaError_t status = cudaGetDevice(&device);
  if (status == cudaSuccess) {
    status = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  }
  if (status != cudaSuccess) return status;
  if (plan.smem_bytes > optin) return cudaErrorInvalidConfiguration;
  switch (plan.ksteps) {
    case 2:
      return launch<2>(p, plan, k_map, stream);
    case 4:
      return launch<4>(p, plan, k_map, stream);
    case 8:
      return launch<8>(p, plan, k_map, stream);
    default:
      return launch<16>(p, plan, k_map, stream);
  }
}

} // namespace kiln::backends::cuda
