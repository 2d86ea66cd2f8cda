// CPU emulation of plugins/backends/cuda/device.cuh, for running a kernel's own source on a
// machine without a GPU (tools/cuda_emu/run). One fiber (own stack) per CUDA thread, one CTA at a
// time on one OS thread; __syncthreads, named barriers (bar.sync/bar.arrive) and warp collectives
// (ldmatrix, mma, shfl, votes, redux) meet at barriers, and follow the PTX ISA's fragment layouts
// and lane rules, not the real device.cuh's code. What it checks: index math, tile layouts and
// swizzles, fragment mappings, barrier structure (a warp collective met by part of a warp, and a
// barrier part of the block never reaches, are reported with every thread's place), shared bounds
// it can see (ldmatrix/cp.async addresses, writes past the launch's dynamic size), shared-memory
// races and the asynchrony of cp.async, wgmma and TMA ("hazards" below), mbarrier protocols. What
// it cannot: timing, bank conflicts, registers, the PTX strings, races in global memory, launch
// limits other than shared memory, collectives with partial masks (reported), threads that wait on
// each other without a barrier (spin loops hang); mma sums in a different order than the tensor
// cores.
#pragma once
#include <cuda.h> // CUtensorMap and cuTensorMapEncodeTiled's types (no driver is linked)
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
#include <type_traits>
#include <vector>

#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>
#include <csignal>
#include <string>

#define __launch_bounds__(...)
// A kernel parameter the kernel may take the address of (a CUtensorMap): an ordinary by-value
// parameter here (cuda's host headers already make it empty for a host compiler).
#ifndef __grid_constant__
#define __grid_constant__
#endif
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

// Defined with the mbarriers below: each one's state (the deadlock report), and TMA copies
// completing (the scheduler lets them complete when nothing else can run, or at random under
// EMU_SHUFFLE; true when one did).
inline void emu_mbar_report();
inline bool emu_tma_progress(bool all);

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
  emu_mbar_report();
  fflush(stderr);
  abort();
}

