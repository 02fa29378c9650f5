// lars_cpu.cpp: the CPU kernel of the fused LARS / momentum-SGD step (see lars.h).
//
// Three loops, no allocation: (1) OpenMP over chunks, squared norms of w and g in one pass
// (LARS only; the same 32-lane fp32 accumulation as segment_sq_norms_cpu.cpp, so the norms
// are bit-identical to segment_sq_norms); (2) per segment, the sum of its partials in
// chunk order and its StepCoefs; (3) OpenMP over chunks, the per-element update of lars.h,
// a branch-free loop over restrict pointers that the compiler vectorises (AVX2 clone), which
// also sums the new w^2 per chunk for the next step (kStepWNormCached, see lars.h).
#include <vector>

#include "common.h"
#include "cpu_reduce.h"
#include "lars.h"
#include "segments.h"

#if defined(FASTRES_WITH_OPENMP)
#include <omp.h>
#endif

namespace fastres {
namespace {

// The update of one chunk; returns sum(w_new^2) when kSq, in chunk_sq_sum's order of additions
// (32 lanes, folded pairwise), so that a norm cached from here equals a fresh one bit for bit.
// kRms: the RMSprop warm-up blend (kStepRmsprop), v = sq_avg + the chunk's start.
template <bool kNesterov, bool kSq, bool kRms>
FASTRES_CPU_CLONES float chunk_update(float* __restrict__ w, const float* __restrict__ g,
                                      float* __restrict__ m, float* __restrict__ v, int64_t n,
                                      StepCoefs k) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      float wi = w[i + j], mi = m[i + j];
      if (kRms) {
        float vi = v[i + j];
        rmsprop_blend_update<kNesterov>(wi, mi, vi, g[i + j], k);
        v[i + j] = vi;
      } else {
        momentum_update<kNesterov>(wi, mi, g[i + j], k);
      }
      w[i + j] = wi;
      m[i + j] = mi;
      if (kSq) acc[j] += sq(wi);
    }
  }
  for (int j = 0; i + j < n; ++j) {
    float wi = w[i + j], mi = m[i + j];
    if (kRms) {
      float vi = v[i + j];
      rmsprop_blend_update<kNesterov>(wi, mi, vi, g[i + j], k);
      v[i + j] = vi;
    } else {
      momentum_update<kNesterov>(wi, mi, g[i + j], k);
    }
    w[i + j] = wi;
    m[i + j] = mi;
    if (kSq) acc[j] += sq(wi);
  }
  if (!kSq) return 0.0f;
  for (int lanes = kLanes / 2; lanes > 0; lanes /= 2) {
    for (int j = 0; j < lanes; ++j) acc[j] += acc[j + lanes];
  }
  return acc[0];
}

}  // namespace

void fused_step_cpu(float* w, const float* g, float* m, const int64_t* table, int64_t S, int64_t C,
                    const int32_t* seg_group, const int32_t* seg_flags, const float* hparams,
                    const float* found_inf, int mode, float eps, float* partials, float* wsq_out,
                    float* sq_avg, float* trust_scratch, int num_threads) {
  const SegmentChunks t = segment_chunks_view(table, S, C);
  if (num_threads < 1) num_threads = 1;
  (void)num_threads;
  const bool lars = (mode & kStepLars) != 0;
  if (lars) {
#if defined(FASTRES_WITH_OPENMP)
#pragma omp parallel for schedule(static) num_threads(num_threads) if (C >= 8)
#endif
    for (int64_t c = 0; c < C; ++c) {
      const int64_t b = t.chunk_begin[c], n = t.chunk_end[c] - b;
      const bool adapt = (seg_flags[t.chunk_seg[c]] & kSegAdapt) != 0;
      if (!(mode & kStepWNormCached)) partials[c] = adapt ? chunk_sq_sum(w + b, n) : 0.0f;
      partials[C + c] = adapt ? chunk_sq_sum(g + b, n) : 0.0f;
    }
  }
  if (found_inf != nullptr && *found_inf != 0.0f) {  // non-finite gradients: w, m untouched
    if (wsq_out != nullptr) {  // w is unchanged: its norms carry over to the next step
      for (int64_t c = 0; c < C; ++c) wsq_out[c] = lars ? partials[c] : 0.0f;
    }
    return;
  }
  // Per-segment coefficients: kStepCoefsFloats floats per segment in trust_scratch.
  StepCoefs* coefs = reinterpret_cast<StepCoefs*>(trust_scratch);
  for (int64_t s = 0; s < S; ++s) {
    float wsq = 0.0f, gsq = 0.0f;
    if (lars && (seg_flags[s] & kSegAdapt)) {
      for (int64_t c = t.seg_first_chunk[s]; c < t.seg_first_chunk[s + 1]; ++c) {
        wsq += partials[c];
        gsq += partials[C + c];
      }
    }
    coefs[s] = step_coefs(hparams, seg_group[s], seg_flags[s], mode, wsq, gsq, eps);
  }
  const bool nesterov = (mode & kStepNesterov) != 0;
  const bool rms = (mode & kStepRmsprop) != 0;
#if defined(FASTRES_WITH_OPENMP)
#pragma omp parallel for schedule(static) num_threads(num_threads) if (C >= 8)
#endif
  for (int64_t c = 0; c < C; ++c) {
    const int64_t b = t.chunk_begin[c], n = t.chunk_end[c] - b;
    const StepCoefs k = coefs[t.chunk_seg[c]];
    const bool want_sq = wsq_out != nullptr && lars && (seg_flags[t.chunk_seg[c]] & kSegAdapt);
    float* v = rms ? sq_avg + b : nullptr;
    float wsq;
    if (rms) {
      if (want_sq) {
        wsq = nesterov ? chunk_update<true, true, true>(w + b, g + b, m + b, v, n, k)
                       : chunk_update<false, true, true>(w + b, g + b, m + b, v, n, k);
      } else {
        wsq = nesterov ? chunk_update<true, false, true>(w + b, g + b, m + b, v, n, k)
                       : chunk_update<false, false, true>(w + b, g + b, m + b, v, n, k);
      }
    } else if (want_sq) {
      wsq = nesterov ? chunk_update<true, true, false>(w + b, g + b, m + b, v, n, k)
                     : chunk_update<false, true, false>(w + b, g + b, m + b, v, n, k);
    } else {
      wsq = nesterov ? chunk_update<true, false, false>(w + b, g + b, m + b, v, n, k)
                     : chunk_update<false, false, false>(w + b, g + b, m + b, v, n, k);
    }
    if (wsq_out != nullptr) wsq_out[c] = wsq;
  }
}

}  // namespace fastres
