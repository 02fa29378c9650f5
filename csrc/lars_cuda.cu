// lars_cuda.cu: the CUDA kernels of the fused LARS / momentum-SGD step (see lars.h).
//
// Defines:
//   chunk_norms_kernel    launch 1 (LARS only): one block per chunk -> partials[c] = sum w^2,
//                         partials[C + c] = sum g^2 (one pass over w and g)
//   fused_update_kernel   launch 2: one block per chunk; reduces its segment's partials in a
//                         fixed order (every block of a segment gets the same bits), forms the
//                         StepCoefs of lars.h, updates its chunk (with the RMSprop warm-up
//                         blend of lars.h under kStepRmsprop, reading and writing sq_avg)
//   fused_step_cuda       host launcher on the caller's stream; no host sync, no allocation
//
// Loads: every chunk goes through cuda_common.cuh's chunk_visit_sq, split at w's first 16-byte
// boundary: a scalar head of at most 3 elements, float4s, a scalar tail. g and m take float4
// loads too where they are 16-byte aligned at the same element (always, on fastres/kernels/flat.py's
// layout: segments start on 16-element boundaries), else scalar loads inside the same loop, so
// a segment that starts anywhere still runs vectorised. The norm pass sums w^2 over exactly
// that traversal, and so does the update over w_new: a cached norm has the bits of a fresh one.
// Redundant stage 2: a block re-reduces the partials of its segment (at most 577 floats for
// ResNet-50's largest tensor), which costs far less than a third launch and keeps the step at
// two launches.
//
// One source for nvcc and NVRTC: under NVRTC (__CUDACC_RTC__) only the kernels are compiled,
// and fastres/kernels/rtc.py launches them with the same grids as fused_step_cuda below (coupled).
#include "common.h"
#include "cuda_common.cuh"
#include "lars.h"
#include "segments.h"