// Leaves the running fiber (which waits or has finished) for the next runnable one, or for the
// launcher once every fiber has finished; returns when the fiber is resumed. TMA copies complete
// here at the latest: when every unfinished thread waits (which may release some), or under
// EMU_SHUFFLE at random switches.
inline void emu_yield() {
  auto& s = emu_sched;
  EmuFiber& self = s.fibers[s.current];
  self.idx = threadIdx;
  self.or_phase = emu_or_phase;
  if (s.shuffle) emu_tma_progress(false);
  if (s.runnable.empty()) {
    bool all_done = true;
    for (const EmuFiber& f : s.fibers) all_done &= f.done;
    if (!all_done && !(emu_tma_progress(true) && !s.runnable.empty())) emu_deadlock();
    if (all_done) {
      s.current = -1;
      emu_switch(&self.sp, s.launcher_sp);
      return; // not reached: a finished fiber is not resumed
    }
  }
  size_t pick = 0;
  if (s.shuffle) pick = std::uniform_int_distribution<size_t>(0, s.runnable.size() - 1)(s.rng);
  const int next = s.runnable[pick];
  s.runnable.erase(s.runnable.begin() + static_cast<std::ptrdiff_t>(pick));
  if (next == s.current) return; // a completion released the waiting fiber itself
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

// The block barrier, and what it hands on besides its release count (the vector clocks' agent
// columns, below).
inline void emu_block_sync(const char* what, const EmuLoc& loc);
inline void __syncthreads(EmuLoc loc = EmuLoc::current()) {
  emu_block_sync("__syncthreads", loc);
}
inline int __syncthreads_or(int pred, EmuLoc loc = EmuLoc::current()) {
  const int ph = emu_or_phase;
  emu_or_phase ^= 1;
  if (pred) emu_or[ph] = 1;
  emu_block_sync("__syncthreads_or", loc);
  const int r = emu_or[ph];
  emu_block_sync("__syncthreads_or", loc);
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
// clock, which an access records and which goes up each time t arrives at a __syncwarp, a named
// barrier or an mbarrier, or releases through an atomic (its later accesses are not covered by
// what it published there). A __syncwarp joins its lanes' rows (exited lanes' last ones too); a
// named barrier phase joins its arrivals' rows and hands the join to the threads that waited in
// it. Only __syncwarp among the warp collectives orders memory, as on the GPU. Rows are the
// block's thread count long, plus one column per mbarrier once the block initializes one (its
// "agent" column: the count of its completed phases a thread knows of, which orders the bytes
// TMA copies landed at those completions; see the mbarriers below).
inline int emu_vc_n = 0;                   // threads: the rows of emu_vc
inline int emu_vc_w = 0;                   // row width: threads, then the agent columns
inline std::vector<uint32_t> emu_vc;       // n rows of w
inline std::vector<uint32_t> emu_vc_warp;  // a warp's join at its __syncwarp: 32 rows of w
inline uint32_t emu_vc_warp_mark[32];      // the warp barrier's releases at that join
inline std::vector<uint32_t> emu_vc_named; // each named barrier's phase: 16 rows of w
inline bool emu_vc_dirty = false;          // a row has changed in this block
// __syncthreads hands on the agent columns (the release count covers the threads' own): each
// arrival joins its agent entries into the join of its phase, each thread takes that join after
// the release. Two joins alternate, tagged with the release count at arrival: every thread reads
// its phase's join before it can arrive at the next phase, so the one after may reuse it.
inline std::vector<uint32_t> emu_vc_sync_join[2];
inline uint32_t emu_vc_sync_tag[2];
EMU_NOSAN inline uint32_t* emu_vc_row(std::vector<uint32_t>& rows, int r) {
  return rows.data() + static_cast<size_t>(r) * static_cast<size_t>(emu_vc_w);
}
EMU_NOSAN inline void emu_vc_join(uint32_t* __restrict dst, const uint32_t* __restrict src) {
  for (int i = 0, n = emu_vc_w; i < n; ++i) dst[i] = dst[i] < src[i] ? src[i] : dst[i];
}
// A block of `threads` starts: nobody has synchronized with anybody, own clocks 1, no agents.
EMU_NOSAN inline void emu_vc_reset(int threads) {
  if (threads != emu_vc_n || emu_vc_w != threads) {
    emu_vc_n = emu_vc_w = threads;
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
  for (int i = 0; i < 2; ++i) {
    emu_vc_sync_join[i].clear();
    emu_vc_sync_tag[i] = UINT32_MAX;
  }
}
// Widens every row to `agents` agent columns (new entries 0: nothing known of them yet).
EMU_NOSAN inline void emu_vc_widen(int agents) {
  const int w = emu_vc_n + agents, old = emu_vc_w;
  if (w <= old) return;
  auto relayout = [&](std::vector<uint32_t>& rows, int count) {
    std::vector<uint32_t> wide(static_cast<size_t>(count) * static_cast<size_t>(w), 0u);
    for (int r = 0; r < count; ++r) {
      std::memcpy(wide.data() + static_cast<size_t>(r) * static_cast<size_t>(w),
                  rows.data() + static_cast<size_t>(r) * static_cast<size_t>(old),
                  sizeof(uint32_t) * static_cast<size_t>(old));
    }
    rows.swap(wide);
  };
  relayout(emu_vc, emu_vc_n);
  relayout(emu_vc_warp, 32);
  relayout(emu_vc_named, 16);
  emu_vc_w = w;
  emu_vc_dirty = true;
}
// A __syncthreads arrival (returns the release count it arrives at) and the leave after it.
EMU_NOSAN inline uint32_t emu_vc_sync_arrive(uint32_t releases) {
  const size_t agents = static_cast<size_t>(emu_vc_w - emu_vc_n);
  if (agents == 0) return releases;
  std::vector<uint32_t>& join = emu_vc_sync_join[releases & 1];
  if (emu_vc_sync_tag[releases & 1] != releases) {
    join.assign(agents, 0u);
    emu_vc_sync_tag[releases & 1] = releases;
  } else if (join.size() < agents) {
    join.resize(agents, 0u);
  }
  const uint32_t* mine = emu_vc_row(emu_vc, emu_tid) + emu_vc_n;
  for (size_t i = 0; i < agents; ++i) join[i] = join[i] < mine[i] ? mine[i] : join[i];
  return releases;
}
EMU_NOSAN inline void emu_vc_sync_leave(uint32_t releases) {
  const std::vector<uint32_t>& join = emu_vc_sync_join[releases & 1];
  if (emu_vc_w == emu_vc_n || emu_vc_sync_tag[releases & 1] != releases) return;
  uint32_t* mine = emu_vc_row(emu_vc, emu_tid) + emu_vc_n;
  const size_t agents = std::min(join.size(), static_cast<size_t>(emu_vc_w - emu_vc_n));
  for (size_t i = 0; i < agents; ++i) mine[i] = mine[i] < join[i] ? join[i] : mine[i];
  emu_vc_dirty = true;
}
inline void emu_block_sync(const char* what, const EmuLoc& loc) {
  const uint32_t releases = emu_vc_sync_arrive(emu_block_bar->releases());
  emu_wait(*emu_block_bar, what, loc);
  emu_vc_sync_leave(releases);
}
// Between a __syncwarp's two warp barriers: the first lane past the first one joins every lane's
// row (no lane has changed its own since it arrived), each lane takes the join and starts a new
// clock.
EMU_NOSAN inline void emu_vc_syncwarp() {
  const int t = emu_tid, w = t / 32, n = emu_vc_n;
  const size_t width = static_cast<size_t>(emu_vc_w);
  uint32_t* join = emu_vc_row(emu_vc_warp, w);
  const uint32_t opened = emu_warp_bar[w]->releases();
  if (emu_vc_warp_mark[w] != opened) {
    emu_vc_warp_mark[w] = opened;
    std::memcpy(join, emu_vc_row(emu_vc, 32 * w), sizeof(uint32_t) * width);
    for (int u = 32 * w + 1; u < 32 * w + 32 && u < n; ++u)
      emu_vc_join(join, emu_vc_row(emu_vc, u));
  }
  uint32_t* mine = emu_vc_row(emu_vc, t);
  std::memcpy(mine, join, sizeof(uint32_t) * width);
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
EMU_NOSAN inline unsigned atomicAdd(unsigned* p, unsigned v) {
  const unsigned old = *p;
  *p += v;
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

// cuTensorMapEncodeTiled, as the driver entry point below hands it out: the requirements the
// driver documents are checked (an invalid parameter gets CUDA_ERROR_INVALID_VALUE, with a line
// on stderr saying which), and the fields are kept inside the CUtensorMap's 128 opaque bytes for
// the emulated TMA. Valid requests the TMA emulation does not model abort with a clear message:
// interleaved layouts, the packed 4/6-bit types, element strides other than 1 past dimension 0,
// NaN out-of-bounds fill, and swizzles other than none and 128-byte with a box row of 128 bytes.
struct EmuTensorMap {
  uint64_t magic;
  uint64_t address;
  uint64_t dim[5];
  uint64_t stride[4]; // bytes of dimensions 1..rank-1
  uint16_t box[5];
  uint8_t element_stride[5];
  uint8_t type, rank, elem_bytes, interleave, swizzle, l2, oob;
};
static_assert(sizeof(EmuTensorMap) <= sizeof(CUtensorMap));
constexpr uint64_t kEmuTensorMapMagic = 0x50414d546e6c696bull; // "kilnTMAP"
inline CUresult emu_encode_tiled(CUtensorMap* map, CUtensorMapDataType type, cuuint32_t rank,
                                 void* address, const cuuint64_t* dim, const cuuint64_t* strides,
                                 const cuuint32_t* box, const cuuint32_t* element_strides,
                                 CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
                                 CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob) {
  auto invalid = [](const char* why, unsigned long long value) {
    fprintf(stderr, "cuda_emu: cuTensorMapEncodeTiled: %s (%llu): CUDA_ERROR_INVALID_VALUE\n", why,
            value);
    return CUDA_ERROR_INVALID_VALUE;
  };
  auto not_emulated = [](const char* what, unsigned long long value) {
    fprintf(stderr, "cuda_emu: cuTensorMapEncodeTiled with %s (%llu): valid, but not emulated\n",
            what, value);
    abort();
  };
  // Element sizes of CUtensorMapDataType 0..12; 13..15 are the packed 4- and 6-bit types.
  static constexpr uint8_t kBytes[13] = {1, 2, 4, 4, 8, 8, 2, 4, 8, 2, 4, 4, 4};
  const auto t = static_cast<unsigned>(type), il = static_cast<unsigned>(interleave);
  const auto sw = static_cast<unsigned>(swizzle);
  if (map == nullptr || reinterpret_cast<uintptr_t>(map) % 64 != 0) {
    return invalid("tensorMap not 64-byte aligned", reinterpret_cast<uintptr_t>(map));
  }
  if (t > 15) return invalid("tensorDataType not a CUtensorMapDataType", t);
  if (rank == 0 || rank > 5) return invalid("tensorRank outside 1..5", rank);
  if (il > 2) return invalid("interleave not a CUtensorMapInterleave", il);
  if (il != 0 && rank < 3) return invalid("an interleaved layout of tensorRank below 3", rank);
  const auto addr = reinterpret_cast<uintptr_t>(address);
  if (addr % (il == 2 || t == 14 || t == 15 ? 32 : 16) != 0) {
    return invalid("globalAddress not 16-byte aligned (32 for INTERLEAVE_32B, 16U4/16U6_ALIGN16B)",
                   addr);
  }
  if (dim == nullptr || box == nullptr || element_strides == nullptr ||
      (rank > 1 && strides == nullptr)) {
    return invalid("a null array", rank);
  }
  for (unsigned i = 0; i < rank; ++i) {
    if (dim[i] == 0 || dim[i] > (uint64_t{1} << 32)) {
      return invalid("a globalDim outside 1..2^32", dim[i]);
    }
  }
  for (unsigned i = 0; i + 1 < rank; ++i) {
    if (strides[i] % (il == 2 || t == 14 || t == 15 ? 32 : 16) != 0) {
      return invalid("a globalStride not a multiple of 16 (32 for INTERLEAVE_32B)", strides[i]);
    }
    if (strides[i] >= (uint64_t{1} << 40))
      return invalid("a globalStride of 2^40 or more", strides[i]);
  }
  for (unsigned i = 0; i < rank; ++i) {
    if (box[i] == 0 || box[i] > 256) return invalid("a boxDim outside 1..256", box[i]);
    if (element_strides[i] == 0 || element_strides[i] > 8) {
      return invalid("an elementStride outside 1..8", element_strides[i]);
    }
  }
  if (sw > 6) return invalid("swizzle not a CUtensorMapSwizzle", sw);
  if (static_cast<unsigned>(l2) > 3) return invalid("l2Promotion not a CUtensorMapL2promotion", l2);
  if (static_cast<unsigned>(oob) > 1) return invalid("oobFill not a CUtensorMapFloatOOBfill", oob);
  if (il == 2 && sw != 1) return invalid("INTERLEAVE_32B without SWIZZLE_32B", sw);
  if (t > 12) not_emulated("a packed 4- or 6-bit tensorDataType", t);
  const uint64_t row = uint64_t{box[0]} * kBytes[t];
  if (il == 0 && row % 16 != 0)
    return invalid("boxDim[0] * element size not a multiple of 16", row);
  if (il == 0 && sw != 0 && row > (sw == 1 ? 32u : sw == 2 ? 64u : 128u)) {
    return invalid("boxDim[0] * element size above the swizzle's span", row);
  }
  const bool is_float = t >= 6 && t != 13 && t != 14 && t != 15;
  if (oob != CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE && !is_float) {
    return invalid("a NaN oobFill for an integer tensorDataType", t);
  }
  if (il != 0) not_emulated("an interleaved layout", il);
  if (oob != CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE)
    not_emulated("FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA", 1);
  for (unsigned i = 1; i < rank; ++i) {
    if (element_strides[i] != 1) not_emulated("an elementStride other than 1", element_strides[i]);
  }
  if (sw != 0 && sw != 3) not_emulated("a swizzle other than NONE and 128B", sw);
  if (sw == 3 && row != 128)
    not_emulated("SWIZZLE_128B with a box row of other than 128 bytes", row);
  EmuTensorMap m{};
  m.magic = kEmuTensorMapMagic;
  m.address = addr;
  for (unsigned i = 0; i < rank; ++i) {
    m.dim[i] = dim[i];
    m.box[i] = static_cast<uint16_t>(box[i]);
    m.element_stride[i] = static_cast<uint8_t>(element_strides[i]);
    if (i + 1 < rank) m.stride[i] = strides[i];
  }
  m.type = static_cast<uint8_t>(t);
  m.rank = static_cast<uint8_t>(rank);
  m.elem_bytes = kBytes[t];
  m.interleave = static_cast<uint8_t>(il);
  m.swizzle = static_cast<uint8_t>(sw);
  m.l2 = static_cast<uint8_t>(l2);
  m.oob = static_cast<uint8_t>(oob);
  std::memset(map, 0, sizeof(CUtensorMap));
  std::memcpy(map, &m, sizeof m);
  return CUDA_SUCCESS;
}
static_assert(std::is_same_v<decltype(&emu_encode_tiled), decltype(&cuTensorMapEncodeTiled)>);
// The driver entry points a launcher asks the runtime for: cuTensorMapEncodeTiled (from CUDA
// 12.0 on) is the emulated encoder above. The emulated driver is the headers' CUDA_VERSION: a
// later cudaVersion, a null argument or unknown flags are cudaErrorInvalidValue; an older version
// answers cudaSuccess with a null function and VersionNotSufficent, a name that is no driver
// function's SymbolNotFound, as the runtime does. Any other driver function aborts (not emulated).
extern "C" cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** fn,
                                                        unsigned int version,
                                                        unsigned long long flags,
                                                        cudaDriverEntryPointQueryResult* status) {
  if (symbol == nullptr || fn == nullptr || flags > cudaEnablePerThreadDefaultStream ||
      version > CUDA_VERSION) {
    return cudaErrorInvalidValue;
  }
  *fn = nullptr;
  cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
  // EMU_NO_TENSOR_MAPS=1: a driver without the encoder (a kernel's fallback path runs).
  const char* none = std::getenv("EMU_NO_TENSOR_MAPS");
  if (none != nullptr && std::strcmp(none, "0") != 0) {
    found = cudaDriverEntryPointSymbolNotFound;
  } else if (std::strcmp(symbol, "cuTensorMapEncodeTiled") == 0) {
    found = version < 12000 ? cudaDriverEntryPointVersionNotSufficent : cudaDriverEntryPointSuccess;
    if (found == cudaDriverEntryPointSuccess) *fn = reinterpret_cast<void*>(&emu_encode_tiled);
  } else if (std::strncmp(symbol, "cu", 2) == 0) {
    fprintf(stderr,
            "cuda_emu: cudaGetDriverEntryPoint(\"%s\"): not emulated (cuTensorMapEncodeTiled is)\n",
            symbol);
    abort();
  }
  if (status != nullptr) *status = found;
  return cudaSuccess;
}
extern "C" cudaError_t cudaGetDriverEntryPoint(const char* symbol, void** fn,
                                               unsigned long long flags,
                                               cudaDriverEntryPointQueryResult* status) {
  return cudaGetDriverEntryPointByVersion(symbol, fn, CUDART_VERSION, flags, status);
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
// fence_proxy_async since the write (generic to async proxy). A TMA copy's bytes are in flight
// from its issue until the completion of the mbarrier phase it counts toward; they then land as
// a write of the mbarrier's agent column (emu_vc), which orders them before what a thread does
// after observing that completion (mbarrier_wait, or a chain of barriers and acq_rel atomics
// from a thread that did). The 8 bytes of a live mbarrier are for mbarrier operations only. The
// checks see one interleaving's accesses, but every pair of them: a missing barrier shows
// whatever order the fibers ran in.

struct EmuSite {
  const void* where = nullptr; // line 0: a code address (an instrumented access); else a file name
  uint32_t line = 0;
};
struct EmuAccess {
  EmuSite site;
  uint32_t block = 0;  // block barrier releases at the access
  uint32_t clock = 0;  // the thread's own vector clock entry at the access
  uint32_t fence = 0;  // the thread's fence_proxy_async count at the access
  int16_t tid = -1;    // -1: none; from the block's thread count on, an mbarrier's agent column
  int16_t issuer = -1; // the landing of a TMA (tid an agent column): the thread that issued it
};
// pending: -1, or a thread whose cp.async or TMA (tma) into the byte has not landed, or
// kEmuMbarByte: the byte belongs to a live mbarrier.
constexpr int16_t kEmuMbarByte = -2;
struct EmuShadow {
  EmuAccess write, read[2];
  int16_t pending = -1;
  bool tma = false;
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

enum class EmuKind { kRead, kWrite, kAsyncRead, kCopyIssue, kCopyLand, kTmaIssue };
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
    case EmuKind::kTmaIssue:
      return "TMA writes";
  }
  return "?";
}
// Defined with the mbarriers below: what a TMA's landing record, an in-flight TMA byte and a live
// mbarrier byte are, in words.
inline std::string emu_landing_text(const EmuAccess& landed);
inline std::string emu_tma_text(uint32_t byte);
inline std::string emu_mbar_text(uint32_t byte);

[[noreturn]] inline void emu_race(uint32_t byte, EmuKind kind, const EmuSite& site,
                                  const EmuAccess& prev, const char* prev_what,
                                  const char* missing) {
  const int t = emu_sched.current;
  if (prev.tid >= emu_vc_n) { // bytes a TMA landed
    emu_fail(
        "shared byte %u: thread %d (warp %d lane %d) %s it at %s; %s, and this thread has not "
        "observed that completion (its mbarrier_wait, or a barrier, named barrier or acq_rel "
        "atomic after a thread that did)\n",
        byte, t, t / 32, t % 32, emu_kind_name(kind), emu_site_text(site).c_str(),
        emu_landing_text(prev).c_str());
  }
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
      "and no __syncthreads opened between (nor orders them a __syncwarp of their warp, a named "
      "barrier or mbarrier phase this thread waited at, or a chain of acq_rel atomics)";
  const EmuAccess now = emu_now(site);
  const bool read = kind == EmuKind::kRead || kind == EmuKind::kAsyncRead;
  for (uint32_t i = offset; i < offset + bytes; ++i) {
    EmuShadow& s = emu_shadow[i];
    if (s.pending != -1 && kind != EmuKind::kCopyLand) {
      if (s.pending == kEmuMbarByte) {
        emu_fail("shared byte %u: thread %d (warp %d lane %d) %s it at %s: %s\n", i, t, t / 32,
                 t % 32, emu_kind_name(kind), emu_site_text(site).c_str(),
                 emu_mbar_text(i).c_str());
      }
      if (s.tma) {
        emu_fail("shared byte %u: thread %d (warp %d lane %d) %s it at %s while %s\n", i, t, t / 32,
                 t % 32, emu_kind_name(kind), emu_site_text(site).c_str(), emu_tma_text(i).c_str());
      }
      emu_fail(
          "shared byte %u: thread %d (warp %d lane %d) %s it at %s while thread %d's cp.async "
          "into it is in flight (before that thread's cp_async_wait and a barrier after it)\n",
          i, t, t / 32, t % 32, emu_kind_name(kind), emu_site_text(site).c_str(), s.pending);
    }
    if (read) {
      if (!emu_ordered(s.write, t)) emu_race(i, kind, site, s.write, "wrote", unordered);
      // (A TMA's bytes come through the async proxy: the tensor cores read them unfenced.)
      if (kind == EmuKind::kAsyncRead && s.write.tid >= 0 && s.write.tid < emu_vc_n &&
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
    if (kind == EmuKind::kCopyIssue || kind == EmuKind::kTmaIssue) {
      s.pending = static_cast<int16_t>(t);
      s.tma = kind == EmuKind::kTmaIssue;
      continue;
    }
    s.pending = -1;
    s.tma = false;
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

// ---- mbarriers, TMA copies, acq_rel atomics -----------------------------------------------------
// An mbarrier (8 bytes of shared memory, 8-byte aligned, inside the launch's dynamic size) has the
// state the PTX ISA describes, kept here by address: its expected arrival count, the arrivals and
// the tx-count of the current phase, and the phase (its parity: the count of completed phases).
// A phase completes when every expected arrival has come and the tx-count is 0 again
// (arrive.expect_tx raises it, a TMA copy's complete_tx lowers it by the copy's bytes; it may go
// negative in between, within +-(2^20 - 1)); the next phase starts at once with the full count.
// mbarrier_wait(parity) returns at once when the phase of that parity has completed (try_wait.
// parity: the current phase's parity differs), else the thread waits until it completes.
//
// Memory (the vector clocks, emu_vc): an arrival releases (its row joins the mbarrier's, and its
// own clock moves on), an observed completion acquires: each waiter takes the mbarrier's row as
// of that completion. The row is cumulative, as arrivals are read-modify-writes of one object
// (a release sequence). Each mbarrier has an agent column, the count of its completed phases: the
// bytes TMA copies land at a completion are a write of that column, ordered before what a thread
// does once it knows of the completion (its mbarrier_wait, or a __syncwarp, __syncthreads, named
// barrier, mbarrier or acq_rel atomic after a thread that waited) and unordered with the rest.
//
// A TMA copy reads its box from global memory at issue, and its bytes are in flight until the
// completion of the phase its complete_tx counts toward: any access of them in between is
// reported, and they land (the data, and the write record above) at that completion. Its
// complete_tx reaches the mbarrier as late as the emulation allows: when every unfinished thread
// of the block waits (or, under EMU_SHUFFLE, at random switches), in issue order.
struct EmuTma {
  uint32_t dst = 0, bytes = 0; // the box in shared memory: [dst, dst + bytes), swizzled
  uint32_t bar = 0;            // the mbarrier its complete_tx counts toward
  int issuer = -1;
  EmuSite site;
  std::vector<unsigned char> data; // what lands at dst
};
struct EmuMbar {
  uint32_t addr = 0;
  bool live = false;
  uint32_t count = 0, arrived = 0; // expected arrivals; those of the current phase
  int64_t tx = 0;                  // the current phase's tx-count
  uint32_t phase = 0;              // phases completed since the init (the current parity: & 1)
  uint32_t completions = 0;        // phases completed in the block: its agent column's clock
  uint32_t landed = 0;             // the last completion that landed TMA bytes
  EmuTma last_copy;                // one of those copies (without its data): the reports
  EmuAccess init, fence; // its init; the initializer's fence after it (async-proxy visibility)
  int first_tid = -1;    // the current phase's first arrival
  EmuSite first_site;
  std::vector<int> waiters;
  std::vector<EmuTma> landing;     // copies whose complete_tx the current phase has counted
  std::vector<uint32_t> acc, done; // rows: the arrivals' join; as of the last completion
};
inline std::vector<EmuMbar> emu_mbars; // the block's, by first init: i's agent column is n + i
inline std::deque<EmuTma> emu_tmas;    // issued, complete_tx not counted yet (issue order)
inline std::map<uint32_t, std::vector<uint32_t>> emu_atomic_vc; // row per acq_rel atomic word
inline size_t emu_dynamic_smem = 0;                             // the launch's dynamic size

inline EmuSite emu_site(const EmuLoc& loc) {
  return EmuSite{loc.file_name(), loc.line()};
}
inline int emu_mbar_find(uint32_t addr) {
  for (size_t i = 0; i < emu_mbars.size(); ++i) {
    if (emu_mbars[i].addr == addr) return static_cast<int>(i);
  }
  return -1;
}
// The live mbarrier whose 8 bytes hold `byte`, or -1.
inline int emu_mbar_holding(uint32_t byte) {
  for (size_t i = 0; i < emu_mbars.size(); ++i) {
    const EmuMbar& b = emu_mbars[i];
    if (b.live && byte >= b.addr && byte < b.addr + 8) return static_cast<int>(i);
  }
  return -1;
}
// A new mbarrier at `addr` and its agent column (the rows widen 8 columns at a time).
EMU_NOSAN inline int emu_mbar_add(uint32_t addr) {
  emu_mbars.emplace_back();
  emu_mbars.back().addr = addr;
  const int agents = static_cast<int>(emu_mbars.size());
  if (emu_vc_w - emu_vc_n < agents) {
    emu_vc_widen((agents + 7) / 8 * 8);
    for (auto& [word, row] : emu_atomic_vc) row.resize(static_cast<size_t>(emu_vc_w), 0u);
    for (EmuMbar& b : emu_mbars) {
      b.acc.resize(static_cast<size_t>(emu_vc_w), 0u);
      b.done.resize(static_cast<size_t>(emu_vc_w), 0u);
    }
  }
  emu_mbars.back().acc.assign(static_cast<size_t>(emu_vc_w), 0u);
  emu_mbars.back().done.assign(static_cast<size_t>(emu_vc_w), 0u);
  return agents - 1;
}
inline std::string emu_mbar_state(const EmuMbar& b) {
  char buf[256];
  snprintf(buf, sizeof buf, "phase %u (parity %u): %u of %u arrivals, tx-count %lld", b.phase,
           b.phase & 1, b.arrived, b.count, static_cast<long long>(b.tx));
  return buf;
}
inline std::string emu_mbar_text(uint32_t byte) {
  const int i = emu_mbar_holding(byte);
  if (i < 0) return "a live mbarrier's byte";
  const EmuMbar& b = emu_mbars[i];
  char buf[512];
  snprintf(buf, sizeof buf,
           "it belongs to the mbarrier at shared %u (initialized by thread %d at %s), which only "
           "mbarrier operations may touch",
           b.addr, b.init.tid, emu_site_text(b.init.site).c_str());
  return buf;
}
inline std::string emu_tma_text(uint32_t byte) {
  char buf[768];
  auto describe = [&](const EmuTma& c, const char* state) {
    snprintf(buf, sizeof buf,
             "thread %d's TMA at %s into shared [%u, %u) is in flight (%s; its bytes land when "
             "that phase completes, for the threads that observe it)",
             c.issuer, emu_site_text(c.site).c_str(), c.dst, c.dst + c.bytes, state);
  };
  for (const EmuTma& c : emu_tmas) {
    if (byte < c.dst || byte >= c.dst + c.bytes) continue;
    char state[256];
    snprintf(state, sizeof state, "its complete_tx has not reached the mbarrier at shared %u yet",
             c.bar);
    describe(c, state);
    return buf;
  }
  for (const EmuMbar& b : emu_mbars) {
    for (const EmuTma& c : b.landing) {
      if (byte < c.dst || byte >= c.dst + c.bytes) continue;
      const std::string state =
          "the mbarrier at shared " + std::to_string(b.addr) + " is at " + emu_mbar_state(b);
      describe(c, state.c_str());
      return buf;
    }
  }
  return "a TMA into it is in flight";
}
inline std::string emu_landing_text(const EmuAccess& landed) {
  const int i = landed.tid - emu_vc_n;
  char buf[512];
  snprintf(buf, sizeof buf,
           "a TMA issued by thread %d (warp %d lane %d) at %s landed in it at completion %u of the "
           "mbarrier at shared %u",
           landed.issuer, landed.issuer / 32, landed.issuer % 32,
           emu_site_text(landed.site).c_str(), landed.clock,
           i >= 0 && i < static_cast<int>(emu_mbars.size()) ? emu_mbars[i].addr : 0u);
  return buf;
}
// Every live mbarrier (the deadlock report).
inline void emu_mbar_report() {
  for (const EmuMbar& b : emu_mbars) {
    if (!b.live) continue;
    size_t flying = 0;
    for (const EmuTma& c : emu_tmas) flying += c.bar == b.addr;
    fprintf(stderr,
            "  mbarrier at shared %u (initialized by thread %d at %s): %s, %zu waiting, %zu TMA "
            "copies counted and %zu not yet\n",
            b.addr, b.init.tid, emu_site_text(b.init.site).c_str(), emu_mbar_state(b).c_str(),
            b.waiters.size(), b.landing.size(), flying);
  }
}

// The phase of mbarrier i completes: the bytes of the copies it counted land, its waiters take its
// row (with the new completion in its agent column) and run again, the next phase begins.
EMU_NOSAN inline void emu_mbar_complete(int i) {
  namespace kbc = kiln::backends::cuda;
  EmuMbar& b = emu_mbars[i];
  ++b.phase;
  ++b.completions;
  const int column = emu_vc_n + i;
  b.acc[column] = b.completions;
  b.done = b.acc;
  for (const EmuTma& c : b.landing) {
    b.landed = b.completions;
    b.last_copy = EmuTma{c.dst, c.bytes, c.bar, c.issuer, c.site, {}};
    std::memcpy(kbc::smem + c.dst, c.data.data(), c.bytes);
    EmuAccess landed;
    landed.site = c.site;
    landed.block = UINT32_MAX; // a __syncthreads orders it only through the agent column
    landed.clock = b.completions;
    landed.tid = static_cast<int16_t>(column);
    landed.issuer = static_cast<int16_t>(c.issuer);
    for (uint32_t j = c.dst; j < c.dst + c.bytes; ++j) {
      EmuShadow& s = emu_shadow[j];
      s.pending = -1;
      s.tma = false;
      s.write = landed;
      s.read[0] = s.read[1] = EmuAccess{};
    }
  }
  b.landing.clear();
  b.arrived = 0;
  b.tx = 0;
  b.first_tid = -1;
  for (int u : b.waiters) {
    emu_vc_join(emu_vc_row(emu_vc, u), b.done.data());
    emu_sched.runnable.push_back(u);
  }
  b.waiters.clear();
  emu_vc_dirty = true;
}
inline void emu_mbar_check_tx(const EmuMbar& b, const char* what, const EmuSite& site) {
  constexpr int64_t kMax = (int64_t{1} << 20) - 1;
  if (b.tx > kMax || b.tx < -kMax) {
    emu_fail(
        "%s at %s takes the tx-count of the mbarrier at shared %u to %lld, outside PTX's "
        "range +-(2^20 - 1)\n",
        what, emu_site_text(site).c_str(), b.addr, static_cast<long long>(b.tx));
  }
}
// A TMA copy's complete_tx reaches its mbarrier (which may complete the phase).
EMU_NOSAN inline void emu_tma_complete_tx(EmuTma&& c) {
  const int i = emu_mbar_find(c.bar);
  if (i < 0 || !emu_mbars[i].live) {
    emu_fail("the TMA issued by thread %d at %s completes on shared %u, where no mbarrier lives\n",
             c.issuer, emu_site_text(c.site).c_str(), c.bar);
  }
  EmuMbar& b = emu_mbars[i];
  b.tx -= c.bytes;
  emu_mbar_check_tx(b, "a TMA's complete_tx", c.site);
  b.landing.push_back(std::move(c));
  if (b.arrived == b.count && b.tx == 0) emu_mbar_complete(i);
}
inline bool emu_tma_progress(bool all) {
  if (emu_tmas.empty()) return false;
  if (!all && emu_sched.rng() % 4 != 0) return false;
  do {
    EmuTma c = std::move(emu_tmas.front());
    emu_tmas.pop_front();
    emu_tma_complete_tx(std::move(c));
  } while (all && !emu_tmas.empty());
  return true;
}

// The mbarrier at `bar` for an operation of thread t: it must be live, and its init ordered
// before (fence_mbarrier_init and a barrier, as the real device.cuh's comment asks).
inline int emu_mbar_use(uint32_t bar, const char* what, const EmuLoc& loc) {
  const int t = emu_sched.current, i = emu_mbar_find(bar);
  if (i < 0 || !emu_mbars[i].live) {
    emu_fail("thread %d: %s at %s:%u on shared %u, where no mbarrier_init has made an mbarrier\n",
             t, what, loc.file_name(), loc.line(), bar);
  }
  const EmuAccess& init = emu_mbars[i].init;
  if (!emu_ordered(init, t)) {
    emu_fail(
        "thread %d: %s at %s:%u on the mbarrier at shared %u, whose mbarrier_init by thread "
        "%d at %s is not ordered before it (fence_mbarrier_init, then a barrier)\n",
        t, what, loc.file_name(), loc.line(), bar, init.tid, emu_site_text(init.site).c_str());
  }
  return i;
}
// fence.mbarrier_init (or fence.proxy.async): this thread's initialized mbarriers are visible to
// the async proxy (the TMA unit's complete_tx) from here on.
EMU_NOSAN inline void emu_mbar_fence(const EmuLoc& loc) {
  const int t = emu_sched.current;
  for (EmuMbar& b : emu_mbars) {
    if (b.live && b.init.tid == t) b.fence = emu_now(emu_site(loc));
  }
}

// Whether a 16-byte chunk of the wgmma operand `desc` (128-byte swizzle; `rows` rows of a K-major
// operand, or N / M indices of an MN-major one, for k 0..15) lies in [lo, hi).
EMU_NOSAN inline bool emu_operand_overlaps(uint64_t desc, bool mn_major, int rows, uint32_t lo,
                                           uint32_t hi) {
  const uint32_t start = static_cast<uint32_t>(desc & 0x3FFF) << 4;
  const uint32_t lbo = static_cast<uint32_t>((desc >> 16) & 0x3FFF) << 4;
  const uint32_t sbo = static_cast<uint32_t>((desc >> 32) & 0x3FFF) << 4;
  auto hits = [&](uint32_t logical) {
    const uint32_t chunk = (logical ^ (((logical >> 7) & 7) << 4)) & ~15u;
    return chunk < hi && chunk + 16 > lo;
  };
  for (int r = 0; r < rows; r += mn_major ? 8 : 1) {
    for (int k = 0; k < 16; k += mn_major ? 1 : 8) {
      const uint32_t logical =
          mn_major ? start + (r % 64) * 2 + (r / 64) * lbo + (k % 8) * 128 + (k / 8) * sbo
                   : start + (r / 8) * sbo + (r % 8) * 128 + k * 2;
      if (hits(logical)) return true;
    }
  }
  return false;
}
// A TMA into [lo, hi) while a wgmma that reads some of those bytes has not retired (it reads them
// at its wgmma_wait here, any time before it on the GPU): reported, whichever thread issued it.
EMU_NOSAN inline void emu_tma_vs_products(uint32_t lo, uint32_t hi, const EmuSite& site) {
  const int t = emu_sched.current;
  std::vector<const EmuProduct*> seen; // a warpgroup's threads issue the same operands
  for (int u = 0; u < emu_vc_n; ++u) {
    for (const EmuProduct& p : emu_products[u]) {
      auto same = [&](const EmuProduct* q) {
        return q->a == p.a && q->b == p.b && q->n == p.n && q->a_in_registers == p.a_in_registers &&
               q->mn_major_a == p.mn_major_a && q->mn_major_b == p.mn_major_b;
      };
      if (std::any_of(seen.begin(), seen.end(), same)) continue;
      seen.push_back(&p);
      if ((!p.a_in_registers && emu_operand_overlaps(p.a, p.mn_major_a, 64, lo, hi)) ||
          emu_operand_overlaps(p.b, p.mn_major_b, 2 * p.n, lo, hi)) {
        emu_fail(
            "thread %d (warp %d lane %d): TMA at %s into shared [%u, %u) overwrites bytes "
            "that thread %d's wgmma issued at %s reads and has not retired (its wgmma_wait "
            "comes later)\n",
            t, t / 32, t % 32, emu_site_text(site).c_str(), lo, hi, u,
            emu_site_text(p.site).c_str());
      }
    }
  }
}

// The fields of an emulated CUtensorMap at `map` (a kernel's __grid_constant__ parameter).
inline EmuTensorMap emu_tensor_map(const void* map, const EmuLoc& loc) {
  EmuTensorMap m{};
  if (map == nullptr || reinterpret_cast<uintptr_t>(map) % 64 != 0) {
    emu_fail("thread %d: TMA at %s:%u with a tensor map at %p (not 64-byte aligned)\n", emu_tid,
             loc.file_name(), loc.line(), map);
  }
  std::memcpy(&m, map, sizeof m);
  if (m.magic != kEmuTensorMapMagic) {
    emu_fail(
        "thread %d: TMA at %s:%u with a tensor map that cuTensorMapEncodeTiled (from "
        "cudaGetDriverEntryPointByVersion) did not encode\n",
        emu_tid, loc.file_name(), loc.line());
  }
  return m;
}

// atomic_add_acq_rel's work (below): the add, then the acquire and the release.
EMU_NOSAN inline uint32_t emu_atomic_add_acq_rel(uint32_t addr, uint32_t value, const EmuLoc& loc) {
  const int t = emu_sched.current;
  if (addr % 4 != 0 || addr + 4 > emu_dynamic_smem) {
    emu_fail(
        "thread %d: atomic_add_acq_rel at %s:%u on shared %u: %s (%zu bytes of dynamic "
        "shared memory)\n",
        t, loc.file_name(), loc.line(), addr,
        addr % 4 != 0 ? "not 4-byte aligned" : "past the dynamic shared memory", emu_dynamic_smem);
  }
  for (uint32_t j = addr; j < addr + 4; ++j) {
    const EmuShadow& s = emu_shadow[j];
    if (s.pending == -1) continue;
    emu_fail("thread %d: atomic_add_acq_rel at %s:%u on shared byte %u: %s\n", t, loc.file_name(),
             loc.line(), j,
             s.pending == kEmuMbarByte ? emu_mbar_text(j).c_str()
             : s.tma                   ? emu_tma_text(j).c_str()
                                       : "a cp.async into it is in flight");
  }
  uint32_t old;
  std::memcpy(&old, kiln::backends::cuda::smem + addr, 4);
  const uint32_t sum = old + value;
  std::memcpy(kiln::backends::cuda::smem + addr, &sum, 4);
  std::vector<uint32_t>& word = emu_atomic_vc[addr];
  word.resize(static_cast<size_t>(emu_vc_w), 0u);
  uint32_t* mine = emu_vc_row(emu_vc, t);
  emu_vc_join(mine, word.data());
  emu_vc_join(word.data(), mine);
  ++mine[t]; // later accesses are not covered by this release
  emu_vc_dirty = true;
  return old;
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
// fence.proxy.async: generic-proxy writes before it reach the async proxy (wgmma reads, and an
// mbarrier's init for the TMA unit's complete_tx).
__device__ __forceinline__ void fence_proxy_async(EmuLoc loc = EmuLoc::current()) {
  ++emu_proxy_fences[emu_sched.current];
  emu_mbar_fence(loc);
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
    std::fill(phase, phase + emu_vc_w, 0u);
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

// ---- mbarriers, TMA, acq_rel atomics (the model: "mbarriers, TMA copies" above) ----------------
/// mbarrier.init.shared::cta.b64: a new mbarrier at `bar` of `count` arrivals per phase (1..2^20 -
/// 1), phase 0. A write of its 8 bytes (checked like one); from here on only mbarrier operations
/// may touch them. Re-initializing a live mbarrier is allowed only between phases.
__device__ __forceinline__ void mbarrier_init(uint32_t bar, uint32_t count,
                                              EmuLoc loc = EmuLoc::current()) {
  const int t = emu_sched.current;
  const char* why = nullptr;
  if (bar % 8 != 0) {
    why = "an address that is not 8-byte aligned";
  } else if (bar + 8 > emu_dynamic_smem) {
    why = "an address outside the launch's dynamic shared memory";
  } else if (count < 1 || count > (1u << 20) - 1) {
    why = "a count outside 1..2^20 - 1";
  }
  if (why != nullptr) {
    emu_fail(
        "thread %d: mbarrier_init(%u, %u) at %s:%u: %s (%zu bytes of dynamic shared "
        "memory)\n",
        t, bar, count, loc.file_name(), loc.line(), why, emu_dynamic_smem);
  }
  int i = emu_mbar_find(bar);
  if (i >= 0 && emu_mbars[i].live) {
    const EmuMbar& b = emu_mbars[i];
    bool flying = !b.landing.empty();
    for (const EmuTma& c : emu_tmas) flying |= c.bar == bar;
    if (b.arrived != 0 || b.tx != 0 || !b.waiters.empty() || flying) {
      emu_fail(
          "thread %d: mbarrier_init at %s:%u re-initializes the mbarrier at shared %u in "
          "the middle of its %s%s\n",
          t, loc.file_name(), loc.line(), bar, emu_mbar_state(b).c_str(),
          flying ? " (TMA copies count toward it)" : "");
    }
    for (uint32_t j = bar; j < bar + 8; ++j) emu_shadow[j].pending = -1;
    emu_mbars[i].live = false;
  }
  const EmuSite site = emu_site(loc);
  emu_access(bar, 8, EmuKind::kWrite, site);
  for (uint32_t j = bar; j < bar + 8; ++j) emu_shadow[j].pending = kEmuMbarByte;
  if (i < 0) i = emu_mbar_add(bar);
  EmuMbar& b = emu_mbars[i];
  b.live = true;
  b.count = count;
  b.arrived = 0;
  b.tx = 0;
  b.phase = 0;
  b.init = emu_now(site);
  b.fence = EmuAccess{};
  b.first_tid = -1;
}
/// fence.mbarrier_init.release.cluster: this thread's mbarrier inits are visible from here on
/// (to the async proxy too: a TMA may complete on them).
__device__ __forceinline__ void fence_mbarrier_init(EmuLoc loc = EmuLoc::current()) {
  emu_mbar_fence(loc);
}
/// mbarrier.arrive.expect_tx.release.cta: tx-count += bytes, then one arrival (a release).
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes,
                                                          EmuLoc loc = EmuLoc::current()) {
  const char* what = "mbarrier_arrive_expect_tx";
  const int t = emu_sched.current, i = emu_mbar_use(bar, what, loc);
  EmuMbar& b = emu_mbars[i];
  b.tx += bytes;
  emu_mbar_check_tx(b, what, emu_site(loc));
  if (b.arrived == b.count) {
    emu_fail(
        "thread %d: %s at %s:%u: one arrival more than its count: the mbarrier at shared %u is "
        "at %s (all arrived, waiting for bytes)\n",
        t, what, loc.file_name(), loc.line(), bar, emu_mbar_state(b).c_str());
  }
  if (b.arrived++ == 0) {
    b.first_tid = t;
    b.first_site = emu_site(loc);
  }
  uint32_t* mine = emu_vc_row(emu_vc, t);
  emu_vc_join(b.acc.data(), mine);
  ++mine[t]; // later accesses are not covered by this arrival
  emu_vc_dirty = true;
  if (b.arrived == b.count && b.tx == 0) emu_mbar_complete(i);
}
/// mbarrier.try_wait.parity loop: returns once the phase of parity `parity` has completed (at once
/// when the current phase's parity differs), having acquired what that completion publishes.
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity,
                                              EmuLoc loc = EmuLoc::current()) {
  const int t = emu_sched.current, i = emu_mbar_use(bar, "mbarrier_wait", loc);
  if (parity > 1) {
    emu_fail("thread %d: mbarrier_wait(%u, %u) at %s:%u: a phase parity other than 0 or 1\n", t,
             bar, parity, loc.file_name(), loc.line());
  }
  EmuMbar& b = emu_mbars[i];
  if ((b.phase & 1) != parity) {
    emu_vc_join(emu_vc_row(emu_vc, t), b.done.data());
    emu_vc_dirty = true;
    return;
  }
  b.waiters.push_back(t); // released (and joined) by the completion: emu_mbar_complete
  EmuWhere& where = emu_sched.fibers[t].where;
  where = {"mbarrier_wait", loc.file_name(), loc.line()};
  emu_yield();
  where.what = nullptr;
}
/// cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes: the box at
/// (x, y) of the rank-2 map (element x + i of row y + r at address + (y + r) * stride + (x + i) *
/// element size; zero outside [0, dim0) x [0, dim1)) is read now and lands at dst, swizzled as
/// the map says: no swizzle, rows packed; 128-byte swizzle (rows of 128 bytes), 16-byte chunk c
/// of the row at shared address A at chunk c ^ ((A >> 7) & 7), the pattern the wgmma descriptors
/// read (dst 1024-byte aligned). The full box's bytes count toward mbarrier `bar`'s tx-count.
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const void* map, int x, int y,
                                            uint32_t bar, EmuLoc loc = EmuLoc::current()) {
  const int t = emu_sched.current;
  const EmuTensorMap m = emu_tensor_map(map, loc);
  if (m.rank != 2) {
    emu_fail("thread %d: tma_load_2d at %s:%u with a tensor map of rank %u\n", t, loc.file_name(),
             loc.line(), m.rank);
  }
  const int i = emu_mbar_use(bar, "tma_load_2d", loc);
  const EmuAccess& fence = emu_mbars[i].fence;
  if (fence.tid < 0 || !emu_ordered(fence, t)) {
    emu_fail(
        "thread %d: tma_load_2d at %s:%u completes on the mbarrier at shared %u, but no "
        "fence_mbarrier_init (or fence_proxy_async) of its initializing thread after the "
        "init is ordered before: the async proxy may not see the init\n",
        t, loc.file_name(), loc.line(), bar);
  }
  const uint32_t row = uint32_t{m.box[0]} * m.elem_bytes, bytes = row * m.box[1];
  const uint32_t align = m.swizzle == CU_TENSOR_MAP_SWIZZLE_128B ? 1024 : 128;
  if (dst % align != 0) {
    emu_fail("thread %d: tma_load_2d at %s:%u into shared %u: not %u-byte aligned%s\n", t,
             loc.file_name(), loc.line(), dst, align, align == 1024 ? " (128-byte swizzle)" : "");
  }
  if (dst + bytes > emu_dynamic_smem) {
    emu_fail(
        "thread %d: tma_load_2d at %s:%u into shared [%u, %u): past the launch's %zu bytes "
        "of dynamic shared memory\n",
        t, loc.file_name(), loc.line(), dst, dst + bytes, emu_dynamic_smem);
  }
  EmuTma c;
  c.dst = dst;
  c.bytes = bytes;
  c.bar = bar;
  c.issuer = t;
  c.site = emu_site(loc);
  c.data.assign(bytes, 0);
  const auto* base = reinterpret_cast<const unsigned char*>(m.address);
  std::vector<unsigned char> line(row);
  for (uint32_t r = 0; r < m.box[1]; ++r) {
    const int64_t gy = int64_t{y} + r;
    for (uint32_t e = 0; e < m.box[0]; ++e) {
      const int64_t gx = int64_t{x} + e;
      unsigned char* to = line.data() + e * m.elem_bytes;
      if (gx < 0 || gy < 0 || static_cast<uint64_t>(gx) >= m.dim[0] ||
          static_cast<uint64_t>(gy) >= m.dim[1]) {
        std::memset(to, 0, m.elem_bytes);
      } else {
        std::memcpy(to,
                    base + static_cast<uint64_t>(gy) * m.stride[0] +
                        static_cast<uint64_t>(gx) * m.elem_bytes,
                    m.elem_bytes);
      }
    }
    for (uint32_t chunk = 0; chunk < row / 16; ++chunk) {
      uint32_t at = r * row + chunk * 16;
      if (m.swizzle == CU_TENSOR_MAP_SWIZZLE_128B) {
        at = r * 128 + ((chunk ^ (((dst + r * 128) >> 7) & 7)) * 16);
      }
      std::memcpy(c.data.data() + at, line.data() + chunk * 16, 16);
    }
  }
  emu_tma_vs_products(dst, dst + bytes, c.site);
  emu_access(dst, bytes, EmuKind::kTmaIssue, c.site);
  emu_tmas.push_back(std::move(c));
}
/// atom.acq_rel.cta.shared::cta.add.u32: adds `value` to the shared word at `addr`, returns the
/// old value. Not checked against plain accesses (as every atomic), but an acquire-release: the
/// word keeps a vector clock row; the thread joins it (acquire), then the word joins the thread's
/// (release), so a chain of these orders the threads as release sequences do.
/// (The work is emu_atomic_add_acq_rel's: an always-inline function is instrumented as part of
/// its caller, whatever its own attributes.)
__device__ __forceinline__ uint32_t atomic_add_acq_rel(uint32_t addr, uint32_t value,
                                                       EmuLoc loc = EmuLoc::current()) {
  return emu_atomic_add_acq_rel(addr, value, loc);
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
  emu_dynamic_smem = cfg.smem;
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
        emu_mbars.clear();
        emu_tmas.clear();
        emu_atomic_vc.clear();
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
        // A TMA copy still in flight, or landed at a completion no thread observed (on the GPU
        // it may still be in flight when the block exits), and an mbarrier mid-phase (arrivals
        // or announced bytes its protocol does not balance).
        for (size_t i = 0; i < emu_mbars.size(); ++i) {
          const EmuMbar& b = emu_mbars[i];
          uint32_t known = 0; // the latest of its completions that some thread observed
          for (int t = 0; t < threads; ++t) {
            known = std::max(known, emu_vc_row(emu_vc, t)[emu_vc_n + static_cast<int>(i)]);
          }
          const EmuTma* c = !emu_tmas.empty()    ? &emu_tmas.front()
                            : !b.landing.empty() ? &b.landing.front()
                            : b.landed > known   ? &b.last_copy
                                                 : nullptr;
          if (c != nullptr) {
            fprintf(stderr,
                    "cuda_emu: block (%u, %u, %u) ended with thread %d's TMA at %s into shared "
                    "[%u, %u) in flight (as far as any thread knows): no thread waited for the "
                    "completion of the phase of the mbarrier at shared %u that it counts toward\n",
                    bx, by, bz, c->issuer, emu_site_text(c->site).c_str(), c->dst,
                    c->dst + c->bytes, c->bar);
            abort();
          }
          if (!b.live || (b.arrived == 0 && b.tx == 0)) continue;
          fprintf(stderr,
                  "cuda_emu: block (%u, %u, %u) ended with the mbarrier at shared %u mid-phase: "
                  "%s (first arrival: thread %d at %s); its arrivals or announced bytes do not "
                  "balance\n",
                  bx, by, bz, b.addr, emu_mbar_state(b).c_str(), b.first_tid,
                  b.first_tid >= 0 ? emu_site_text(b.first_site).c_str() : "none");
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
