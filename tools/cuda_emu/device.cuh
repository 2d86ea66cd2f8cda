// CPU emulation of plugins/backends/cuda/device.cuh, for running a kernel's own source on a
// machine without a GPU (tools/cuda_emu/run). One fiber (own stack) per CUDA thread, one CTA at a
// time on one OS thread; __syncthreads, named barriers (bar.sync/bar.arrive) and warp collectives
// (ldmatrix, mma, shfl, votes, redux) meet at barriers, and follow the PTX ISA's fragment layouts
// and lane rules, not the real device.cuh's code. What it checks: index math, tile layouts and
// swizzles, fragment mappings, barrier structure (a warp collective met by part of a warp, and a
// barrier part of the block never reaches, are reported with every thread's place), shared bounds
// it can see (ldmatrix/cp.async addresses, writes past the launch's dynamic size), shared-memory
// races and the asynchrony of cp.async and wgmma ("hazards" below). What it cannot: timing, bank
// conflicts, registers, the PTX strings, races in global memory, launch limits other than shared
// memory, collectives with partial masks (reported), threads that wait on each other without a
// barrier (spin loops hang); mma sums in a different order than the tensor cores.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <source_location>
#include <vector>

#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>
#include <csignal>
#include <string>

#define __launch_bounds__(...)
// Emulator code that touches shared memory itself: not instrumented (see "hazards" below).
#define EMU_NOSAN __attribute__((no_sanitize_thread))

struct EmuDim {
  unsigned x = 0, y = 0, z = 0;
};
// Per-thread built-ins, swapped with the running fiber.
inline EmuDim threadIdx;
inline int emu_tid;      // linear thread index in the block: warp emu_tid / 32
inline int emu_or_phase; // __syncthreads_or's alternating slot
inline EmuDim blockIdx;
inline EmuDim blockDim;
inline EmuDim gridDim;
inline int emu_or[2];
inline uint32_t emu_warp_u[32][32][8];
inline bool emu_exited[32][32]; // per block: lanes that returned (or do not exist)

using EmuLoc = std::source_location;

[[noreturn]] inline void emu_fail(const char* format, ...) {
  va_list args;
  va_start(args, format);
  fprintf(stderr, "cuda_emu: block (%u, %u, %u): ", blockIdx.x, blockIdx.y, blockIdx.z);
  vfprintf(stderr, format, args);
  va_end(args);
  fflush(stderr);
  abort();
}

// ---- fibers -------------------------------------------------------------------------------------
// The threads of a block are fibers of the launching OS thread, switched only where they wait at
// a barrier: the first runnable one runs next (EMU_SHUFFLE=<seed>: a random one, to vary the
// interleavings between barriers). A block whose unfinished threads all wait is deadlocked: every
// thread's place is reported. Each fiber has 256 KiB of stack above a guard page.
extern "C" void emu_switch(void** save_sp, void* load_sp);
#if defined(__x86_64__)
// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack, stores
// the stack pointer to *save_sp, and resumes the stack load_sp the same way (System V ABI).
asm(R"(
  .text
  .p2align 4
  .type emu_switch, @function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch, .-emu_switch
)");
#else
#error "cuda_emu: the fiber switch is written for x86-64"
#endif

struct EmuWhere {
  const char* what = nullptr; // null: not waiting
  const char* file = "";
  unsigned line = 0;
};
struct EmuFiber {
  void* sp = nullptr; // saved stack pointer while switched out
  unsigned char* stack = nullptr;
  EmuDim idx;
  int or_phase = 0;
  bool done = false;
  EmuWhere where;
};
struct EmuScheduler {
  static constexpr size_t kStack = 256 * 1024, kGuard = 4096;
  std::vector<EmuFiber> fibers;
  std::deque<int> runnable;
  int current = -1; // the running fiber
  void* launcher_sp = nullptr;
  std::function<void()> body; // the kernel call of the launch
  bool shuffle = false;
  std::mt19937 rng;
};
inline EmuScheduler emu_sched;

// Named barriers 1..15 of the running block (bar.sync / bar.arrive id, threads): the phase in
// progress has its thread count (0: no phase begun), its arrivals so far, the threads waiting in
// it, and its first arrival (for the report of a count that differs).
struct EmuNamedBar {
  int count = 0;
  int arrived = 0;
  std::vector<int> waiters;
  int first_tid = -1;
  const char* first_file = "";
  unsigned first_line = 0;
};
inline EmuNamedBar emu_named[16];

[[noreturn]] inline void emu_deadlock() {
  auto& s = emu_sched;
  fprintf(stderr, "cuda_emu: block (%u, %u, %u) is deadlocked: every unfinished thread waits\n",
          blockIdx.x, blockIdx.y, blockIdx.z);
  auto same = [](const EmuFiber& a, const EmuFiber& b) {
    return a.done == b.done && a.where.line == b.where.line &&
           (a.where.what == b.where.what || (a.where.what != nullptr && b.where.what != nullptr &&
                                             std::strcmp(a.where.what, b.where.what) == 0 &&
                                             std::strcmp(a.where.file, b.where.file) == 0));
  };
  const int threads = static_cast<int>(s.fibers.size());
  for (int w = 0; w * 32 < threads; ++w) {
    const int lanes = std::min(32, threads - 32 * w);
    for (int l = 0, end = 0; l < lanes; l = end) {
      const EmuFiber& f = s.fibers[32 * w + l];
      for (end = l + 1; end < lanes && same(s.fibers[32 * w + end], f);) ++end;
      if (f.done) {
        fprintf(stderr, "  warp %d lanes %2d-%2d: exited\n", w, l, end - 1);
      } else {
        fprintf(stderr, "  warp %d lanes %2d-%2d: wait at %s (%s:%u)\n", w, l, end - 1,
                f.where.what, f.where.file, f.where.line);
      }
    }
  }
  for (int id = 1; id < 16; ++id) {
    const EmuNamedBar& b = emu_named[id];
    if (b.count == 0) continue;
    fprintf(stderr, "  named barrier %d: %d of %d threads arrived (%zu waiting)\n", id, b.arrived,
            b.count, b.waiters.size());
  }
  fflush(stderr);
  abort();
}

// Leaves the running fiber (which waits or has finished) for the next runnable one, or for the
// launcher once every fiber has finished; returns when the fiber is resumed.
inline void emu_yield() {
  auto& s = emu_sched;
  EmuFiber& self = s.fibers[s.current];
  self.idx = threadIdx;
  self.or_phase = emu_or_phase;
  if (s.runnable.empty()) {
    for (const EmuFiber& f : s.fibers) {
      if (!f.done) emu_deadlock();
    }
    s.current = -1;
    emu_switch(&self.sp, s.launcher_sp);
    return; // not reached: a finished fiber is not resumed
  }
  size_t pick = 0;
  if (s.shuffle) pick = std::uniform_int_distribution<size_t>(0, s.runnable.size() - 1)(s.rng);
  const int next = s.runnable[pick];
  s.runnable.erase(s.runnable.begin() + static_cast<std::ptrdiff_t>(pick));
  s.current = next;
  threadIdx = s.fibers[next].idx;
  emu_tid = next;
  emu_or_phase = s.fibers[next].or_phase;
  emu_switch(&self.sp, s.fibers[next].sp);
}

// A barrier of `expected` fibers; the last arrival makes the waiters runnable and goes on.
// arrive_and_drop also lowers the count of later phases (an exited thread).
class EmuBarrier {
 public:
  explicit EmuBarrier(int expected) : expected_(expected), left_(expected) {}
  void arrive_and_wait() {
    if (arrive(false)) return;
    waiters_.push_back(emu_sched.current);
    emu_yield();
  }
  void arrive_and_drop() { arrive(true); }
  /// How many times the barrier has opened (the hazard checks' epochs).
  EMU_NOSAN uint32_t releases() const { return releases_; }

 private:
  bool arrive(bool drop) {
    if (drop) --expected_;
    if (--left_ > 0) return false;
    left_ = expected_;
    ++releases_;
    for (int f : waiters_) emu_sched.runnable.push_back(f);
    waiters_.clear();
    return true;
  }
  int expected_, left_;
  uint32_t releases_ = 0;
  std::vector<int> waiters_;
};
inline EmuBarrier* emu_block_bar = nullptr;
inline EmuBarrier* emu_warp_bar[32];
inline EmuBarrier* emu_group_bar[8]; // warpgroups (4 warps): wgmma with A in registers

inline void emu_wait(EmuBarrier& bar, const char* what, const EmuLoc& loc) {
  EmuWhere& where = emu_sched.fibers[emu_sched.current].where;
  where = {what, loc.file_name(), loc.line()};
  bar.arrive_and_wait();
  where.what = nullptr;
}

inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float __int_as_float(int u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t __float_as_uint(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline int __float_as_int(float f) {
  int u;
  std::memcpy(&u, &f, 4);
  return u;
}
// rsqrtf is an approximation on the GPU (MUFU.RSQ, ~2 ulp); here the correctly rounded value.
inline float rsqrtf(float x) {
  return 1.0f / std::sqrt(x);
}
inline int __popc(unsigned v) {
  return __builtin_popcount(v);
}
inline int __clz(int v) {
  return v == 0 ? 32 : __builtin_clz(static_cast<unsigned>(v));
}
// The upper 32 bits of (hi:lo) << min(shift, 32), as the hardware's clamped funnel shift.
inline unsigned __funnelshift_lc(unsigned lo, unsigned hi, unsigned shift) {
  const unsigned s = shift < 32u ? shift : 32u;
  const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned>((v << s) >> 32);
}
inline int __ffs(unsigned v) {
  return __builtin_ffs(static_cast<int>(v));
}

// Device min/max overloads of cuda's math headers (mixed int/unsigned compare as unsigned).
#define EMU_MIN_MAX(ta, tb, tr)                                                               \
  inline tr min(ta a, tb b) {                                                                 \
    return static_cast<tr>(a) < static_cast<tr>(b) ? static_cast<tr>(a) : static_cast<tr>(b); \
  }                                                                                           \
  inline tr max(ta a, tb b) {                                                                 \
    return static_cast<tr>(a) > static_cast<tr>(b) ? static_cast<tr>(a) : static_cast<tr>(b); \
  }
EMU_MIN_MAX(int, int, int)
EMU_MIN_MAX(unsigned, unsigned, unsigned)
EMU_MIN_MAX(int, unsigned, unsigned)
EMU_MIN_MAX(unsigned, int, unsigned)
EMU_MIN_MAX(long long, long long, long long)
EMU_MIN_MAX(unsigned long long, unsigned long long, unsigned long long)
#undef EMU_MIN_MAX

inline void __syncthreads(EmuLoc loc = EmuLoc::current()) {
  emu_wait(*emu_block_bar, "__syncthreads", loc);
}
inline int __syncthreads_or(int pred, EmuLoc loc = EmuLoc::current()) {
  const int ph = emu_or_phase;
  emu_or_phase ^= 1;
  if (pred) emu_or[ph] = 1;
  emu_wait(*emu_block_bar, "__syncthreads_or", loc);
  const int r = emu_or[ph];
  emu_wait(*emu_block_bar, "__syncthreads_or", loc);
  if (emu_tid == 0) emu_or[ph] = 0;
  return r;
}

// ---- warp collectives ---------------------------------------------------------------------------
// Every collective is two barriers of the warp's non-exited lanes: enter (each lane has posted
// its operands and its tag), read the other lanes' operands, leave (nobody overwrites a slot
// still being read). At entry each lane checks that every non-exited lane of its warp is at the
// same collective with the same mask, and, for .aligned PTX instructions (ldmatrix, mma), at the
// same call site; *_sync intrinsics met from different call sites are legal on sm_70+ and get a
// warning once. A collective that only part of the warp reaches either meets another collective
// (reported here) or deadlocks the block (reported by the scheduler). Masks other than the full
// warp are not emulated (reported). Operands read from an exited lane are undefined (reported);
// exited lanes vote 0.
struct EmuTag {
  const char* what;
  unsigned mask;
  const char* file;
  unsigned line;
};
inline EmuTag emu_tag[32][32];
inline bool emu_site_warned = false;

inline void emu_warp_enter(const char* what, unsigned mask, bool aligned, const EmuLoc& loc) {
  const int w = emu_tid / 32, l = emu_tid % 32;
  if (mask != 0xffffffffu) {
    emu_fail("warp %d lane %d: %s with mask 0x%08x at %s:%u: only full-warp masks are emulated\n",
             w, l, what, mask, loc.file_name(), loc.line());
  }
  emu_tag[w][l] = {what, mask, loc.file_name(), loc.line()};
  emu_wait(*emu_warp_bar[w], what, loc);
  for (int t = 0; t < 32; ++t) {
    const EmuTag& o = emu_tag[w][t];
    if (emu_exited[w][t] || t == l) continue;
    const bool same_site = o.line == loc.line() && std::strcmp(o.file, loc.file_name()) == 0;
    if (std::strcmp(o.what, what) != 0 || o.mask != mask || (aligned && !same_site)) {
      emu_fail(
          "warp %d: lane %d is at %s (%s:%u), lane %d at %s (%s:%u): a warp collective that "
          "part of the warp does not reach\n",
          w, l, what, loc.file_name(), loc.line(), t, o.what, o.file, o.line);
    }
    if (!same_site && !emu_site_warned) {
      emu_site_warned = true;
      fprintf(stderr,
              "cuda_emu: warning: warp %d meets at %s from %s:%u (lane %d) and %s:%u (lane %d); "
              "legal on sm_70+, reported once\n",
              w, what, loc.file_name(), loc.line(), l, o.file, o.line, t);
    }
  }
}
inline void emu_warp_leave(const char* what, const EmuLoc& loc) {
  emu_wait(*emu_warp_bar[emu_tid / 32], what, loc);
}
// Lane `src`'s posted word `i`, between enter and leave.
inline uint32_t emu_lane_word(int src, int i, const char* what, const EmuLoc& loc) {
  const int w = emu_tid / 32;
  if (emu_exited[w][src]) {
    emu_fail("warp %d lane %d: %s at %s:%u reads lane %d, which has exited (undefined)\n", w,
             emu_tid % 32, what, loc.file_name(), loc.line(), src);
  }
  return emu_warp_u[w][src][i];
}

// Happens-before between the threads of a block other than through __syncthreads (whose release
// count orders everything before it, see emu_ordered): vector clocks. Row t holds, for each thread
// u of the block, the last clock of u that thread t has synchronized with; entry t is t's own
// clock, which an access records and which goes up each time t arrives at a __syncwarp or a named
// barrier (its later accesses are not covered by what it published there). A __syncwarp joins its
// lanes' rows (exited lanes' last ones too); a named barrier phase joins its arrivals' rows and
// hands the join to the threads that waited in it. Only __syncwarp among the warp collectives
// orders memory, as on the GPU. Rows are the block's thread count long.
inline int emu_vc_n = 0;
inline std::vector<uint32_t> emu_vc;       // n rows of n
inline std::vector<uint32_t> emu_vc_warp;  // a warp's join at its __syncwarp: 32 rows of n
inline uint32_t emu_vc_warp_mark[32];      // the warp barrier's releases at that join
inline std::vector<uint32_t> emu_vc_named; // each named barrier's phase: 16 rows of n
inline bool emu_vc_dirty = false;          // a row has changed in this block
EMU_NOSAN inline uint32_t* emu_vc_row(std::vector<uint32_t>& rows, int r) {
  return rows.data() + static_cast<size_t>(r) * static_cast<size_t>(emu_vc_n);
}
EMU_NOSAN inline void emu_vc_join(uint32_t* __restrict dst, const uint32_t* __restrict src) {
  for (int i = 0, n = emu_vc_n; i < n; ++i) dst[i] = dst[i] < src[i] ? src[i] : dst[i];
}
// A block of `threads` starts: nobody has synchronized with anybody, own clocks 1.
EMU_NOSAN inline void emu_vc_reset(int threads) {
  if (threads != emu_vc_n) {
    emu_vc_n = threads;
    const size_t n = static_cast<size_t>(threads);
    emu_vc.assign(n * n, 0);
    emu_vc_warp.assign(32 * n, 0);
    emu_vc_named.assign(16 * n, 0);
    emu_vc_dirty = true;
  } else if (emu_vc_dirty) {
    std::fill(emu_vc.begin(), emu_vc.end(), 0u);
    std::fill(emu_vc_named.begin(), emu_vc_named.end(), 0u);
  }
  if (emu_vc_dirty) {
    for (int t = 0; t < threads; ++t) emu_vc_row(emu_vc, t)[t] = 1;
  }
  emu_vc_dirty = false;
  std::fill(emu_vc_warp_mark, emu_vc_warp_mark + 32, 0u);
}
// Between a __syncwarp's two warp barriers: the first lane past the first one joins every lane's
// row (no lane has changed its own since it arrived), each lane takes the join and starts a new
// clock.
EMU_NOSAN inline void emu_vc_syncwarp() {
  const int t = emu_tid, w = t / 32, n = emu_vc_n;
  uint32_t* join = emu_vc_row(emu_vc_warp, w);
  const uint32_t opened = emu_warp_bar[w]->releases();
  if (emu_vc_warp_mark[w] != opened) {
    emu_vc_warp_mark[w] = opened;
    std::memcpy(join, emu_vc_row(emu_vc, 32 * w), sizeof(uint32_t) * static_cast<size_t>(n));
    for (int u = 32 * w + 1; u < 32 * w + 32 && u < n; ++u)
      emu_vc_join(join, emu_vc_row(emu_vc, u));
  }
  uint32_t* mine = emu_vc_row(emu_vc, t);
  std::memcpy(mine, join, sizeof(uint32_t) * static_cast<size_t>(n));
  ++mine[t];
  emu_vc_dirty = true;
}
inline void __syncwarp(unsigned mask = 0xffffffffu, EmuLoc loc = EmuLoc::current()) {
  emu_warp_enter("__syncwarp", mask, false, loc);
  emu_vc_syncwarp();
  emu_warp_leave("__syncwarp", loc);
}

// Votes: bit t of the result is lane t's predicate (0 for exited lanes).
inline unsigned emu_vote(const char* what, unsigned mask, int pred, const EmuLoc& loc) {
  const int w = emu_tid / 32, l = emu_tid % 32;
  emu_warp_u[w][l][0] = pred != 0;
  emu_warp_enter(what, mask, false, loc);
  unsigned bits = 0;
  for (int t = 0; t < 32; ++t) {
    if (!emu_exited[w][t] && emu_warp_u[w][t][0] != 0) bits |= 1u << t;
  }
  emu_warp_leave(what, loc);
  return bits;
}
inline unsigned __ballot_sync(unsigned mask, int pred, EmuLoc loc = EmuLoc::current()) {
  return emu_vote("__ballot_sync", mask, pred, loc);
}
inline int __any_sync(unsigned mask, int pred, EmuLoc loc = EmuLoc::current()) {
  return emu_vote("__any_sync", mask, pred, loc) != 0;
}
inline int __all_sync(unsigned mask, int pred, EmuLoc loc = EmuLoc::current()) {
  const int w = emu_tid / 32;
  unsigned live = 0;
  for (int t = 0; t < 32; ++t) live |= emu_exited[w][t] ? 0u : 1u << t;
  return (emu_vote("__all_sync", mask, pred, loc) & live) == live;
}

// Shuffles of 4- or 8-byte values (two 32-bit shuffles, as cuda's headers do), with the PTX
// shfl.sync lane rule: c = ((32 - width) << 8) | (up ? 0 : 31); segmask = c[12:8], b = b[4:0],
// maxLane = (lane & segmask) | (c[4:0] & ~segmask), minLane = lane & segmask; the source is
// lane - b (up, valid when >= maxLane), lane + b (down), lane ^ b (xor), minLane | (b & ~segmask)
// (idx), each valid when <= maxLane; an invalid source gives the lane's own value.
enum class EmuShfl { kIdx, kUp, kDown, kXor };
template <class T>
inline T emu_shfl(const char* what, EmuShfl mode, unsigned mask, T var, int b, int width,
                  const EmuLoc& loc) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "shuffles of 4- and 8-byte values");
  const int w = emu_tid / 32, lane = emu_tid % 32;
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    emu_fail("warp %d lane %d: %s at %s:%u with width %d (a power of two up to 32)\n", w, lane,
             what, loc.file_name(), loc.line(), width);
  }
  std::memcpy(emu_warp_u[w][lane], &var, sizeof(T));
  emu_warp_enter(what, mask, false, loc);
  const int c = ((32 - width) << 8) | (mode == EmuShfl::kUp ? 0 : 31);
  const int segmask = (c >> 8) & 31, cval = c & 31, bval = b & 31;
  const int max_lane = (lane & segmask) | (cval & ~segmask), min_lane = lane & segmask;
  int j = lane;
  bool valid = false;
  switch (mode) {
    case EmuShfl::kUp:
      j = lane - bval;
      valid = j >= max_lane;
      break;
    case EmuShfl::kDown:
      j = lane + bval;
      valid = j <= max_lane;
      break;
    case EmuShfl::kXor:
      j = lane ^ bval;
      valid = j <= max_lane;
      break;
    case EmuShfl::kIdx:
      j = min_lane | (bval & ~segmask);
      valid = j <= max_lane;
      break;
  }
  if (!valid) j = lane;
  uint32_t words[2];
  for (int i = 0; i < int(sizeof(T) / 4); ++i) words[i] = emu_lane_word(j, i, what, loc);
  T r;
  std::memcpy(&r, words, sizeof(T));
  emu_warp_leave(what, loc);
  return r;
}
template <class T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32,
                     EmuLoc loc = EmuLoc::current()) {
  return emu_shfl("__shfl_sync", EmuShfl::kIdx, mask, var, src_lane, width, loc);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32,
                        EmuLoc loc = EmuLoc::current()) {
  return emu_shfl("__shfl_up_sync", EmuShfl::kUp, mask, var, static_cast<int>(delta), width, loc);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32,
                          EmuLoc loc = EmuLoc::current()) {
  return emu_shfl("__shfl_down_sync", EmuShfl::kDown, mask, var, static_cast<int>(delta), width,
                  loc);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32,
                         EmuLoc loc = EmuLoc::current()) {
  return emu_shfl("__shfl_xor_sync", EmuShfl::kXor, mask, var, lane_mask, width, loc);
}

