// segment_sq_norms_cuda.cu: the CUDA kernels of segment_sq_norms (see segment_sq_norms.h).
//
// Defines:
//   chunk_sq_sums_kernel            stage 1: one block per chunk -> partials[c]
//   segment_partials_sum_kernel     stage 2: one block per segment -> out[s]
//   segment_sq_norms_cuda           host launcher: two launches on the caller's stream
//
// Stage 1 reads its chunk with 16-byte float4 loads from the first 16-byte boundary on, and
// the at most 3 elements before it (head) and after the last full float4 (tail) with scalar
// loads; segments start anywhere, so a chunk's start is only 4-byte aligned in general.
// A 4096-element chunk over 256 threads is 4 float4 loads per thread.
#include <cstdint>

#include "common.h"
#include "cuda_common.cuh"
#include "segment_sq_norms_cuda.cuh"
#include "segment_sq_norms.h"
#include "segments.h"

namespace fastres {
namespace {

static_assert(kSegmentChunk % 4 == 0, "chunks must hold whole float4s");

__global__ void __launch_bounds__(kChunkThreads)
chunk_sq_sums_kernel(const float* __restrict__ flat, const int64_t* __restrict__ table,
                     int64_t S, int64_t C, float* __restrict__ partials) {
  const SegmentChunks t = segment_chunks_view(table, S, C);
  const int64_t c = blockIdx.x;
  const int64_t begin = t.chunk_begin[c];
  const int n = static_cast<int>(t.chunk_end[c] - begin);  // <= kSegmentChunk
  const float* p = flat + begin;

  // elements before the first 16-byte boundary (flat is 4-byte aligned: checked in ops.py)
  const int head = static_cast<int>(head_of(p, n));
  const int nvec = (n - head) >> 2;
  const float4* v = reinterpret_cast<const float4*>(p + head);

  float acc = 0.0f;
  if (static_cast<int>(threadIdx.x) < head) acc += sq(p[threadIdx.x]);
#pragma unroll 4  // 4 loads in flight per thread (a full chunk is exactly 4 per thread)
  for (int i = threadIdx.x; i < nvec; i += kChunkThreads) {
    const float4 x = v[i];
    acc += sq(x.x);
    acc += sq(x.y);
    acc += sq(x.z);
    acc += sq(x.w);
  }
  const int tail = head + 4 * nvec + static_cast<int>(threadIdx.x);
  if (tail < n) acc += sq(p[tail]);  // at most 3 elements after the last float4

  acc = block_sum_all(acc);
  if (threadIdx.x == 0) partials[c] = acc;
}


}  // namespace

void segment_sq_norms_cuda(const float* flat, const int64_t* table, int64_t S, int64_t C,
                           float* partials, float* out, int device, uintptr_t stream) {
  check_arg(S < (int64_t{1} << 31) && C < (int64_t{1} << 31),
            "segment_sq_norms: too many segments or chunks for one grid");
  if (S == 0) return;
  DeviceGuard guard(device);
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  if (C > 0) {
    chunk_sq_sums_kernel<<<static_cast<unsigned>(C), kChunkThreads, 0, st>>>(flat, table, S, C,
                                                                             partials);
    CUDA_CHECK(cudaGetLastError());
  }
  // Stage 2 reads the partials of stage 1: same stream, so ordered after it.
  segment_partials_sum_kernel<<<static_cast<unsigned>(S), kSegmentThreads, 0, st>>>(
      partials, table, S, C, out);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace fastres
