// lars.h: fused momentum-SGD and LARS steps over a segmented flat buffer (segments.h).
//
// Defines:
//   kStepLars, kStepLrAfterMomentum, kStepNesterov, kStepRmsprop   mode bits of a step
//   kSegAdapt, kSegDecay                             per-segment flag bits
//   kHparamStride                                    floats per group in `hparams`
//   lars_trust(...)      FASTRES_HD: the trust ratio of one segment
//   StepCoefs, step_coefs(...)  FASTRES_HD: per-segment coefficients of the update
//   momentum_update(...) FASTRES_HD: the per-element update, the one source of the math
//                        (docs/design.md, decision 2): the CPU and CUDA kernels both call it
//   fused_step_cpu(...)  OpenMP: norms of w and g per chunk, trust per segment, update
//   fused_step_cuda(...) (FASTRES_WITH_CUDA) two launches: per-chunk norms of w and g
//                        (one pass), then the update, each block of which reduces its
//                        segment's partials (deterministic, fixed order) to its trust ratio
// Under NVRTC (fastres/kernels/rtc.py) only the FASTRES_HD parts are compiled.
//
// The math (docs/design.md, decision 5), per segment s in group k, for every element:
//   wd    = hparams[k].wd if flags[s] & kSegDecay else 0
//   trust = lars_trust(||w_s||^2, ||g_s||^2, wd, hparams[k].eta, eps)
//           if (mode & kStepLars) and (flags[s] & kSegAdapt), else 1
//   g'    = g + wd * w
//   MLPerf convention (default):        m = mu * m + lr * trust * g';  w = w - m
//   kStepLrAfterMomentum (timm, torch): m = mu * m + trust * g';       w = w - lr * m
//   kStepNesterov: w = w - b * (a * g' + mu * m_new) instead of w = w - b * m_new,
//   where a, b are the factors of g' and m above (torch's SGD nesterov for a = 1, b = lr).
// lars_trust = eta * ||w|| / (||g|| + wd * ||w|| + eps), 1 where either norm is 0.
//
// kStepRmsprop: RMSprop warm-up (Akiba, Suzuki & Fukuda 2017, arXiv:1711.04325, sec. 2.2):
// the step blends RMSprop, with its own rate r, into momentum SGD. With
// blend = alpha_RMSprop = 1 - alpha_SGD, beta = RMSprop's decay and v the per-element average
// of squared gradients (`sq_avg`, one more flat buffer):
//   v     = beta * v + (1 - beta) * g'^2
//   c     = (1 - blend) * a + blend * r' / (sqrt(v) + rms_eps)
//   m     = mu * m + c * g';  w = w - b * m   (nesterov: w = w - b * (c * g' + mu * m))
// where a, b are the factors above and r' = r (MLPerf convention: the rate is inside the
// momentum, as in the paper's formula), or r / lr with kStepLrAfterMomentum (0 while lr = 0),
// so that both conventions take the same step at constant lr. Without kStepRmsprop, v is
// neither read nor written and the step is the one above, bit for bit.
//
// `hparams` holds kHparamStride floats per group: lr, wd, mu, eta, then blend, r, beta,
// rms_eps (read with kStepRmsprop only) (on the kernel's device,
// written by the optimizer with device-side fills: no recompilation and no host sync when
// the schedule changes lr). `seg_group` (int32, S) maps a segment to its group, `seg_flags`
// (int32, S) holds its kSeg* bits. `found_inf` (fp32 address or 0): when it points to a
// nonzero value the step writes nothing (w and m untouched). `partials` is scratch of 2 * C
// floats (squared norms of w, then of g, per chunk). With kStepWNormCached the first C are
// taken as they are: the previous step wrote them through `wsq_out`. `wsq_out` (C floats or
// 0): the update also writes sum(w_new^2) per chunk of adapted segments there, in the same
// order of additions as the norm pass (so a cached norm has the bits of a fresh one), which
// saves the next LARS step a read of w (7 -> 6 passes over the buffers). It must not alias
// partials (CUDA blocks of one segment read partials while others write wsq_out): the
// optimizer keeps two C-float buffers and swaps them each step. `sq_avg` (fp32, like w; 0
// without kStepRmsprop): RMSprop's v. `trust_scratch` (CPU only): scratch of
// kStepCoefsFloats * S floats (the StepCoefs of each segment).
#pragma once

#include "common.h"

#if !defined(__CUDACC_RTC__)  // NVRTC: sqrtf is built in, and only the device parts are compiled
#include <cmath>
#endif

