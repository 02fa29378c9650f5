// segment_sq_norms.h: per-segment sums of squares over a flat fp32 buffer.
//
// Defines:
//   segment_sq_norms_cpu(...)    OpenMP over chunks, then one pass over the partials
//   segment_sq_norms_cuda(...)   (FASTRES_WITH_CUDA only) the same two stages as two launches
//
// out[s] = sum of flat[i]^2 for i in segment s (see segments.h), computed in two stages with
// no atomics: stage 1 writes partials[c] = sum of squares over chunk c, stage 2 writes
// out[s] = sum of partials[first[s] .. first[s+1]) in chunk order. Both stages accumulate in
// fp32. Each result is a sum of non-negative terms, so its relative error is at most
// about depth * 2^-24, where depth is the longest chain of fp32 additions leading to it:
//   CPU:  4096/32 (one of 32 lanes) + 5 (lanes folded pairwise) + n_chunks   = 133 + L/4096
//   CUDA: 16 + 2 (per thread) + 10 (block) + L/4096/256 + 10 (stage 2)       ~  38 + L/1M
// (L the segment length, n_chunks = ceil(L/4096)), plus one rounding per square: at most
// ~4e-5 on CPU for the largest ResNet-50 tensor (2.36M elements, 577 chunks), and in
// practice ~sqrt(depth) * 2^-24. Results are bit-identical from run to run and, on CPU, whatever the
// thread count; CPU and CUDA agree within the bounds above, not bit for bit.
//
// All buffers are given as addresses: flat (fp32, `dtype` must be kFloat32), the chunk
// table (int64, segments.h), partials (fp32, C) and out (fp32, S), all on the device that
// runs the kernel. The caller allocates them (fastres/kernels/ops.py, with torch).
#pragma once

#include <cstdint>

namespace fastres {

void segment_sq_norms_cpu(const float* flat, const int64_t* table, int64_t S, int64_t C,
                          float* partials, float* out, int num_threads);

#if defined(FASTRES_WITH_CUDA)
void segment_sq_norms_cuda(const float* flat, const int64_t* table, int64_t S, int64_t C,
                           float* partials, float* out, int device, uintptr_t stream);
#endif

}  // namespace fastres
