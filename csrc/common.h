// common.h: what every fastres kernel file shares, compiled by the host compiler, nvcc and NVRTC.
//
// Defines:
//   FASTRES_HD            inline on host and device (one source of the math, docs/design.md, decision 2)
//   CEIL_DIV(a, b)        ceil(a / b) for non-negative integers, used for every grid
//   DType                 dtype codes passed from fastres/kernels/ops.py (keep the two in step)
//   sq(x)                 x * x, the per-element term of a squared norm
//   int64_t, ...          under NVRTC, which has no C++ standard library: the fixed-width types
//                         the kernels use (fastres/kernels/rtc.py compiles the .cu files at run time)
// Host only (not under NVRTC):
//   check_arg(...)        throws std::invalid_argument (pybind11 -> ValueError)
//   CUDA_CHECK(call)      throws std::runtime_error with file and line (-> RuntimeError);
//                         never aborts the process
//   CUDA_CHECK_LAUNCH(what, stream)   after every launch: the launch error, and with
//                         FASTRES_SYNC_CHECK=1 also a stream sync and the error of the run
//   sync_check(), set_sync_check(on)  that switch (read from the environment once)
#pragma once

#if defined(__CUDACC_RTC__)
// NVRTC compiles device code only and ships no standard headers (NVRTC guide, "Language"):
// these are the LP64 widths the host compiler gives the same names, so one source serves both.
typedef signed char int8_t;
typedef int int32_t;
typedef long long int64_t;
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
typedef unsigned long long uintptr_t;
#else
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#endif

#if defined(__CUDACC__)
#define FASTRES_HD __host__ __device__ __forceinline__
#else
#define FASTRES_HD inline
#endif

#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

namespace fastres {

// dtype codes: fastres/kernels/ops.py has the same table (_DTYPE_CODES).
enum DType : int {
  kFloat32 = 0,
  kFloat16 = 1,
  kBFloat16 = 2,
};

FASTRES_HD float sq(float x) { return x * x; }

#if !defined(__CUDACC_RTC__)
inline void check_arg(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

// FASTRES_SYNC_CHECK=1 (or set_sync_check(true), which fastres.ops calls with the same
// variable): every launcher synchronises its stream after each launch and checks the error,
// so an illegal address or a trap is reported at the kernel that caused it, with file and
// line, instead of at some later call. Slow; for debugging, next to CUDA_LAUNCH_BLOCKING=1 and
// compute-sanitizer. One flag for the whole module (inline: one instance across files).
inline bool& sync_check_flag() {
  static bool on = [] {
    const char* v = std::getenv("FASTRES_SYNC_CHECK");
    return v != nullptr && v[0] != '\0' && !(v[0] == '0' && v[1] == '\0');
  }();
  return on;
}
inline bool sync_check() { return sync_check_flag(); }
inline void set_sync_check(bool on) { sync_check_flag() = on; }
#endif

}  // namespace fastres

#if defined(FASTRES_WITH_CUDA) && !defined(__CUDACC_RTC__)
#include <cuda_runtime.h>

namespace fastres {
[[noreturn]] inline void cuda_fail(cudaError_t err, const char* what, const char* file, int line) {
  throw std::runtime_error(std::string("CUDA error at ") + file + ":" + std::to_string(line) +
                           ": " + what + ": " + cudaGetErrorName(err) + " (" +
                           cudaGetErrorString(err) + ")");
}
}  // namespace fastres

#define CUDA_CHECK(call)                                                   \
  do {                                                                     \
    cudaError_t fastres_err_ = (call);                                     \
    if (fastres_err_ != cudaSuccess)                                       \
      ::fastres::cuda_fail(fastres_err_, #call, __FILE__, __LINE__);       \
  } while (0)

// llm.c's cudaCheck(cudaGetLastError()) after every launch, plus the opt-in sync: `what` names
// the kernel in the message.
#define CUDA_CHECK_LAUNCH(what, stream)                                                   \
  do {                                                                                    \
    cudaError_t fastres_err_ = cudaGetLastError();                                        \
    if (fastres_err_ != cudaSuccess)                                                      \
      ::fastres::cuda_fail(fastres_err_, "launch of " what, __FILE__, __LINE__);          \
    if (::fastres::sync_check()) {                                                        \
      fastres_err_ = cudaStreamSynchronize(stream);                                       \
      if (fastres_err_ == cudaSuccess) fastres_err_ = cudaGetLastError();                 \
      if (fastres_err_ != cudaSuccess)                                                    \
        ::fastres::cuda_fail(fastres_err_, "FASTRES_SYNC_CHECK after " what, __FILE__,    \
                             __LINE__);                                                   \
    }                                                                                     \
  } while (0)
#endif
