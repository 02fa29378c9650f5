// common.h: what every fastres kernel file shares.
//
// Defines:
//   FASTRES_HD            inline on host and device (one source of the math, DESIGN.md #2)
//   CEIL_DIV(a, b)        ceil(a / b) for non-negative integers, used for every grid
//   DType                 dtype codes passed from fastres/ops.py (keep the two in step)
//   check_arg(...)        throws std::invalid_argument (pybind11 -> ValueError)
//   CUDA_CHECK(call)      throws std::runtime_error with file and line (-> RuntimeError);
//                         never aborts the process
//   sq(x)                 x * x, the per-element term of a squared norm
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define FASTRES_HD __host__ __device__ __forceinline__
#else
#define FASTRES_HD inline
#endif

#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

namespace fastres {

// dtype codes: fastres/ops.py has the same table (_DTYPE_CODES).
enum DType : int {
  kFloat32 = 0,
  kFloat16 = 1,
  kBFloat16 = 2,
};

inline void check_arg(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

FASTRES_HD float sq(float x) { return x * x; }

}  // namespace fastres

#if defined(FASTRES_WITH_CUDA)
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
#endif