// redux.sync (sm_80): min, max, add over the non-exited lanes, for int and unsigned.
template <class T, class Op>
inline T emu_reduce(const char* what, unsigned mask, T value, Op op, const EmuLoc& loc) {
  static_assert(sizeof(T) == 4);
  const int w = emu_tid / 32, l = emu_tid % 32;
  std::memcpy(emu_warp_u[w][l], &value, 4);
  emu_warp_enter(what, mask, false, loc);
  bool first = true;
  T r{};
  for (int t = 0; t < 32; ++t) {
    if (emu_exited[w][t]) continue;
    T v;
    std::memcpy(&v, &emu_warp_u[w][t][0], 4);
    r = first ? v : op(r, v);
    first = false;
  }
  emu_warp_leave(what, loc);
  return r;
}
#define EMU_REDUCE(name, type, expr)                                            \
  inline type name(unsigned mask, type value, EmuLoc loc = EmuLoc::current()) { \
    return emu_reduce(                                                          \
        #name, mask, value, [](type a, type b) -> type { return expr; }, loc);  \
  }
EMU_REDUCE(__reduce_max_sync, unsigned, a > b ? a : b)
EMU_REDUCE(__reduce_max_sync, int, a > b ? a : b)
EMU_REDUCE(__reduce_min_sync, unsigned, a < b ? a : b)
EMU_REDUCE(__reduce_min_sync, int, a < b ? a : b)
EMU_REDUCE(__reduce_add_sync, unsigned, a + b)
EMU_REDUCE(__reduce_add_sync, int, static_cast<int>(static_cast<unsigned>(a) + b))
#undef EMU_REDUCE

// Atomics: fibers switch only at barriers, so a read-modify-write is atomic as it stands. They
// are not checked for races (atomics do not race with each other).
EMU_NOSAN inline unsigned atomicOr(unsigned* p, unsigned v) {
  const unsigned old = *p;
  *p |= v;
  return old;
}
EMU_NOSAN inline int atomicMax(int* p, int v) {
  const int old = *p;
  if (v > old) *p = v;
  return old;
}
EMU_NOSAN inline float4 atomicAdd(float4* p, float4 v) {
  const float4 old = *p;
  p->x += v.x;
  p->y += v.y;
  p->z += v.z;
  p->w += v.w;
  return old;
}

// ---- the runtime calls a launcher makes (no GPU: an H100/H200's limits)
// --------------------------
constexpr int kEmuOptinSmem = 232448; // cudaDevAttrMaxSharedMemoryPerBlockOptin of sm_90
extern "C" cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
// Two SMs holding one CTA each: launchers that size their grids by these (rms_norm) get fewer
// CTAs than rows, so the emulator runs their loops over rows too.
extern "C" cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  if (attr == cudaDevAttrMaxSharedMemoryPerBlockOptin) {
    *value = kEmuOptinSmem;
  } else if (attr == cudaDevAttrMultiProcessorCount) {
    *value = 2;
  } else {
    fprintf(stderr, "cuda_emu: cudaDeviceGetAttribute(%d) is not emulated\n", int(attr));
    abort();
  }
  return cudaSuccess;
}
// (cuda_runtime.h's cudaOccupancyMaxActiveBlocksPerMultiprocessor template calls this one.)
extern "C" cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int* blocks,
                                                                              const void*, int,
                                                                              size_t, unsigned) {
  *blocks = 1;
  return cudaSuccess;
}

namespace kiln::backends::cuda {
namespace {
constexpr int kEmuSmemBytes = 232448;
alignas(128) unsigned char smem[kEmuSmemBytes];
} // namespace
} // namespace kiln::backends::cuda

