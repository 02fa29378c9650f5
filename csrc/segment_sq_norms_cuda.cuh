// segment_sq_norms_cuda.cuh: the stage-2 kernel of the CUDA segment norms, shared.
//
// Defines:
//   kSegmentThreads               stage-2 block size (one block per segment)
//   segment_partials_sum_kernel   out[s] = sum of partials over segment s's chunks, in chunk order
//
// Shared by segment_sq_norms_cuda.cu and wire_cuda.cu (unpack with norms): both write stage-1
// partials through cuda_common.cuh's chunk_visit_sq, and this one stage 2 sums them, so the
// norms an unpack returns equal segment_sq_norms of its output bit for bit.
#pragma once

#include "common.h"
#include "cuda_common.cuh"
#include "segments.h"

namespace fastres {

constexpr int kSegmentThreads = 256;  // stage 2 block size

FASTRES_KERNELS_BEGIN

__global__ void __launch_bounds__(kSegmentThreads)
segment_partials_sum_kernel(const float* __restrict__ partials, const int64_t* __restrict__ table,
                            int64_t S, int64_t C, float* __restrict__ out) {
  const SegmentChunks t = segment_chunks_view(table, S, C);
  const int64_t s = blockIdx.x;
  const int64_t first = t.seg_first_chunk[s];
  const int64_t last = t.seg_first_chunk[s + 1];
  float acc = 0.0f;
  for (int64_t c = first + threadIdx.x; c < last; c += kSegmentThreads) acc += partials[c];
  acc = block_sum_all(acc);
  if (threadIdx.x == 0) out[s] = acc;  // 0 for a segment without chunks
}

FASTRES_KERNELS_END

}  // namespace fastres