namespace fastres {

enum StepMode : int {
  kStepLars = 1,
  kStepLrAfterMomentum = 2,
  kStepNesterov = 4,
  kStepWNormCached = 8,  // partials[0, C) already hold this step's sum w^2 per chunk
  kStepRmsprop = 16,     // RMSprop warm-up blend (needs sq_avg)
};

enum SegFlag : int {
  kSegAdapt = 1,
  kSegDecay = 2,
};

constexpr int kHparamStride = 8;  // lr, wd, mu, eta, rmsprop: blend, rate, beta, eps

constexpr int kStepCoefsFloats = 8;  // sizeof(StepCoefs) / sizeof(float)

FASTRES_HD float lars_trust(float w_sq, float g_sq, float wd, float eta, float eps) {
  const float wn = sqrtf(w_sq);
  const float gn = sqrtf(g_sq);
  return (wn > 0.0f && gn > 0.0f) ? eta * wn / (gn + wd * wn + eps) : 1.0f;
}

struct StepCoefs {
  float a;   // factor of g' in the momentum update
  float b;   // factor of the momentum (or nesterov term) in the weight update
  float wd;  // weight decay of the segment (0 without kSegDecay)
  float mu;  // momentum
  // RMSprop warm-up (kStepRmsprop only; see the top of this file)
  float blend;    // alpha_RMSprop
  float rms_lr;   // r' (the RMSprop rate in the convention's units)
  float beta;     // decay of v
  float rms_eps;  // added to sqrt(v)
};
static_assert(sizeof(StepCoefs) == kStepCoefsFloats * sizeof(float), "StepCoefs: 8 floats");

// w_sq, g_sq are read only when the segment is adapted.
FASTRES_HD StepCoefs step_coefs(const float* hparams, int group, int flags, int mode, float w_sq,
                                float g_sq, float eps) {
  const float* h = hparams + kHparamStride * group;
  StepCoefs k;
  k.wd = (flags & kSegDecay) ? h[1] : 0.0f;
  k.mu = h[2];
  const float trust =
      ((mode & kStepLars) && (flags & kSegAdapt)) ? lars_trust(w_sq, g_sq, k.wd, h[3], eps) : 1.0f;
  if (mode & kStepLrAfterMomentum) {
    k.a = trust;
    k.b = h[0];
  } else {
    k.a = h[0] * trust;
    k.b = 1.0f;
  }
  k.blend = 0.0f;
  k.rms_lr = 0.0f;
  k.beta = 0.0f;
  k.rms_eps = 1.0f;
  if (mode & kStepRmsprop) {
    k.blend = h[4];
    k.rms_lr = (mode & kStepLrAfterMomentum) ? (h[0] > 0.0f ? h[5] / h[0] : 0.0f) : h[5];
    k.beta = h[6];
    k.rms_eps = h[7];
  }
  return k;
}

template <bool kNesterov>
FASTRES_HD void momentum_update(float& w, float& m, float g, const StepCoefs& k) {
  const float gd = g + k.wd * w;
  const float mn = k.mu * m + k.a * gd;
  m = mn;
  w = w - k.b * (kNesterov ? k.a * gd + k.mu * mn : mn);
}

// The step with the RMSprop warm-up blend (kStepRmsprop): v is the element of sq_avg.
template <bool kNesterov>
FASTRES_HD void rmsprop_blend_update(float& w, float& m, float& v, float g, const StepCoefs& k) {
  const float gd = g + k.wd * w;
  const float vn = k.beta * v + (1.0f - k.beta) * gd * gd;
  const float c = (1.0f - k.blend) * k.a + k.blend * k.rms_lr / (sqrtf(vn) + k.rms_eps);
  const float mn = k.mu * m + c * gd;
  v = vn;
  m = mn;
  w = w - k.b * (kNesterov ? c * gd + k.mu * mn : mn);
}

#if !defined(__CUDACC_RTC__)
void fused_step_cpu(float* w, const float* g, float* m, const int64_t* table, int64_t S, int64_t C,
                    const int32_t* seg_group, const int32_t* seg_flags, const float* hparams,
                    const float* found_inf, int mode, float eps, float* partials, float* wsq_out,
                    float* sq_avg, float* trust_scratch, int num_threads);

#if defined(FASTRES_WITH_CUDA)
void fused_step_cuda(float* w, const float* g, float* m, const int64_t* table, int64_t S, int64_t C,
                     const int32_t* seg_group, const int32_t* seg_flags, const float* hparams,
                     const float* found_inf, int mode, float eps, float* partials, float* wsq_out,
                     float* sq_avg, int device, uintptr_t stream);
#endif
#endif  // !__CUDACC_RTC__

}  // namespace fastres