// ---- hazards: shared-memory races, asynchronous copies and products ----------------------------
// Every shared-memory access is checked against the byte's last write and last reads: plain loads
// and stores through g++'s -fsanitize=thread instrumentation (`run` compiles with it; the
// __tsan_* entry points below receive every access and keep those inside `smem`), ldmatrix,
// cp.async and wgmma here. Two accesses of different threads, one of them a write, race unless a
// __syncthreads opened between them (the block barrier's release count at each access), or a chain
// of __syncwarps and named barrier phases orders them (vector clocks, emu_vc). cp.async lands at
// the cp_async_wait that retires its group, and its bytes may not be touched in between by anyone;
// a wgmma reads its operands and writes its accumulator at the wgmma_wait that retires its group
// (the accumulator reads NaN in between), and may only read bytes whose writer has run
// fence_proxy_async since the write (generic to async proxy). The checks see one interleaving's
// accesses, but every pair of them: a missing barrier shows whatever order the fibers ran in.

struct EmuSite {
  const void* where = nullptr; // line 0: a code address (an instrumented access); else a file name
  uint32_t line = 0;
};
struct EmuAccess {
  EmuSite site;
  uint32_t block = 0; // block barrier releases at the access
  uint32_t clock = 0; // the thread's own vector clock entry at the access
  uint32_t fence = 0; // the thread's fence_proxy_async count at the access
  int16_t tid = -1;   // -1: none
};
struct EmuShadow {
  EmuAccess write, read[2];
  int16_t pending = -1; // a thread whose cp.async into this byte has not landed
};
inline EmuShadow emu_shadow[kiln::backends::cuda::kEmuSmemBytes];
inline uint32_t emu_shadow_used = 0; // bytes [0, used) may hold records of this block
inline uint32_t emu_proxy_fences[1024];

// file:line of a site; a code address through addr2line (the innermost inlined line).
inline std::string emu_site_text(const EmuSite& s) {
  char buf[512];
  if (s.line != 0) {
    snprintf(buf, sizeof buf, "%s:%u", static_cast<const char*>(s.where), s.line);
    return buf;
  }
  Dl_info info{};
  if (dladdr(s.where, &info) == 0 || info.dli_fbase == nullptr) return "?";
  const auto offset = static_cast<unsigned long>(static_cast<const char*>(s.where) -
                                                 static_cast<const char*>(info.dli_fbase) - 1);
  snprintf(buf, sizeof buf, "addr2line -i -e /proc/%d/exe 0x%lx 2>/dev/null", int(getpid()),
           offset);
  std::string text = "?";
  if (FILE* pipe = popen(buf, "r")) {
    if (fgets(buf, sizeof buf, pipe) != nullptr) {
      text = buf;
      while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
      if (const size_t d = text.find(" (discriminator"); d != text.npos) text.resize(d);
    }
    pclose(pipe);
  }
  return text;
}

EMU_NOSAN inline EmuAccess emu_now(const EmuSite& site) {
  const int t = emu_sched.current;
  EmuAccess a;
  a.site = site;
  a.block = emu_block_bar->releases();
  a.clock = emu_vc_row(emu_vc, t)[t];
  a.fence = emu_proxy_fences[t];
  a.tid = static_cast<int16_t>(t);
  return a;
}
// Whether `prev` happened before what thread `tid` does now: the same thread, a __syncthreads
// opened since (every thread's accesses before it are ordered before every access after it), or
// a chain of __syncwarps and named barriers that `tid` waited at (its vector clock).
EMU_NOSAN inline bool emu_ordered(const EmuAccess& prev, int tid) {
  if (prev.tid < 0 || prev.tid == tid) return true;
  if (emu_block_bar->releases() > prev.block) return true;
  return emu_vc_row(emu_vc, tid)[prev.tid] >= prev.clock;
}

enum class EmuKind { kRead, kWrite, kAsyncRead, kCopyIssue, kCopyLand };
inline const char* emu_kind_name(EmuKind k) {
  switch (k) {
    case EmuKind::kRead:
      return "reads";
    case EmuKind::kWrite:
      return "writes";
    case EmuKind::kAsyncRead:
      return "wgmma reads";
    case EmuKind::kCopyIssue:
      return "cp.async writes";
    case EmuKind::kCopyLand:
      return "cp.async lands in";
  }
  return "?";
}

[[noreturn]] inline void emu_race(uint32_t byte, EmuKind kind, const EmuSite& site,
                                  const EmuAccess& prev, const char* prev_what,
                                  const char* missing) {
  const int t = emu_sched.current;
  emu_fail(
      "shared byte %u: thread %d (warp %d lane %d) %s it at %s; thread %d (warp %d lane %d) %s it "
      "at %s, %s\n",
      byte, t, t / 32, t % 32, emu_kind_name(kind), emu_site_text(site).c_str(), prev.tid,
      prev.tid / 32, prev.tid % 32, prev_what, emu_site_text(prev.site).c_str(), missing);
}

EMU_NOSAN inline void emu_access(uint32_t offset, uint32_t bytes, EmuKind kind,
                                 const EmuSite& site) {
  const int t = emu_sched.current;
  if (offset + bytes > emu_shadow_used) emu_shadow_used = offset + bytes;
  const char* unordered =
      "and no __syncthreads opened between (nor orders them a __syncwarp of their warp or a named "
      "barrier this thread waited at)";
  const EmuAccess now = emu_now(site);
  const bool read = kind == EmuKind::kRead || kind == EmuKind::kAsyncRead;
  for (uint32_t i = offset; i < offset + bytes; ++i) {
    EmuShadow& s = emu_shadow[i];
    if (s.pending >= 0 && kind != EmuKind::kCopyLand) {
      emu_fail(
          "shared byte %u: thread %d (warp %d lane %d) %s it at %s while thread %d's cp.async "
          "into it is in flight (before that thread's cp_async_wait and a barrier after it)\n",
          i, t, t / 32, t % 32, emu_kind_name(kind), emu_site_text(site).c_str(), s.pending);
    }
    if (read) {
      if (!emu_ordered(s.write, t)) emu_race(i, kind, site, s.write, "wrote", unordered);
      if (kind == EmuKind::kAsyncRead && s.write.tid >= 0 &&
          emu_proxy_fences[s.write.tid] <= s.write.fence) {
        emu_race(i, kind, site, s.write, "wrote",
                 "and that thread ran no fence_proxy_async since (generic writes are invisible to "
                 "the tensor cores' async proxy without one)");
      }
      // Keep two reads that later accesses may race with: the first slot is replaced when it is
      // ordered before this read (empty, this thread's own, or before a barrier; an access that
      // races with it races with this read too), else the second.
      (emu_ordered(s.read[0], t) ? s.read[0] : s.read[1]) = now;
      continue;
    }
    if (kind != EmuKind::kCopyLand) {
      if (!emu_ordered(s.write, t)) emu_race(i, kind, site, s.write, "wrote", unordered);
      for (const EmuAccess& r : s.read) {
        if (!emu_ordered(r, t)) emu_race(i, kind, site, r, "read", unordered);
      }
    }
    if (kind == EmuKind::kCopyIssue) {
      s.pending = static_cast<int16_t>(t);
      continue;
    }
    s.pending = -1;
    s.write = now;
    s.read[0] = s.read[1] = EmuAccess{};
  }
}

// g++ -fsanitize=thread's entry points (no sanitizer runtime is linked): accesses inside `smem`
// made by a kernel thread are checked; the emulator's own (marked EMU_NOSAN) are not instrumented.
EMU_NOSAN inline void emu_hook(const void* p, uint32_t bytes, bool write, const void* pc) {
  namespace kbc = kiln::backends::cuda;
  const uintptr_t offset = reinterpret_cast<uintptr_t>(p) - reinterpret_cast<uintptr_t>(kbc::smem);
  if (offset >= sizeof(kbc::smem) || emu_sched.current < 0) return;
  emu_access(static_cast<uint32_t>(offset), bytes, write ? EmuKind::kWrite : EmuKind::kRead,
             EmuSite{pc, 0});
}
// Defined here (device.cuh is included by one translation unit, the driver), not in a runtime.
#define EMU_HOOK EMU_NOSAN __attribute__((used))
extern "C" {
EMU_HOOK void __tsan_init() {}
EMU_HOOK void __tsan_func_entry(void*) {}
EMU_HOOK void __tsan_func_exit() {}
#define EMU_TSAN(n)                                     \
  EMU_HOOK void __tsan_read##n(void* p) {               \
    emu_hook(p, n, false, __builtin_return_address(0)); \
  }                                                     \
  EMU_HOOK void __tsan_write##n(void* p) {              \
    emu_hook(p, n, true, __builtin_return_address(0));  \
  }                                                     \
  EMU_HOOK void __tsan_unaligned_read##n(void* p) {     \
    emu_hook(p, n, false, __builtin_return_address(0)); \
  }                                                     \
  EMU_HOOK void __tsan_unaligned_write##n(void* p) {    \
    emu_hook(p, n, true, __builtin_return_address(0));  \
  }
