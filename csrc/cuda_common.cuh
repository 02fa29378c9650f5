// cuda_common.cuh: what every fastres CUDA kernel file shares (nvcc and NVRTC alike).
//
// Defines:
//   FASTRES_KERNELS_BEGIN / _END   the namespace that holds the __global__ kernels
//   kChunkThreads        block size of every one-block-per-chunk kernel (segments.h chunks)
//   warp_sum(v)          sum over a warp, in every lane (xor butterfly: fixed tree, deterministic)
//   block_sum_all(v)     sum over the block, in every thread (fixed tree, uniform control flow)
//   aligned_to(p, bytes) whether p is aligned to `bytes` (a power of two): the vector-load test
//   head_of(p, n)        fp32 elements before p's next 16-byte boundary, at most n
//   chunk_visit_sq(...)  THE traversal of one chunk and THE order in which its squares are
//                        summed: segment norms, the LARS norm pass and update, and the fused
//                        unpack all go through it, so their sums agree bit for bit
// Host only (nvcc, not NVRTC):
//   DeviceGuard          makes a device current for a launcher's scope, restores the caller's
//
// ops.py already runs launchers under torch.cuda.device(...); DeviceGuard guards other callers.
#pragma once

#include "common.h"
#include "segments.h"

#if !defined(__CUDACC_RTC__)
#include <cuda_runtime.h>
#endif

// Kernels sit in an anonymous namespace under nvcc (a kernel defined in a header that two .cu
// files include must not give two external host stubs), and in fastres::rtc under NVRTC, whose
// output must hold them as visible entries: fastres/kernels/rtc.py finds them by the lowered names of
// name expressions such as "fastres::rtc::fused_update_kernel<true>" (NVRTC guide, "Accessing
// Lowered Names").
#if defined(__CUDACC_RTC__)
#define FASTRES_KERNELS_BEGIN namespace rtc {
#else
#define FASTRES_KERNELS_BEGIN namespace {
#endif
#define FASTRES_KERNELS_END }

namespace fastres {

// 256 threads over a 4096-element chunk: kSegmentChunk / 4 / 256 = 4 float4 loads per thread.
constexpr int kChunkThreads = 256;
static_assert(kSegmentChunk % 4 == 0, "chunks must hold whole float4s");

#if !defined(__CUDACC_RTC__)
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
#endif

__device__ __forceinline__ bool aligned_to(const void* p, unsigned bytes) {
  return (reinterpret_cast<uintptr_t>(p) & (bytes - 1u)) == 0;
}

__device__ __forceinline__ int64_t head_of(const float* p, int64_t n) {
  const int64_t h = static_cast<int64_t>(((16u - (reinterpret_cast<uintptr_t>(p) & 15u)) & 15u) >> 2);
  return h < n ? h : n;
}

// Xor butterfly: lane l and lane l ^ o add the same two values (addition commutes), so after
// the five steps every lane holds the same bits, those of a shfl_down tree's lane 0.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024), the same bits in every
// thread. Every warp reduces the per-warp sums itself rather than warp 0 alone under
// `if (warp == 0)`: no shuffle runs in divergent code, which NVIDIA hardware tolerates when a
// whole warp takes the branch but other toolchains and emulators reject; the bits are the
// same (each warp adds the same values in the same tree). Safe to call repeatedly in one
// kernel: the first barrier keeps a new call from overwriting sums a previous call still reads.
__device__ __forceinline__ float block_sum_all(float v) {
  __shared__ float warp_sums[32];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = (lane < static_cast<int>(blockDim.x >> 5)) ? warp_sums[lane] : 0.0f;
  return warp_sum(v);
}

// One chunk p[0, n) (n <= kSegmentChunk; p 4-byte aligned) by kChunkThreads threads, in
// apex's aligned-vector-plus-scalar-remainder manner, with a scalar head so that a segment
// starting anywhere still takes 16-byte loads:
//   head  thread t < head takes element t           (the at most 3 before p's 16-byte boundary)
//   body  thread t takes the float4s t, t + 256, ...  starting at element k = head + 4 i
//   tail  thread t takes element head + 4 nvec + t  (the at most 3 after the last float4)
// `vec(k)` handles the 4 elements from k (p + k is 16-byte aligned) and returns the float4 to
// square; `one(k)` handles element k and returns the value to square. Returns this thread's
// sum of those squares, added in the order head, x, y, z, w of each float4, tail: the one
// order of every CUDA partial in fastres. Combine the threads with block_sum_all.
template <typename Vec, typename One>
__device__ __forceinline__ float chunk_visit_sq(const float* p, int n, Vec vec, One one) {
  const int t = static_cast<int>(threadIdx.x);
  const int head = static_cast<int>(head_of(p, n));
  const int nvec = (n - head) >> 2;
  float acc = 0.0f;
  if (t < head) acc += sq(one(t));
#pragma unroll 4  // 4 loads in flight per thread (a full chunk is exactly 4 per thread)
  for (int i = t; i < nvec; i += kChunkThreads) {
    const float4 x = vec(head + 4 * i);
    acc += sq(x.x);
    acc += sq(x.y);
    acc += sq(x.z);
    acc += sq(x.w);
  }
  const int tail = head + 4 * nvec + t;
  if (tail < n) acc += sq(one(tail));
  return acc;
}

// The plain sum of squares of a chunk (segment norms, the LARS norm pass).
__device__ __forceinline__ float chunk_sq(const float* __restrict__ p, int n) {
  return chunk_visit_sq(
      p, n, [p](int k) { return *reinterpret_cast<const float4*>(p + k); },
      [p](int k) { return p[k]; });
}

}  // namespace fastres