namespace fastres {

FASTRES_KERNELS_BEGIN

// 4 floats from p + k: one float4 load when `vec` (p + k 16-byte aligned), else 4 scalar loads.
__device__ __forceinline__ float4 load4(const float* p, bool vec) {
  return vec ? *reinterpret_cast<const float4*>(p) : make_float4(p[0], p[1], p[2], p[3]);
}

__device__ __forceinline__ void store4(float* p, bool vec, const float4& x) {
  if (vec) {
    *reinterpret_cast<float4*>(p) = x;
  } else {
    p[0] = x.x;
    p[1] = x.y;
    p[2] = x.z;
    p[3] = x.w;
  }
}

__global__ void __launch_bounds__(kChunkThreads)
chunk_norms_kernel(const float* __restrict__ w, const float* __restrict__ g, int mode,
                   const int64_t* __restrict__ table, int64_t S, int64_t C,
                   const int32_t* __restrict__ seg_flags, float* __restrict__ partials) {
  // runs on a found-inf step too: the update kernel then carries the w norms over
  const SegmentChunks t = segment_chunks_view(table, S, C);
  const int64_t c = blockIdx.x;
  if (!(seg_flags[t.chunk_seg[c]] & kSegAdapt)) return;  // never read
  const int64_t b = t.chunk_begin[c];
  const int n = static_cast<int>(t.chunk_end[c] - b);
  const bool cached = (mode & kStepWNormCached) != 0;
  const float ws = cached ? 0.0f : block_sum_all(chunk_sq(w + b, n));  // `cached`: uniform
  const float gs = block_sum_all(chunk_sq(g + b, n));
  if (threadIdx.x == 0) {
    if (!cached) partials[c] = ws;
    partials[C + c] = gs;
  }
}

template <bool kNesterov>
__global__ void __launch_bounds__(kChunkThreads)
fused_update_kernel(float* __restrict__ w, const float* __restrict__ g, float* __restrict__ m,
                    const int64_t* __restrict__ table, int64_t S, int64_t C,
                    const int32_t* __restrict__ seg_group, const int32_t* __restrict__ seg_flags,
                    const float* __restrict__ hparams, const float* __restrict__ found_inf,
                    int mode, float eps, const float* __restrict__ partials,
                    float* __restrict__ wsq_out, float* __restrict__ sq_avg) {
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
    for (int64_t j = t.seg_first_chunk[s] + threadIdx.x; j < t.seg_first_chunk[s + 1];
         j += kChunkThreads) {
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
  // g and m vectorise where they are aligned at w's first 16-byte boundary (uniform per block)
  const int head = static_cast<int>(head_of(pw, n));
  const bool gvec = aligned_to(pg + head, 16);
  const bool mvec = aligned_to(pm + head, 16);
  float acc;
  if (mode & kStepRmsprop) {  // uniform across the grid; v vectorises where it is aligned like w
    float* pv = sq_avg + b;
    const bool vvec = aligned_to(pv + head, 16);
    acc = chunk_visit_sq(
        pw, n,
        [&](int i) {
          float4 x = *reinterpret_cast<float4*>(pw + i);
          float4 y = load4(pm + i, mvec);
          float4 v = load4(pv + i, vvec);
          const float4 d = load4(pg + i, gvec);
          rmsprop_blend_update<kNesterov>(x.x, y.x, v.x, d.x, k);
          rmsprop_blend_update<kNesterov>(x.y, y.y, v.y, d.y, k);
          rmsprop_blend_update<kNesterov>(x.z, y.z, v.z, d.z, k);
          rmsprop_blend_update<kNesterov>(x.w, y.w, v.w, d.w, k);
          *reinterpret_cast<float4*>(pw + i) = x;
          store4(pm + i, mvec, y);
          store4(pv + i, vvec, v);
          return x;
        },
        [&](int i) {
          float x = pw[i], y = pm[i], v = pv[i];
          rmsprop_blend_update<kNesterov>(x, y, v, pg[i], k);
          pw[i] = x;
          pm[i] = y;
          pv[i] = v;
          return x;
        });
  } else {
    acc = chunk_visit_sq(
        pw, n,
        [&](int i) {
          float4 x = *reinterpret_cast<float4*>(pw + i);
          float4 y = load4(pm + i, mvec);
          const float4 d = load4(pg + i, gvec);
          momentum_update<kNesterov>(x.x, y.x, d.x, k);
          momentum_update<kNesterov>(x.y, y.y, d.y, k);
          momentum_update<kNesterov>(x.z, y.z, d.z, k);
          momentum_update<kNesterov>(x.w, y.w, d.w, k);
          *reinterpret_cast<float4*>(pw + i) = x;
          store4(pm + i, mvec, y);
          return x;
        },
        [&](int i) {
          float x = pw[i], y = pm[i];
          momentum_update<kNesterov>(x, y, pg[i], k);
          pw[i] = x;
          pm[i] = y;
          return x;
        });
  }
  if (wsq_out != nullptr) {
    const bool want_sq = (mode & kStepLars) && (flags & kSegAdapt);  // uniform across the block
    const float sum = want_sq ? block_sum_all(acc) : 0.0f;
    if (threadIdx.x == 0) wsq_out[c] = sum;
  }
}

FASTRES_KERNELS_END

#if !defined(__CUDACC_RTC__)

void fused_step_cuda(float* w, const float* g, float* m, const int64_t* table, int64_t S, int64_t C,
                     const int32_t* seg_group, const int32_t* seg_flags, const float* hparams,
                     const float* found_inf, int mode, float eps, float* partials, float* wsq_out,
                     float* sq_avg, int device, uintptr_t stream) {
  check_arg(C < (int64_t{1} << 31), "fused_step: too many chunks for one grid");
  if (C == 0) return;
  DeviceGuard guard(device);
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  const unsigned grid = static_cast<unsigned>(C);
  if (mode & kStepLars) {
    chunk_norms_kernel<<<grid, kChunkThreads, 0, st>>>(w, g, mode, table, S, C, seg_flags, partials);
    CUDA_CHECK_LAUNCH("chunk_norms_kernel", st);
  }
  // The update reads the partials of launch 1: same stream, so ordered after it.
  if (mode & kStepNesterov) {
    fused_update_kernel<true><<<grid, kChunkThreads, 0, st>>>(
        w, g, m, table, S, C, seg_group, seg_flags, hparams, found_inf, mode, eps, partials, wsq_out,
        sq_avg);
  } else {
    fused_update_kernel<false><<<grid, kChunkThreads, 0, st>>>(
        w, g, m, table, S, C, seg_group, seg_flags, hparams, found_inf, mode, eps, partials, wsq_out,
        sq_avg);
  }
  CUDA_CHECK_LAUNCH("fused_update_kernel", st);
}
#endif  // !__CUDACC_RTC__

}  // namespace fastres