EMU_TSAN(1)
EMU_TSAN(2)
EMU_TSAN(4)
EMU_TSAN(8)
EMU_TSAN(16)
#undef EMU_TSAN
EMU_HOOK void __tsan_vptr_update(void**, void*) {}
EMU_HOOK void __tsan_vptr_read(void**) {}
// A function-local static's guard (the kernel's thread: a plain load).
EMU_HOOK char __tsan_atomic8_load(const volatile char* a, int) {
  return *a;
}
EMU_HOOK void __tsan_read_range(void* p, unsigned long n) {
  emu_hook(p, static_cast<uint32_t>(n), false, __builtin_return_address(0));
}
EMU_HOOK void __tsan_write_range(void* p, unsigned long n) {
  emu_hook(p, static_cast<uint32_t>(n), true, __builtin_return_address(0));
}
}

// In-flight cp.async copies and wgmma products of each thread, by commit group.
struct EmuCopy {
  uint32_t dst;
  unsigned char data[16];
  int group;
  EmuSite site;
};
struct EmuProduct {
  float* d;
  int n;
  float init[128];
  bool chained; // another in-flight product writes d first: it is the input
  bool accumulate;
  bool mn_major_a;
  bool mn_major_b;
  bool a_in_registers; // A from the warpgroup's registers (a_rows), not a descriptor
  float a_rows[2][16]; // then: A's rows 16 w + lane / 4 and that + 8, as they were at issue
  uint64_t a, b;
  int group;
  EmuSite site;
};
inline std::vector<EmuCopy> emu_copies[1024];
inline int emu_copy_groups[1024];
inline std::vector<EmuProduct> emu_products[1024];
inline int emu_product_groups[1024];
// A heuristic of the ISA's rule that register writes by other code reach a wgmma only through a
// wgmma.fence: a wgmma needs a wgmma_fence since the thread's last wgmma_wait (or its start),
// after which its accumulators are normally read and rewritten by plain code.
inline bool emu_wgmma_fenced[1024];

EMU_NOSAN inline void emu_land_copies(int keep_groups) {
  namespace kbc = kiln::backends::cuda;
  const int t = emu_sched.current;
  auto& q = emu_copies[t];
  size_t kept = 0;
  for (size_t i = 0; i < q.size(); ++i) {
    if (q[i].group < emu_copy_groups[t] - keep_groups) {
      std::memcpy(kbc::smem + q[i].dst, q[i].data, 16);
      emu_access(q[i].dst, 16, EmuKind::kCopyLand, q[i].site);
    } else {
      q[kept++] = q[i];
    }
  }
  q.resize(kept);
}

namespace kiln::backends::cuda::dev {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(static_cast<const unsigned char*>(p) - smem);
}
/// (copied verbatim from the real device.cuh)
__device__ __forceinline__ uint32_t swizzle(int r, int k, int pitch) {
  return static_cast<uint32_t>((r * pitch + (k ^ (r & 7))) * 16);
}
EMU_NOSAN inline void emu_check(uint32_t addr, int bytes) {
  if (addr % 16 != 0 && bytes == 16) {
    fprintf(stderr, "misaligned smem 16B access %u\n", addr);
    abort();
  }
  if (addr + bytes > (uint32_t)kEmuSmemBytes) {
    fprintf(stderr, "smem out of range %u\n", addr);
    abort();
  }
}
// cp.async.cg ... 16, src-size: both addresses 16-byte aligned (the global one too, whatever
// src-size), 0 <= src-size <= 16, the rest of the 16 bytes zero-filled. The source is read now;
// the bytes land at the cp_async_wait that retires the copy's commit group.
EMU_NOSAN __device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, int bytes,
                                                      EmuLoc loc = EmuLoc::current()) {
  emu_check(dst, 16);
  if (reinterpret_cast<uintptr_t>(src) % 16 != 0 || bytes < 0 || bytes > 16) {
    emu_fail("thread %d: cp.async of %d bytes from %p (16-byte aligned, 0..16 bytes)\n", emu_tid,
             bytes, src);
  }
  const int t = emu_sched.current;
  EmuCopy c{dst, {}, emu_copy_groups[t], EmuSite{loc.file_name(), loc.line()}};
  if (bytes > 0) std::memcpy(c.data, src, bytes);
  std::memset(c.data + bytes, 0, 16 - bytes);
  emu_access(dst, 16, EmuKind::kCopyIssue, c.site);
  emu_copies[t].push_back(c);
}
__device__ __forceinline__ void cp_async_commit() {
  ++emu_copy_groups[emu_sched.current];
}
template <int Pending>
__device__ __forceinline__ void cp_async_wait() {
  emu_land_copies(Pending);
}

EMU_NOSAN inline uint16_t emu_half(uint32_t row_addr, int col) {
  uint16_t v;
  std::memcpy(&v, smem + row_addr + 2 * col, 2);
  return v;
}
// PTX ldmatrix .m8n8 .x4 .b16: lanes 8i..8i+7 give the row addresses of matrix i; thread t gets
// row t/4, elements 2(t%4), 2(t%4)+1 of each matrix (transposed: element [2(t%4)+e][t/4]).
template <bool Trans>
inline void emu_ldmatrix(uint32_t (&r)[4], uint32_t addr, const EmuLoc& loc) {
  const int w = emu_tid / 32, l = emu_tid % 32;
  const char* what = Trans ? "ldmatrix_x4_trans" : "ldmatrix_x4";
  emu_check(addr, 16);
  emu_access(addr, 16, EmuKind::kRead, EmuSite{loc.file_name(), loc.line()});
  emu_warp_u[w][l][0] = addr;
  emu_warp_enter(what, 0xffffffffu, true, loc);
  for (int i = 0; i < 4; ++i) {
    uint16_t e0, e1;
    if (!Trans) {
      const uint32_t row = emu_lane_word(8 * i + l / 4, 0, what, loc);
      e0 = emu_half(row, 2 * (l % 4));
      e1 = emu_half(row, 2 * (l % 4) + 1);
    } else {
      e0 = emu_half(emu_lane_word(8 * i + 2 * (l % 4), 0, what, loc), l / 4);
      e1 = emu_half(emu_lane_word(8 * i + 2 * (l % 4) + 1, 0, what, loc), l / 4);
    }
    r[i] = static_cast<uint32_t>(e0) | (static_cast<uint32_t>(e1) << 16);
  }
  emu_warp_leave(what, loc);
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr,
                                            EmuLoc loc = EmuLoc::current()) {
  emu_ldmatrix<false>(r, addr, loc);
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr,
                                                  EmuLoc loc = EmuLoc::current()) {
  emu_ldmatrix<true>(r, addr, loc);
}

inline float emu_bf(uint32_t word, int hi) {
  return __uint_as_float(hi ? (word & 0xffff0000u) : (word << 16));
}
// PTX mma.m16n8k16 .bf16 fragments, g = lane/4, c = 2(lane%4):
// A: a0 = A[g][c..c+1], a1 = A[g+8][c..], a2 = A[g][c+8..], a3 = A[g+8][c+8..]
// B: b0 = B[c..c+1][g], b1 = B[c+8..c+9][g];  C: c0,c1 = C[g][c..c+1], c2,c3 = C[g+8][c..c+1]
// Each lane computes its own four elements from the lanes holding its rows of A (4g..4g+3) and
// its columns of B (4col..4col+3), summing k = 0..15 in order.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1, EmuLoc loc = EmuLoc::current()) {
  const int w = emu_tid / 32, l = emu_tid % 32;
  for (int i = 0; i < 4; ++i) emu_warp_u[w][l][i] = a[i];
  emu_warp_u[w][l][4] = b0;
  emu_warp_u[w][l][5] = b1;
  emu_warp_enter("mma_bf16", 0xffffffffu, true, loc);
  const int g = l / 4, c = 2 * (l % 4);
  float A[2][16], B[2][16]; // A rows g, g + 8; B columns c, c + 1
  for (int t = 0; t < 4; ++t) {
    const int k = 2 * t;
    for (int e = 0; e < 2; ++e) {
      A[0][k + e] = emu_bf(emu_lane_word(4 * g + t, 0, "mma_bf16", loc), e);
      A[1][k + e] = emu_bf(emu_lane_word(4 * g + t, 1, "mma_bf16", loc), e);
      A[0][k + 8 + e] = emu_bf(emu_lane_word(4 * g + t, 2, "mma_bf16", loc), e);
      A[1][k + 8 + e] = emu_bf(emu_lane_word(4 * g + t, 3, "mma_bf16", loc), e);
      for (int j = 0; j < 2; ++j) {
        B[j][k + e] = emu_bf(emu_lane_word(4 * (c + j) + t, 4, "mma_bf16", loc), e);
        B[j][k + 8 + e] = emu_bf(emu_lane_word(4 * (c + j) + t, 5, "mma_bf16", loc), e);
      }
    }
  }
  emu_warp_leave("mma_bf16", loc);
  for (int i = 0; i < 4; ++i) {
    float s = 0;
    for (int k = 0; k < 16; ++k) s += A[i / 2][k] * B[i % 2][k];
    d[i] += s;
  }
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}

