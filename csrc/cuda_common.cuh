// cuda_common.cuh: what every fastres CUDA kernel file shares.
//
// Defines:
//   DeviceGuard          makes a device current for a launcher's scope, restores the caller's
//   warp_sum(v)          sum over a warp by shuffles (fixed tree: deterministic)
//   block_sum_all(v)     sum over the block, valid in every thread (fixed tree: deterministic)
//   aligned_to(p, bytes) whether p is aligned to `bytes` (a power of two): the vector-load test
//   head_of(p, n)        fp32 elements before p's next 16-byte boundary, at most n: the scalar
//                        head before float4 loads (segment norms and the fused unpack take the
//                        same head, so their sums agree bit for bit)
//
// ops.py already runs launchers under torch.cuda.device(...); DeviceGuard guards other callers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common.h"

namespace fastres {

struct DeviceGuard {
  int previous = -1;
  explicit DeviceGuard(int device) {
    CUDA_CHECK(cudaGetDevice(&previous));
    if (previous != device) CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() {
    int current = -1;
    if (cudaGetDevice(&current) == cudaSuccess && current != previous) cudaSetDevice(previous);
  }
};

__device__ __forceinline__ bool aligned_to(const void* p, unsigned bytes) {
  return (reinterpret_cast<uintptr_t>(p) & (bytes - 1u)) == 0;
}

__device__ __forceinline__ int64_t head_of(const float* p, int64_t n) {
  const int64_t h = static_cast<int64_t>(((16u - (reinterpret_cast<uintptr_t>(p) & 15u)) & 15u) >> 2);
  return h < n ? h : n;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block, valid in every thread (broadcast through shared memory). Fixed tree:
// deterministic. Safe to call repeatedly in one kernel (it synchronises before reuse).
__device__ __forceinline__ float block_sum_all(float v) {
  __shared__ float warp_sums[32];
  __shared__ float result;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // earlier calls may still read warp_sums / result
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = (lane < static_cast<int>(blockDim.x >> 5)) ? warp_sums[lane] : 0.0f;
    v = warp_sum(v);
    if (lane == 0) result = v;
  }
  __syncthreads();
  return result;
}

}  // namespace fastres
