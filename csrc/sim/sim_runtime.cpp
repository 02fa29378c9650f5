// sim_runtime.cpp: fastres's CPU executor of CUDA kernels: one launch, block by block, each
// block's threads as cooperative fibers (fastres/kernels/sim.py builds it into every module).
//
// Exports (C):
//   fastres_sim_launch(kernel, grid, block, args, nargs, types, seed, err, errlen)   one launch
// and, to sim_ubsan.cpp, fastres_sim_abort_launch(what): ends the running launch with `what`.
//
// A launch runs its blocks one at a time, in an order drawn from `seed`. A block's threads are
// fibers (x86-64: the 15-instruction switch below; elsewhere ucontext), each with its own 64 KiB
// stack above a guard page. A fiber runs until it reaches a __syncthreads, a warp shuffle or the
// end of the kernel. Scheduling is by warp: a warp's pass runs each of its ready lanes, in an
// order drawn anew for every pass, to its next stop; then the next warp is picked. At the start
// of a block and at every barrier the warps' order is drawn again, and whether it is followed
// (1) serially: the first warp in the order that can run, runs (a warp runs as far as it can,
// through all its shuffles, before the next one starts: a missing barrier between warps then
// reads what another warp has not written yet, or has already overwritten), or (2) round robin:
// one pass of each warp in turn. A warp's shuffle completes when its 32 lanes have arrived; so
// warps progress independently, as on the GPU, and a read of __shared__ memory that no barrier
// orders after its write sees the 0xFF filling or another warp's value, not the right one.
//
// Aborted with a message naming the file, line, block and threads (the launch returns 1 and
// sim.py raises SimError), where a GPU would hang, fault or give undefined results:
//   - a barrier not reached by every live thread of the block: the live threads wait at
//     different __syncthreads (file and line), or at different counts of the same one, or some
//     at a barrier and the others at a shuffle; threads that have exited do not count
//     (barrier.sync waits for the non-exited threads of the block: PTX ISA, "barrier")
//   - a shuffle whose mask is not 0xffffffff or whose width is not 32, a full-mask shuffle in a
//     warp with a lane that has exited or does not exist (a partial last warp), and lanes of one
//     warp at different shuffles
//   - a grid or block the GPU refuses: 0 blocks, more than 2^31 - 1 blocks, 0 or more than 1024
//     threads; a kernel whose parameters do not match the arguments' count and types
//
// Floating point: the fibers run with MXCSR 0x1F80 whatever the caller set (round to nearest,
// subnormals kept: the -ftz=false of fastres's GPU builds), and sim.py compiles the kernels with
// -ffp-contract=off: every multiply and add rounds on its own (a GPU contracts some into FMAs).
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdlib>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "sim/sim_abi.h"

// The fibers switch with the assembly below on x86-64, with ucontext elsewhere (or where
// FASTRES_SIM_UCONTEXT is defined: slower, a system call per switch, the same schedule).
#if defined(__x86_64__) && !defined(FASTRES_SIM_UCONTEXT)
#define FASTRES_SIM_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

#define FASTRES_SIM_EXPORT extern "C" __attribute__((visibility("default")))

fastres_sim_position fastres_sim_now;

// The __shared__ variables of the module (cuda_sim.h puts them in this section); weak: a module
// without any has no section.
extern "C" char __start_fastres_sim_shared[] __attribute__((weak));
extern "C" char __stop_fastres_sim_shared[] __attribute__((weak));