/// (copied verbatim from the real device.cuh)
/// The 8 bf16 of a 16-byte vector as floats (times `scale`), in memory order.
__device__ __forceinline__ void unpack_bf16x8(const uint4& u, float (&v)[8], float scale = 1.f) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[2 * i] = __uint_as_float(w[i] << 16) * scale;
    v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u) * scale;
  }
}

/// 8 floats rounded to bf16, as one 16-byte vector in memory order.
__device__ __forceinline__ uint4 pack_bf16x8(const float (&v)[8]) {
  return make_uint4(pack_bf16(v[0], v[1]), pack_bf16(v[2], v[3]), pack_bf16(v[4], v[5]),
                    pack_bf16(v[6], v[7]));
}
__device__ __forceinline__ float fast_exp2(float x) {
  return exp2f(x);
}

// ---- wgmma (sm_90a) as the real device.cuh uses it: K-major operands with the 128-byte swizzle
// applied to absolute shared addresses (bits 4-6 ^= bits 7-9), descriptors decoded for the start
// address and the 8-row-group stride (SBO). One call per thread of the warpgroup; each thread
// computes its own accumulator elements (the warpgroup's 4 warps are threadIdx.x / 32 % 4).
/// (copied verbatim from the real device.cuh)
__device__ __forceinline__ uint32_t sw128(int r, int k, int rows) {
  return static_cast<uint32_t>((k >> 3) * rows * 128 + r * 128 + (((k & 7) ^ (r & 7)) << 4));
}
__device__ __forceinline__ uint64_t sw128_desc(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (uint64_t{1} << 16) |
         (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}
// wgmma.fence orders a thread's register writes before the wgmmas that read them (the check:
// emu_wgmma_fenced).
__device__ __forceinline__ void wgmma_fence() {
  emu_wgmma_fenced[emu_sched.current] = true;
}
__device__ __forceinline__ void fence_proxy_async() {
  ++emu_proxy_fences[emu_sched.current];
}

// One operand element from shared memory, read by the async proxy at `site`.
EMU_NOSAN inline float emu_operand(uint32_t logical, const EmuSite& site) {
  const uint32_t physical = logical ^ (((logical >> 7) & 7) << 4);
  emu_check(physical & ~1u, 2);
  emu_access(physical, 2, EmuKind::kAsyncRead, site);
  uint16_t h;
  std::memcpy(&h, smem + physical, 2);
  return __uint_as_float(static_cast<uint32_t>(h) << 16);
}
EMU_NOSAN inline void emu_require_sw128(uint64_t desc) {
  if ((desc >> 62) != 1) emu_fail("wgmma emulation: only the 128-byte swizzle is modelled\n");
}
// K-major, 128-byte swizzle: element (r, k) at start + (r / 8) * SBO + (r % 8) * 128 + 2k.
EMU_NOSAN inline float emu_sw128_elem(uint64_t desc, int r, int k, const EmuSite& site) {
  emu_require_sw128(desc);
  const uint32_t start = static_cast<uint32_t>(desc & 0x3FFF) << 4;
  const uint32_t sbo = static_cast<uint32_t>((desc >> 32) & 0x3FFF) << 4;
  return emu_operand(start + (r / 8) * sbo + (r % 8) * 128 + k * 2, site);
}
__device__ __forceinline__ uint64_t sw128_desc_mn(uint32_t addr, uint32_t atom_stride) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) |
         (static_cast<uint64_t>((atom_stride & 0x3FFFF) >> 4) << 16) | (uint64_t{1024 >> 4} << 32) |
         (uint64_t{1} << 62);
}
// MN-major, 128-byte swizzle (PTX ISA canonical layout ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO))),
// for B (n = its N index) and for a transposed A (n = its M index): element (k, n) at start + (n %
// 64) * 2 + (n / 64) * LBO + (k % 8) * 128 + (k / 8) * SBO.
EMU_NOSAN inline float emu_sw128_mn_elem(uint64_t desc, int k, int n, const EmuSite& site) {
  emu_require_sw128(desc);
  const uint32_t start = static_cast<uint32_t>(desc & 0x3FFF) << 4;
  const uint32_t lbo = static_cast<uint32_t>((desc >> 16) & 0x3FFF) << 4;
  const uint32_t sbo = static_cast<uint32_t>((desc >> 32) & 0x3FFF) << 4;
  return emu_operand(start + (n % 64) * 2 + (n / 64) * lbo + (k % 8) * 128 + (k / 8) * sbo, site);
}

// A product runs at the wgmma_wait that retires its group: the thread's accumulator elements
// (warp w of the warpgroup holds rows 16w + g (+8), columns 8j + c (+1)) from the operands as
// they are then, added to the accumulator as it was at issue (or to the result of an earlier
// in-flight product into the same registers).
EMU_NOSAN inline void emu_run_product(EmuProduct& p) {
  const int w = (emu_tid / 32) % 4, l = emu_tid % 32;
  const int g = l / 4, c = 2 * (l % 4);
  for (int i = 0; i < p.n; ++i) {
    const int row = 16 * w + g + 8 * ((i % 4) / 2), col = 8 * (i / 4) + c + i % 2;
    float s = 0;
    for (int k = 0; k < 16; ++k) {
      const float a = p.a_in_registers ? p.a_rows[(i % 4) / 2][k]
                      : p.mn_major_a   ? emu_sw128_mn_elem(p.a, k, row, p.site)
                                       : emu_sw128_elem(p.a, row, k, p.site);
      const float b = p.mn_major_b ? emu_sw128_mn_elem(p.b, k, col, p.site)
                                   : emu_sw128_elem(p.b, col, k, p.site);
      s += a * b;
    }
    const float base = p.chained ? p.d[i] : p.init[i];
    p.d[i] = p.accumulate ? base + s : s;
  }
}
// What the hardware needs of a descriptor that the element formulas above would not notice: base
// offset 0 (bits 49-51) anchors the swizzle pattern at 1024-byte boundaries, so the start must sit
// in the first row of an 8-row group (address bits 7-9 zero); a K-major start may move along its
// 128-byte row in k16 steps (32 bytes), an MN-major one not at all (PTX defines MN-major tiles in
// whole 64-element atoms; a start inside an atom is outside the documented layouts).
inline void emu_check_descriptor(uint64_t desc, bool mn_major, const char* operand,
                                 const EmuLoc& loc) {
  const uint32_t start = static_cast<uint32_t>(desc & 0x3FFF) << 4;
  const unsigned base_offset = static_cast<unsigned>((desc >> 49) & 7);
  const char* why = nullptr;
  if (base_offset != 0) {
    why = "a nonzero base offset (not modelled)";
  } else if ((start & 0x380) != 0) {
    why = "a start in row (address bits 7-9) != 0 of its 1024-byte swizzle pattern";
  } else if (mn_major && (start & 0x7F) != 0) {
    why = "an MN-major start inside a 128-byte swizzle row (not a whole 64-element atom)";
  } else if (!mn_major && (start & 0x1F) != 0) {
    why = "a K-major start that is not a k16 step (32 bytes) into its row";
  }
  if (why != nullptr) {
    emu_fail("thread %d: wgmma at %s:%u: operand %s has %s: start 0x%x\n", emu_tid, loc.file_name(),
             loc.line(), operand, why, start);
  }
}
inline void emu_issue_product(float* d, int n, uint64_t a, uint64_t b, bool accumulate,
                              bool mn_major_a, bool mn_major_b, const EmuLoc& loc,
                              const float (*a_rows)[16] = nullptr) {
  if (!emu_wgmma_fenced[emu_sched.current]) {
    emu_fail(
        "thread %d: wgmma at %s:%u without a wgmma_fence since the thread's last wgmma_wait "
        "(or its start): registers written by other code reach the tensor cores unordered\n",
        emu_tid, loc.file_name(), loc.line());
  }
  if (a_rows == nullptr) emu_check_descriptor(a, mn_major_a, "A", loc);
  emu_check_descriptor(b, mn_major_b, "B", loc);
  const int t = emu_sched.current;
  EmuProduct p{};
  if (a_rows != nullptr) {
    p.a_in_registers = true;
    std::memcpy(p.a_rows, a_rows, sizeof(p.a_rows));
  }
  p.d = d;
  p.n = n;
  p.accumulate = accumulate;
  p.mn_major_a = mn_major_a;
  p.mn_major_b = mn_major_b;
  p.a = a;
  p.b = b;
  p.group = emu_product_groups[t];
  p.site = EmuSite{loc.file_name(), loc.line()};
  for (const EmuProduct& q : emu_products[t]) p.chained |= q.d == d;
  if (!p.chained) {
    for (int i = 0; i < n; ++i) {
      p.init[i] = d[i];
      d[i] = NAN; // what a read before the wait would see is undefined
    }
  }
  emu_products[t].push_back(p);
}
template <int N>
__device__ __forceinline__ void fence_regs(float (&)[N]) {} // a compiler matter only
// A plain copy here (the real one is a move that ptxas cannot see through).
__device__ __forceinline__ float opaque_copy(float x) {
  return x;
}
// setmaxnreg: registers are the compiler's matter; N is checked as ptxas would.
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() {
  static_assert(N % 8 == 0 && N >= 24 && N <= 256, "setmaxnreg: a multiple of 8 in 24..256");
}
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() {
  static_assert(N % 8 == 0 && N >= 24 && N <= 256, "setmaxnreg: a multiple of 8 in 24..256");
}

