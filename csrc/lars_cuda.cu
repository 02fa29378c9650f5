// lars_cuda.cu: the CUDA kernels of the fused LARS / momentum-SGD step (see lars.h).
//
// Defines:
//   chunk_norms_kernel    launch 1 (LARS only): one block per chunk -> partials[c] = sum w^2,
//                         partials[C + c] = sum g^2 (one pass over w and g)
//   fused_update_kernel   launch 2: one block per chunk; reduces its segment's partials in a
//                         fixed order (every block of a segment gets the same bits), forms the
//                         StepCoefs of lars.h, updates its chunk
//   fused_step_cuda       host launcher on the caller's stream; no host sync, no allocation
//
// Loads: 16-byte float4 on the aligned path (w, g, m of the chunk all 16-byte aligned, as
// fastres/flat.py lays segments out on 16-element boundaries), then a scalar tail; a chunk
// that is not aligned runs the scalar loop. Redundant stage 2: a block re-reduces the
// partials of its segment (at most 577 floats for ResNet-50's largest tensor), which costs
// far less than a third launch and keeps the step at two launches.
#include <cstdint>

#include "common.h"
#include "cuda_common.cuh"
#include "lars.h"
#include "segments.h"

namespace fastres {
namespace {

constexpr int kThreads = 256;  // kSegmentChunk / 4 / 256 = 4 float4 per thread

// `vec`: take the float4 path. The update kernel takes the same path for the same chunk
// (all of w, g, m 16-byte aligned) and sums w_new^2 in the same order: coupled, keep in step.
__device__ __forceinline__ float chunk_sq(const float* __restrict__ p, int n, bool vec) {
  float acc = 0.0f;
  if (vec) {
    const int nvec = n >> 2;
    const float4* v = reinterpret_cast<const float4*>(p);
#pragma unroll 4
    for (int i = threadIdx.x; i < nvec; i += kThreads) {
      const float4 x = v[i];
      acc += sq(x.x);
      acc += sq(x.y);
      acc += sq(x.z);
      acc += sq(x.w);
    }
    for (int i = 4 * nvec + threadIdx.x; i < n; i += kThreads) acc += sq(p[i]);
  } else {
    for (int i = threadIdx.x; i < n; i += kThreads) acc += sq(p[i]);
  }
  return acc;
}

__global__ void __launch_bounds__(kThreads)
chunk_norms_kernel(const float* __restrict__ w, const float* __restrict__ g,
                   const float* __restrict__ m, int mode,
                   const int64_t* __restrict__ table, int64_t S, int64_t C,
                   const int32_t* __restrict__ seg_flags, const float* __restrict__ found_inf,
                   float* __restrict__ partials) {
  // runs on a found-inf step too: the update kernel then carries the w norms over
  const SegmentChunks t = segment_chunks_view(table, S, C);
  const int64_t c = blockIdx.x;
  if (!(seg_flags[t.chunk_seg[c]] & kSegAdapt)) return;  // never read
  (void)found_inf;
  const int64_t b = t.chunk_begin[c];
  const int n = static_cast<int>(t.chunk_end[c] - b);
  const bool vec = aligned_to(w + b, 16) && aligned_to(g + b, 16) && aligned_to(m + b, 16);
  const bool cached = (mode & kStepWNormCached) != 0;
  const float ws = cached ? 0.0f : block_sum_all(chunk_sq(w + b, n, vec));
  const float gs = block_sum_all(chunk_sq(g + b, n, vec));
  if (threadIdx.x == 0) {
    if (!cached) partials[c] = ws;
    partials[C + c] = gs;
  }
}

template <bool kNesterov>
__global__ void __launch_bounds__(kThreads)
fused_update_kernel(float* __restrict__ w, const float* __restrict__ g, float* __restrict__ m,
                    const int64_t* __restrict__ table, int64_t S, int64_t C,
                    const int32_t* __restrict__ seg_group, const int32_t* __restrict__ seg_flags,
                    const float* __restrict__ hparams, const float* __restrict__ found_inf,
                    int mode, float eps, const float* __restrict__ partials,
                    float* __restrict__ wsq_out) {
  const SegmentChunks t = segment_chunks_view(table, S, C);
  const int64_t c = blockIdx.x;
  const int64_t s = t.chunk_seg[c];
  const int flags = seg_flags[s];
  if (found_inf != nullptr && *found_inf != 0.0f) {  // non-finite gradients: w, m untouched
    if (wsq_out != nullptr && threadIdx.x == 0) {      // w unchanged: its norms carry over
      wsq_out[c] = ((mode & kStepLars) && (flags & kSegAdapt)) ? partials[c] : 0.0f;
    }
    return;
  }
  float wsq = 0.0f, gsq = 0.0f;
  if ((mode & kStepLars) && (flags & kSegAdapt)) {  // uniform across the block
    for (int64_t j = t.seg_first_chunk[s] + threadIdx.x; j < t.seg_first_chunk[s + 1]; j += kThreads) {
      wsq += partials[j];
      gsq += partials[C + j];
    }
    wsq = block_sum_all(wsq);
    gsq = block_sum_all(gsq);
  }
  const StepCoefs k = step_coefs(hparams, seg_group[s], flags, mode, wsq, gsq, eps);

  const int64_t b = t.chunk_begin[c];
  const int n = static_cast<int>(t.chunk_end[c] - b);
  float* pw = w + b;
  const float* pg = g + b;
  float* pm = m + b;
  const bool want_sq = wsq_out != nullptr && (mode & kStepLars) && (flags & kSegAdapt);
  float acc = 0.0f;  // sum of w_new^2, in chunk_sq's order
  int done = 0;
  if (aligned_to(pw, 16) && aligned_to(pg, 16) && aligned_to(pm, 16)) {
    const int nvec = n >> 2;
    float4* vw = reinterpret_cast<float4*>(pw);
    const float4* vg = reinterpret_cast<const float4*>(pg);
    float4* vm = reinterpret_cast<float4*>(pm);
    for (int i = threadIdx.x; i < nvec; i += kThreads) {
      float4 x = vw[i], y = vm[i];
      const float4 d = vg[i];
      momentum_update<kNesterov>(x.x, y.x, d.x, k);
      momentum_update<kNesterov>(x.y, y.y, d.y, k);
      momentum_update<kNesterov>(x.z, y.z, d.z, k);
      momentum_update<kNesterov>(x.w, y.w, d.w, k);
      vw[i] = x;
      vm[i] = y;
      if (want_sq) {
        acc += sq(x.x);
        acc += sq(x.y);
        acc += sq(x.z);
        acc += sq(x.w);
      }
    }
    done = 4 * nvec;
  }
  for (int i = done + threadIdx.x; i < n; i += kThreads) {  // scalar tail (or whole chunk)
    float x = pw[i], y = pm[i];
    momentum_update<kNesterov>(x, y, pg[i], k);
    pw[i] = x;
    pm[i] = y;
    if (want_sq) acc += sq(x);
  }
  if (wsq_out != nullptr) {
    acc = want_sq ? block_sum_all(acc) : 0.0f;  // want_sq is uniform across the block
    if (threadIdx.x == 0) wsq_out[c] = acc;
  }
}

}  // namespace

void fused_step_cuda(float* w, const float* g, float* m, const int64_t* table, int64_t S, int64_t C,
                     const int32_t* seg_group, const int32_t* seg_flags, const float* hparams,
                     const float* found_inf, int mode, float eps, float* partials, float* wsq_out,
                     int device, uintptr_t stream) {
  check_arg(C < (int64_t{1} << 31), "fused_step: too many chunks for one grid");
  if (C == 0) return;
  DeviceGuard guard(device);
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  const unsigned grid = static_cast<unsigned>(C);
  if (mode & kStepLars) {
    chunk_norms_kernel<<<grid, kThreads, 0, st>>>(w, g, m, mode, table, S, C, seg_flags, found_inf,
                                                  partials);
    CUDA_CHECK(cudaGetLastError());
  }
  // The update reads the partials of launch 1: same stream, so ordered after it.
  if (mode & kStepNesterov) {
    fused_update_kernel<true><<<grid, kThreads, 0, st>>>(w, g, m, table, S, C, seg_group, seg_flags,
                                                         hparams, found_inf, mode, eps, partials, wsq_out);
  } else {
    fused_update_kernel<false><<<grid, kThreads, 0, st>>>(w, g, m, table, S, C, seg_group,
                                                          seg_flags, hparams, found_inf, mode, eps,
                                                          partials, wsq_out);
  }
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace fastres