namespace {

enum State { kReady, kBarrier, kShuffle, kExited };

struct Fiber {
  void* sp = nullptr;
#if !defined(FASTRES_SIM_ASM_SWITCH)
  ucontext_t context;
#endif
  unsigned tid = 0;
  State state = kReady;
  const char* file = "";  // where it waits
  int line = 0;
  unsigned long long barriers = 0;  // __syncthreads calls so far (this one included)
  unsigned long long shuffles = 0;  // shuffles so far (this one included)
  int op = 0, arg = 0;
  unsigned long long value = 0, result = 0;
};

struct Warp {
  unsigned lanes[32];    // the lanes of this pass, in the order they run
  unsigned count = 0;    // how many
  unsigned next = 0;     // the next of them to run
  unsigned arrived = 0;  // lanes at a shuffle
  unsigned exited = 0;   // lanes that have exited
  bool ready = false;    // has lanes to run: a pass is drawn when the warp is picked
};

constexpr size_t kStackBytes = 64 * 1024;

struct Sim {
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  std::vector<unsigned> ring;  // the warps' order, drawn at the block's start and every barrier
  unsigned ring_at = 0;        // the running warp's place in it
  bool serial = false;         // how the order is followed (see the top of the file)
  char* stacks = nullptr;
  size_t stack_count = 0;
  size_t page = 4096;
  void* main_sp = nullptr;
#if !defined(FASTRES_SIM_ASM_SWITCH)
  ucontext_t main_context;
#endif
  Fiber* current = nullptr;
  const fastres_sim_kernel* kernel = nullptr;
  const unsigned long long* args = nullptr;
  unsigned block_dim = 0;
  unsigned long long block = 0;
  unsigned live = 0, at_barrier = 0;
  unsigned long long rng = 0;
  std::string error;
  bool busy = false;
};

Sim g;

unsigned long long next_random() {  // splitmix64
  unsigned long long z = (g.rng += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::string format(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

}  // namespace

// ----------------------------------------------------------------------------- switching

#if defined(FASTRES_SIM_ASM_SWITCH)
// fastres_sim_switch(save, load): saves the callee-saved registers on this stack, stores the
// stack pointer at *save, loads `load` and restores them from there. MXCSR and the x87 control
// word are not switched: the launch sets them once, and every fiber runs with them.
extern "C" void fastres_sim_switch(void** save, void* load);
extern "C" void fastres_sim_fiber_entry();
asm(R"(
  .text
  .p2align 4
  .hidden fastres_sim_switch
  .type fastres_sim_switch, @function
fastres_sim_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size fastres_sim_switch, .-fastres_sim_switch

  .p2align 4
  .hidden fastres_sim_fiber_entry
  .type fastres_sim_fiber_entry, @function
fastres_sim_fiber_entry:
  movq %r12, %rdi
  call fastres_sim_fiber_main@PLT
  ud2
  .size fastres_sim_fiber_entry, .-fastres_sim_fiber_entry
)");
#endif

extern "C" __attribute__((visibility("hidden"), noreturn)) void fastres_sim_fiber_main(Fiber* f);

namespace {

// From `from` (nullptr: the launcher) to fiber `to`.
void switch_to(Fiber* from, Fiber* to) {
  g.current = to;
  fastres_sim_now.thread = fastres_sim_dim3{to->tid, 0, 0};
#if defined(FASTRES_SIM_ASM_SWITCH)
  fastres_sim_switch(from ? &from->sp : &g.main_sp, to->sp);
#else
  swapcontext(from ? &from->context : &g.main_context, &to->context);
#endif
}

[[noreturn]] void to_main(Fiber* self) {
#if defined(FASTRES_SIM_ASM_SWITCH)
  fastres_sim_switch(&self->sp, g.main_sp);
#else
  swapcontext(&self->context, &g.main_context);
#endif
  __builtin_unreachable();
}

#if !defined(FASTRES_SIM_ASM_SWITCH)
void fiber_trampoline(unsigned hi, unsigned lo) {
  fastres_sim_fiber_main(reinterpret_cast<Fiber*>((static_cast<uintptr_t>(hi) << 32) | lo));
}
#endif

// A fresh context for `f` at the top of its stack: switching to it starts the kernel.
void start_fiber(Fiber* f, size_t index) {
  char* base = g.stacks + index * (kStackBytes + g.page) + g.page;  // above its guard page
  // Stacks 68 KiB apart would put every fiber's top in the same cache sets: each starts lower by
  // a different multiple of 64 bytes (up to 32 KiB), so that the hot tops spread over the caches.
  char* top = base + kStackBytes - ((index * 17) % 512) * 64;
#if defined(FASTRES_SIM_ASM_SWITCH)
  auto* sp = reinterpret_cast<uint64_t*>(top);  // 16-byte aligned
  sp -= 7;  // what fastres_sim_switch pops: after its `ret` the stack is aligned for the `call`
  sp[0] = sp[1] = sp[2] = 0;              // r15, r14, r13
  sp[3] = reinterpret_cast<uint64_t>(f);  // r12: fastres_sim_fiber_entry's argument
  sp[4] = sp[5] = 0;                      // rbx, rbp
  sp[6] = reinterpret_cast<uint64_t>(&fastres_sim_fiber_entry);
  f->sp = sp;
#else
  getcontext(&f->context);
  f->context.uc_stack.ss_sp = base;
  f->context.uc_stack.ss_size = static_cast<size_t>(top - base);
  f->context.uc_link = nullptr;
  const uintptr_t p = reinterpret_cast<uintptr_t>(f);
  makecontext(&f->context, reinterpret_cast<void (*)()>(&fiber_trampoline), 2,
              static_cast<unsigned>(p >> 32), static_cast<unsigned>(p));
#endif
}

bool ensure_stacks(size_t n) {
  if (g.stack_count >= n) return true;
  if (g.stacks != nullptr) munmap(g.stacks, g.stack_count * (kStackBytes + g.page));
  g.stacks = nullptr;
  g.stack_count = 0;
  g.page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t bytes = n * (kStackBytes + g.page);
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  g.stacks = static_cast<char*>(p);
  for (size_t i = 0; i < n; ++i) mprotect(g.stacks + i * (kStackBytes + g.page), g.page, PROT_NONE);
  g.stack_count = n;
  g.fibers.assign(n, Fiber{});
  return true;
}

// ----------------------------------------------------------------------------- scheduling

// A new order of the warps, and whether it is followed serially or round robin.
void draw_order() {
  g.serial = next_random() & 1u;
  const unsigned n = static_cast<unsigned>(g.ring.size());
  for (unsigned i = 0; i < n; ++i) g.ring[i] = i;
  for (unsigned i = n - 1; i > 0; --i) std::swap(g.ring[i], g.ring[next_random() % (i + 1)]);
  g.ring_at = n - 1;  // round robin starts at ring[0]
}

// The next warp that can run, with a pass of its ready lanes in a new order; its first lane.
Fiber* pick() {
  const unsigned n = static_cast<unsigned>(g.ring.size());
  const unsigned from = g.serial ? 0 : g.ring_at + 1;
  for (unsigned k = 0; k < n; ++k) {
    const unsigned i = (from + k) % n;
    const unsigned w = g.ring[i];
    Warp& warp = g.warps[w];
    if (!warp.ready) continue;
    warp.ready = false;
    warp.count = 0;
    warp.next = 1;
    // the lanes in the order l -> ((l ^ x) * odd + add) mod 32, a bijection drawn from 2^13
    const unsigned long long r = next_random();
    const unsigned x = r & 31u, odd = ((r >> 5) & 31u) | 1u, add = (r >> 10) & 31u;
    for (unsigned k = 0; k < 32; ++k) {
      const unsigned t = 32 * w + ((((k ^ x) * odd) + add) & 31u);
      if (t < g.block_dim && g.fibers[t].state == kReady) warp.lanes[warp.count++] = t;
    }
    g.ring_at = i;
    return &g.fibers[warp.lanes[0]];
  }
  return nullptr;
}

const char* where(const Fiber& f, char* buf, size_t len) {
  switch (f.state) {
    case kReady: snprintf(buf, len, "running"); break;
    case kExited: snprintf(buf, len, "exited"); break;
    case kBarrier: snprintf(buf, len, "at __syncthreads %s:%d (its barrier #%llu)", f.file, f.line, f.barriers); break;
    case kShuffle: snprintf(buf, len, "at a shuffle %s:%d (its shuffle #%llu)", f.file, f.line, f.shuffles); break;
  }
  return buf;
}

// "threads 0-31 at ..., threads 32-255 at ...": consecutive threads in the same place, grouped.
std::string who_is_where(unsigned first, unsigned last) {
  std::string out;
  unsigned start = first;
  char a[256], b[256];
  for (unsigned t = first; t <= last; ++t) {
    if (t < last && strcmp(where(g.fibers[t], a, sizeof a), where(g.fibers[t + 1], b, sizeof b)) == 0) continue;
    if (!out.empty()) out += "; ";
    out += start == t ? format("thread %u ", t) : format("threads %u-%u ", start, t);
    out += where(g.fibers[t], a, sizeof a);
    start = t + 1;
  }
  return out;
}

[[noreturn]] void fail(Fiber* self, const std::string& what) {
  g.error = what + format(" [thread %u of block %llu; %u blocks of %u threads]", self->tid, g.block,
                          fastres_sim_now.grid_dim.x, g.block_dim);
  to_main(self);
}

// Every live thread is at a barrier: the same one, the same time, or the launch fails.
void release_barrier(Fiber* self) {
  const Fiber* first = nullptr;
  for (unsigned t = 0; t < g.block_dim; ++t) {
    const Fiber& f = g.fibers[t];
    if (f.state != kBarrier) continue;
    if (first == nullptr) {
      first = &f;
    } else if (f.line != first->line || f.barriers != first->barriers ||
               (f.file != first->file && strcmp(f.file, first->file) != 0)) {
      fail(self, "__syncthreads not reached by every live thread of the block: " +
                     who_is_where(0, g.block_dim - 1));
    }
  }
  g.at_barrier = 0;
  for (unsigned t = 0; t < g.block_dim; ++t) {
    if (g.fibers[t].state != kBarrier) continue;
    g.fibers[t].state = kReady;
    g.warps[t / 32].ready = true;
  }
  draw_order();
}

// The 32 lanes of warp w are at a shuffle: the same one, or the launch fails; then each gets
// its value and is ready.
void complete_shuffle(Fiber* self, unsigned w) {
  Fiber* lane = &g.fibers[32 * w];
  for (unsigned l = 1; l < 32; ++l) {
    if (lane[l].line != lane[0].line || lane[l].shuffles != lane[0].shuffles || lane[l].op != lane[0].op ||
        (lane[l].file != lane[0].file && strcmp(lane[l].file, lane[0].file) != 0)) {
      fail(self, format("the lanes of warp %u are at different shuffles: ", w) + who_is_where(32 * w, 32 * w + 31));
    }
  }
  for (unsigned l = 0; l < 32; ++l) {
    const int arg = lane[l].arg;
    unsigned src = l;
    switch (lane[l].op) {
      case FASTRES_SIM_SHFL_IDX: src = static_cast<unsigned>(arg) & 31u; break;
      case FASTRES_SIM_SHFL_UP: src = arg >= 0 && l >= static_cast<unsigned>(arg) ? l - arg : l; break;
      case FASTRES_SIM_SHFL_DOWN: src = arg >= 0 && l + arg < 32 ? l + arg : l; break;
      default: src = (l ^ static_cast<unsigned>(arg)) & 31u; break;
    }
    lane[l].result = lane[src].value;
  }
  for (unsigned l = 0; l < 32; ++l) lane[l].state = kReady;
  g.warps[w].arrived = 0;
  g.warps[w].ready = true;
}

// `self` has stopped (at a barrier, a shuffle, or for good): the next lane of its warp's pass
// runs, or the first of the next warp's.
void yield(Fiber* self) {
  Warp& warp = g.warps[self->tid / 32];
  Fiber* next = warp.next < warp.count ? &g.fibers[warp.lanes[warp.next++]] : pick();
  if (next == nullptr) {
    if (g.live != 0) {
      fail(self, "no thread can go on (a barrier or shuffle that not every thread reaches): " +
                     who_is_where(0, g.block_dim - 1));
    }
    to_main(self);  // the block is done
  }
  if (next != self) switch_to(self, next);
}

}  // namespace

extern "C" void fastres_sim_fiber_main(Fiber* f) {
  g.kernel->invoke(g.args);
  f->state = kExited;
  --g.live;
  const unsigned w = f->tid / 32;
  ++g.warps[w].exited;
  if (g.warps[w].arrived != 0) {
    fail(f, format("thread %u exited while lanes of its warp wait at a full-mask shuffle: ", f->tid) +
                who_is_where(32 * w, std::min(32 * w + 31, g.block_dim - 1)));
  }
  if (g.live != 0 && g.at_barrier == g.live) release_barrier(f);
  yield(f);
  __builtin_unreachable();
}

extern "C" void fastres_sim_syncthreads(const char* file, int line) {
  Fiber* f = g.current;
  f->state = kBarrier;
  f->file = file;
  f->line = line;
  ++f->barriers;
  if (++g.at_barrier == g.live) release_barrier(f);
  yield(f);
}

extern "C" unsigned long long fastres_sim_shfl(int op, unsigned int mask, unsigned long long bits, int arg,
                                               int width, const char* file, int line) {
  Fiber* f = g.current;
  static const char* const names[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync"};
  const char* name = names[op & 3];
  if (mask != 0xFFFFFFFFu) {
    fail(f, format("%s with the partial mask 0x%08x at %s:%d (thread %u): fastres's kernels shuffle whole "
                   "warps, and the sim runs full-mask shuffles only",
                   name, mask, file, line, f->tid));
  }
  if (width != 32) fail(f, format("%s with width %d at %s:%d: the sim runs width 32 only", name, width, file, line));
  const unsigned w = f->tid / 32;
  if (32 * w + 32 > g.block_dim) {
    fail(f, format("%s with mask 0xffffffff at %s:%d in warp %u, which has only %u threads", name, file, line, w,
                   g.block_dim - 32 * w));
  }
  if (g.warps[w].exited != 0) {
    fail(f, format("%s with mask 0xffffffff at %s:%d, but lanes of warp %u have exited: ", name, file, line, w) +
                who_is_where(32 * w, 32 * w + 31));
  }
  f->state = kShuffle;
  f->file = file;
  f->line = line;
  f->op = op;
  f->arg = arg;
  f->value = bits;
  ++f->shuffles;
  if (++g.warps[w].arrived == 32) complete_shuffle(f, w);
  yield(f);
  return f->result;
}

extern "C" __attribute__((visibility("hidden"))) [[noreturn]] void fastres_sim_abort_launch(const char* what) {
  if (!g.busy) {  // not inside a launch: nothing to return to
    fprintf(stderr, "fastres sim: %s\n", what);
    abort();
  }
  fail(g.current, what);
}

FASTRES_SIM_EXPORT int fastres_sim_launch(const fastres_sim_kernel* kernel, unsigned long long grid,
                                          unsigned long long block, const unsigned long long* args, int nargs,
                                          const int* types, unsigned long long seed, char* err, int errlen) {
  auto failed = [&](const std::string& what) {
    snprintf(err, static_cast<size_t>(errlen), "%s", what.c_str());
    return 1;
  };
  if (g.busy) return failed("a launch is already running in this module (one at a time)");
  if (nargs != kernel->num_params) {
    return failed(format("%s takes %d parameters, the launch passes %d", kernel->name, kernel->num_params, nargs));
  }
  for (int i = 0; i < nargs; ++i) {
    if (types[i] != kernel->param_types[i]) {
      static const char* const names[] = {"a pointer", "int64_t", "int", "float"};
      auto name = [&](int c) { return c >= 0 && c < 4 ? names[c] : "another type"; };
      return failed(format("%s: parameter %d is %s, the launch passes %s", kernel->name, i,
                           name(kernel->param_types[i]), name(types[i])));
    }
  }
  if (grid == 0 || grid > 0x7FFFFFFFull) {
    return failed(format("%s: %llu blocks (a grid's x dimension takes 1 to 2^31 - 1)", kernel->name, grid));
  }
  if (block == 0 || block > 1024) {
    return failed(format("%s: %llu threads per block (1 to 1024)", kernel->name, block));
  }
  if (!ensure_stacks(block)) return failed("cannot map the fibers' stacks");
#if defined(__x86_64__)
  const unsigned caller_csr = _mm_getcsr();
  _mm_setcsr(0x1F80u);  // round to nearest, no FTZ/DAZ, exceptions masked: -ftz=false
#endif
  g.busy = true;
  g.kernel = kernel;
  g.args = args;
  g.block_dim = static_cast<unsigned>(block);
  g.rng = seed;
  g.error.clear();
  g.warps.assign((block + 31) / 32, Warp{});
  g.ring.assign((block + 31) / 32, 0);
  fastres_sim_now.block_dim = fastres_sim_dim3{g.block_dim, 1, 1};
  fastres_sim_now.grid_dim = fastres_sim_dim3{static_cast<unsigned>(grid), 1, 1};
  std::vector<unsigned> order(grid);
  for (unsigned long long b = 0; b < grid; ++b) order[b] = static_cast<unsigned>(b);
  for (unsigned long long b = grid - 1; b > 0; --b) std::swap(order[b], order[next_random() % (b + 1)]);
  const size_t shared = __start_fastres_sim_shared ? __stop_fastres_sim_shared - __start_fastres_sim_shared : 0;
  for (unsigned b : order) {
    g.block = b;
    fastres_sim_now.block = fastres_sim_dim3{b, 0, 0};
    if (shared) memset(__start_fastres_sim_shared, 0xFF, shared);
    for (unsigned t = 0; t < g.block_dim; ++t) {
      Fiber& f = g.fibers[t];
      f.tid = t;
      f.state = kReady;
      f.barriers = f.shuffles = 0;
      start_fiber(&f, t);
    }
    for (Warp& w : g.warps) w = Warp{};
    for (Warp& w : g.warps) w.ready = true;
    g.live = g.block_dim;
    g.at_barrier = 0;
    draw_order();
    switch_to(nullptr, pick());
    if (!g.error.empty()) break;
  }
  g.busy = false;
#if defined(__x86_64__)
  _mm_setcsr(caller_csr);
#endif
  if (!g.error.empty()) return failed(g.error);
  return 0;
}