// Named barriers (PTX bar.sync / bar.arrive id, threads; ids 1..15, 0 is __syncthreads'). A phase
// of barrier `id` completes when `threads` threads have arrived there (each thread counts; the
// .aligned forms: every live lane of a warp at the same call site, checked like a warp
// collective); the threads waiting in named_barrier_sync are then released and the barrier
// starts a new phase. Exited threads do not arrive. Memory: the accesses every arriving thread
// made before its arrival are ordered before those each waiting thread makes after the release
// (vector clocks, see emu_vc); a thread that only arrived learns nothing from the phase.
EMU_NOSAN inline void emu_named_barrier(int id, int threads, bool wait, const EmuLoc& loc) {
  const char* what = wait ? "named_barrier_sync" : "named_barrier_arrive";
  const int t = emu_sched.current;
  const int block = static_cast<int>(blockDim.x * blockDim.y * blockDim.z);
  const char* why = nullptr;
  if (id < 1 || id > 15) {
    why = "a barrier id outside 1..15 (0 is __syncthreads')";
  } else if (threads <= 0 || threads % 32 != 0) {
    why = "a thread count that is not a positive multiple of 32";
  } else if (threads > block) {
    why = "a thread count above the block's";
  }
  if (why != nullptr) {
    emu_fail("thread %d: %s(%d, %d) at %s:%u: %s (a block of %d threads)\n", t, what, id, threads,
             loc.file_name(), loc.line(), why, block);
  }
  emu_warp_enter(what, 0xffffffffu, true, loc);
  emu_warp_leave(what, loc);
  EmuNamedBar& b = emu_named[id];
  if (b.count == 0) {
    b.count = threads;
    b.first_tid = t;
    b.first_file = loc.file_name();
    b.first_line = loc.line();
  } else if (b.count != threads) {
    emu_fail(
        "thread %d: %s(%d, %d) at %s:%u arrives with another thread count than its phase's: "
        "thread %d began that phase with %d threads at %s:%u\n",
        t, what, id, threads, loc.file_name(), loc.line(), b.first_tid, b.count, b.first_file,
        b.first_line);
  }
  uint32_t* phase = emu_vc_row(emu_vc_named, id);
  uint32_t* mine = emu_vc_row(emu_vc, t);
  emu_vc_join(phase, mine);
  ++mine[t]; // later accesses are not covered by this arrival
  emu_vc_dirty = true;
  if (wait) b.waiters.push_back(t);
  if (++b.arrived == b.count) {
    for (int u : b.waiters) {
      emu_vc_join(emu_vc_row(emu_vc, u), phase);
      if (u != t) emu_sched.runnable.push_back(u);
    }
    b.count = b.arrived = 0;
    b.waiters.clear();
    std::fill(phase, phase + emu_vc_n, 0u);
    return;
  }
  if (!wait) return;
  EmuWhere& where = emu_sched.fibers[t].where;
  where = {what, loc.file_name(), loc.line()};
  emu_yield();
  where.what = nullptr;
}
/// bar.sync id, threads: waits at named barrier `id` (1..15; 0 is __syncthreads') until `threads`
/// threads (a multiple of 32) have arrived there, by bar.sync or bar.arrive.
__device__ __forceinline__ void named_barrier_sync(int id, int threads,
                                                   EmuLoc loc = EmuLoc::current()) {
  emu_named_barrier(id, threads, true, loc);
}
/// bar.arrive id, threads: arrives at named barrier `id` without waiting (a producer's signal).
__device__ __forceinline__ void named_barrier_arrive(int id, int threads,
                                                     EmuLoc loc = EmuLoc::current()) {
  emu_named_barrier(id, threads, false, loc);
}

// (copied verbatim from the real device.cuh)
__device__ __forceinline__ uint64_t desc_advance(uint64_t desc, uint32_t bytes) {
  return (desc & 0xFFFFFFFF00000000ull) | (static_cast<uint32_t>(desc) + (bytes >> 4));
}
__device__ __forceinline__ void wgmma_commit() {
  ++emu_product_groups[emu_sched.current];
}
template <int Pending>
__device__ __forceinline__ void wgmma_wait() {
  const int t = emu_sched.current;
  emu_wgmma_fenced[t] = false;
  auto& q = emu_products[t];
  size_t kept = 0;
  for (size_t i = 0; i < q.size(); ++i) {
    if (q[i].group < emu_product_groups[t] - Pending) {
      emu_run_product(q[i]);
    } else {
      q[kept++] = q[i];
    }
  }
  q.resize(kept);
}
__device__ __forceinline__ void wgmma_m64n32k16(float (&d)[16], uint64_t a, uint64_t b,
                                                bool accumulate, EmuLoc loc = EmuLoc::current()) {
  emu_issue_product(d, 16, a, b, accumulate, false, false, loc);
}
template <int N>
__device__ __forceinline__ void wgmma_m64k16_bt(float (&d)[N / 2], uint64_t a, uint64_t b,
                                                bool accumulate, EmuLoc loc = EmuLoc::current()) {
  emu_issue_product(d, N / 2, a, b, accumulate, false, true, loc);
}
// A MN-major too (tnspA): element (m, k) of A where the MN-major formula puts (k, n = m).
template <int N>
__device__ __forceinline__ void wgmma_m64k16_tt(float (&d)[N / 2], uint64_t a, uint64_t b,
                                                bool accumulate, EmuLoc loc = EmuLoc::current()) {
  emu_issue_product(d, N / 2, a, b, accumulate, true, true, loc);
}

// A in registers (wgmma_m64n64k16_rs): a warpgroup collective here (the instruction is
// .sync.aligned), so each thread can read the rows it needs from the others' fragments: every
// thread posts its 4 registers, meets the others, copies its two rows, meets them again (nobody
// reposts before all have read). The rows are taken at issue: a register changed before the
// wait is not noticed.
inline uint32_t emu_rs_frag[1024][4];
__device__ __forceinline__ void wgmma_m64n64k16_rs(float (&d)[32], const uint32_t (&a)[4],
                                                   uint64_t b, bool accumulate,
                                                   EmuLoc loc = EmuLoc::current()) {
  const int t = emu_tid, group = t / 128, w = (t / 32) % 4, lane = t % 32;
  if (emu_group_bar[group] == nullptr ||
      blockDim.x * blockDim.y * blockDim.z < 128u * (group + 1)) {
    emu_fail("thread %d: wgmma at %s:%u outside a whole warpgroup\n", t, loc.file_name(),
             loc.line());
  }
  std::memcpy(emu_rs_frag[t], a, sizeof(a));
  emu_wait(*emu_group_bar[group], "wgmma (A in registers)", loc);
  float rows[2][16];
  for (int half = 0; half < 2; ++half) {
    for (int k = 0; k < 16; ++k) {
      // The lane holding (row lane / 4 + 8 half, k): lane / 4 * 4 + (k % 8) / 2, register
      // half + 2 (k / 8), its low or high bf16 by k % 2.
      const int src = 128 * group + 32 * w + (lane / 4) * 4 + (k % 8) / 2;
      const uint32_t reg = emu_rs_frag[src][half + 2 * (k / 8)];
      rows[half][k] = __uint_as_float((k % 2 == 0 ? reg & 0xffffu : reg >> 16) << 16);
    }
  }
  emu_wait(*emu_group_bar[group], "wgmma (A in registers)", loc);
  emu_issue_product(d, 32, 0, b, accumulate, false, false, loc, rows);
}

} // namespace kiln::backends::cuda::dev

