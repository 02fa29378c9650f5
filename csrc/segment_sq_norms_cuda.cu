// segment_sq_norms_cuda.cu: the CUDA kernels of segment_sq_norms (see segment_sq_norms.h).
//
// Defines:
//   chunk_sq_sums_kernel            stage 1: one block per chunk -> partials[c]
//   segment_partials_sum_kernel     stage 2 (segment_sq_norms_cuda.cuh): one block per segment
//   segment_sq_norms_cuda           host launcher (nvcc only): two launches on the caller's stream
//
// Stage 1 is cuda_common.cuh's chunk_sq: 16-byte float4 loads from the chunk's first 16-byte
// boundary on, scalar loads for the at most 3 elements before it and after the last float4
// (segments start anywhere, so a chunk's start is only 4-byte aligned in general).
//
// One source for nvcc and NVRTC: under NVRTC (__CUDACC_RTC__) only the kernels are compiled,
// and fastres/kernels/rtc.py launches them with the same grids as the launcher below (coupled).
#include "common.h"
#include "cuda_common.cuh"
#include "segment_sq_norms_cuda.cuh"
#include "segments.h"

#if !defined(__CUDACC_RTC__)
#include "segment_sq_norms.h"
#endif

namespace fastres {

FASTRES_KERNELS_BEGIN

__global__ void __launch_bounds__(kChunkThreads)
chunk_sq_sums_kernel(const float* __restrict__ flat, const int64_t* __restrict__ table,
                     int64_t S, int64_t C, float* __restrict__ partials) {
  const SegmentChunks t = segment_chunks_view(table, S, C);
  const int64_t c = blockIdx.x;
  const int64_t begin = t.chunk_begin[c];
  const int n = static_cast<int>(t.chunk_end[c] - begin);  // <= kSegmentChunk
  const float acc = block_sum_all(chunk_sq(flat + begin, n));
  if (threadIdx.x == 0) partials[c] = acc;
}

FASTRES_KERNELS_END

#if !defined(__CUDACC_RTC__)
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
    CUDA_CHECK_LAUNCH("chunk_sq_sums_kernel", st);
  }
  // Stage 2 reads the partials of stage 1: same stream, so ordered after it.
  segment_partials_sum_kernel<<<static_cast<unsigned>(S), kSegmentThreads, 0, st>>>(
      partials, table, S, C, out);
  CUDA_CHECK_LAUNCH("segment_partials_sum_kernel", st);
}
#endif

}  // namespace fastres