// A launch <<<grid, block, smem, stream>>> as `run` rewrites it: emu_launch(kernel, EmuCfg(...),
// args...). Blocks run one at a time (x fastest, then y, z), each with one std::thread per CUDA
// thread; shared memory is poisoned (0xcd) before each block, and bytes past the launch's dynamic
// size are checked to be still poisoned after it (writes out of the block's shared memory).
struct EmuCfg {
  dim3 grid, block;
  size_t smem;
  EmuCfg(dim3 grid_, dim3 block_, size_t smem_ = 0, cudaStream_t = nullptr)
      : grid(grid_), block(block_), smem(smem_) {}
};
// cudaFuncAttributeMaxDynamicSharedMemorySize per kernel (48 KB unless set).
inline std::map<const void*, size_t> emu_smem_attribute;
template <class T>
inline cudaError_t emu_set_attribute(T kernel, cudaFuncAttribute attr, int bytes) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
  if (bytes < 0 || bytes > kEmuOptinSmem) return cudaErrorInvalidValue;
  emu_smem_attribute[reinterpret_cast<const void*>(kernel)] = static_cast<size_t>(bytes);
  return cudaSuccess;
}

// A crash (an out-of-bounds access, a fiber's stack overflow) says which thread of which block
// ran; the default action follows (a core, or gdb's stop when run under it).
inline void emu_on_signal(int sig, siginfo_t* info, void*) {
  const int t = emu_sched.current;
  fprintf(stderr,
          "cuda_emu: signal %d (%s) at address %p in block (%u, %u, %u), thread %d (warp %d lane "
          "%d); gdb --args <driver> <case> shows the line\n",
          sig, strsignal(sig), info->si_addr, blockIdx.x, blockIdx.y, blockIdx.z, t, t / 32,
          t % 32);
  signal(sig, SIG_DFL);
  raise(sig);
}
inline void emu_catch_signals() {
  static bool installed = false;
  if (installed) return;
  installed = true;
  static std::vector<unsigned char> alt(64 * 1024);
  stack_t ss{};
  ss.ss_sp = alt.data();
  ss.ss_size = alt.size();
  sigaltstack(&ss, nullptr);
  struct sigaction sa {};
  sa.sa_sigaction = emu_on_signal;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL}) sigaction(sig, &sa, nullptr);
}

// A fiber's first frame: runs the kernel for its thread, leaves the barriers (an exited thread
// holds up none any more) and never returns.
[[noreturn]] inline void emu_fiber_main() {
  emu_sched.body();
  const int t = emu_sched.current;
  emu_land_copies(-(1 << 30)); // copies still in flight complete
  if (!emu_products[t].empty()) {
    emu_fail("thread %d exits with the wgmma issued at %s not retired by a wgmma_wait\n", t,
             emu_site_text(emu_products[t].front().site).c_str());
  }
  emu_exited[t / 32][t % 32] = true;
  emu_sched.fibers[t].done = true;
  emu_warp_bar[t / 32]->arrive_and_drop();
  emu_group_bar[t / 128]->arrive_and_drop();
  emu_block_bar->arrive_and_drop();
  emu_yield();
  abort(); // not reached
}

template <class K, class... Args>
inline void emu_launch(K kernel, EmuCfg cfg, Args... args) {
  const int threads = static_cast<int>(cfg.block.x * cfg.block.y * cfg.block.z);
  if (threads < 1 || threads > 1024 || cfg.grid.x * cfg.grid.y * cfg.grid.z == 0) {
    fprintf(stderr, "cuda_emu: launch of %d threads x %u blocks: invalid configuration\n", threads,
            cfg.grid.x * cfg.grid.y * cfg.grid.z);
    abort();
  }
  const auto attribute = emu_smem_attribute.find(reinterpret_cast<const void*>(kernel));
  const size_t allowed = attribute != emu_smem_attribute.end() ? attribute->second : 48 * 1024;
  if (cfg.smem > allowed) {
    fprintf(stderr,
            "cuda_emu: launch with %zu bytes of dynamic shared memory, above the %zu the kernel's "
            "attribute allows\n",
            cfg.smem, allowed);
    abort();
  }
  namespace kbc = kiln::backends::cuda;
  emu_catch_signals();
  auto& s = emu_sched;
  if (const char* seed = getenv("EMU_SHUFFLE")) {
    s.shuffle = true;
    s.rng.seed(static_cast<unsigned>(atoi(seed)));
  }
  blockDim = {cfg.block.x, cfg.block.y, cfg.block.z};
  gridDim = {cfg.grid.x, cfg.grid.y, cfg.grid.z};
  s.body = [&] { kernel(args...); };
  s.fibers.resize(static_cast<size_t>(threads));
  for (EmuFiber& f : s.fibers) {
    if (f.stack != nullptr) continue;
    void* m = mmap(nullptr, s.kGuard + s.kStack, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED || mprotect(m, s.kGuard, PROT_NONE) != 0) {
      fprintf(stderr, "cuda_emu: no memory for %d fiber stacks\n", threads);
      abort();
    }
    f.stack = static_cast<unsigned char*>(m) + s.kGuard;
  }
  for (unsigned bz = 0; bz < cfg.grid.z; ++bz) {
    for (unsigned by = 0; by < cfg.grid.y; ++by) {
      for (unsigned bx = 0; bx < cfg.grid.x; ++bx) {
        blockIdx = {bx, by, bz};
        std::memset(kbc::smem, 0xcd, sizeof(kbc::smem)); // poison
        std::fill(emu_shadow, emu_shadow + emu_shadow_used, EmuShadow{});
        emu_shadow_used = 0;
        for (int t = 0; t < threads; ++t) {
          emu_proxy_fences[t] = 0;
          emu_copies[t].clear();
          emu_copy_groups[t] = emu_product_groups[t] = 0;
          emu_wgmma_fenced[t] = false;
          emu_products[t].clear();
        }
        EmuBarrier block_bar(threads);
        std::vector<std::unique_ptr<EmuBarrier>> warp_bars;
        for (int w = 0; w * 32 < threads; ++w) {
          warp_bars.push_back(std::make_unique<EmuBarrier>(std::min(32, threads - 32 * w)));
          emu_warp_bar[w] = warp_bars.back().get();
          for (int l = 0; l < 32; ++l) emu_exited[w][l] = 32 * w + l >= threads;
        }
        std::vector<std::unique_ptr<EmuBarrier>> group_bars;
        for (int g = 0; g * 128 < threads; ++g) {
          group_bars.push_back(std::make_unique<EmuBarrier>(std::min(128, threads - 128 * g)));
          emu_group_bar[g] = group_bars.back().get();
        }
        emu_block_bar = &block_bar;
        emu_vc_reset(threads);
        for (EmuNamedBar& b : emu_named) {
          b.count = b.arrived = 0;
          b.waiters.clear();
        }
        s.runnable.clear();
        for (int t = 0; t < threads; ++t) {
          EmuFiber& f = s.fibers[t];
          f.idx = {t % cfg.block.x, t / cfg.block.x % cfg.block.y, t / (cfg.block.x * cfg.block.y)};
          f.or_phase = 0;
          f.done = false;
          f.where = {};
          // The frame emu_switch resumes: MXCSR/x87 word (the launcher's), six registers, the
          // return address emu_fiber_main, and a null return address for it (entry alignment).
          auto* top = reinterpret_cast<uint64_t*>(f.stack + s.kStack);
          uint64_t* sp = top - 9;
          uint32_t csr[2];
          asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(csr[0]), "=m"(csr[1]));
          std::memcpy(sp, csr, 8);
          for (int r = 1; r <= 6; ++r) sp[r] = 0;
          sp[7] = reinterpret_cast<uint64_t>(&emu_fiber_main);
          sp[8] = 0;
          f.sp = sp;
          s.runnable.push_back(t);
        }
        const int first = s.runnable.front();
        s.runnable.pop_front();
        s.current = first;
        threadIdx = s.fibers[first].idx;
        emu_tid = first;
        emu_or_phase = 0;
        emu_switch(&s.launcher_sp, s.fibers[first].sp); // back when every fiber has finished
        // A named barrier left mid-phase: arrivals its protocol does not balance (a producer's
        // signal nobody consumed), a bug the hardware would let pass silently.
        for (int id = 1; id < 16; ++id) {
          const EmuNamedBar& b = emu_named[id];
          if (b.arrived == 0) continue;
          fprintf(stderr,
                  "cuda_emu: block (%u, %u, %u) ended with named barrier %d mid-phase: %d of %d "
                  "threads arrived (first: thread %d at %s:%u); its arrivals do not balance\n",
                  bx, by, bz, id, b.arrived, b.count, b.first_tid, b.first_file, b.first_line);
          abort();
        }
        for (size_t i = cfg.smem; i < sizeof(kbc::smem); ++i) {
          if (kbc::smem[i] != 0xcd) {
            fprintf(stderr,
                    "cuda_emu: block (%u, %u, %u) wrote shared byte %zu, past its %zu bytes of "
                    "dynamic shared memory\n",
                    bx, by, bz, i, cfg.smem);
            abort();
          }
        }
      }
    }
  }
  s.body = nullptr;
}
