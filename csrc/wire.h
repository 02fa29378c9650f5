// wire.h: the wire format of the gradient all-reduce: fp32 <-> fp32 / fp16 / bf16 in one pass.
//
// Defines:
//   float_bits(f), bits_float(u)       FASTRES_HD bit casts
//   float_to_bf16_bits(f)              FASTRES_HD fp32 -> bf16, round to nearest even
//   float_to_fp16_bits(f)              FASTRES_HD fp32 -> fp16, round to nearest even
//   bf16_bits_to_float(h)              FASTRES_HD bf16 -> fp32 (exact)
//   fp16_bits_to_float(h)              FASTRES_HD fp16 -> fp32 (exact)
//   WireType<D>, to_wire<D>, from_wire<D>   the storage type and the conversions of DType D
//   WireNorms                          optional per-segment sums of squares of unpack's result
//   wire_pack_cpu / wire_pack_cuda     dst[i] = wire(src[i] * scale)
//   wire_unpack_cpu / wire_unpack_cuda dst[i] = float(src[i]) * scale (+ WireNorms)
//
// One source of the math (docs/design.md, decision 2): the conversions are integer bit manipulation, the
// same code on the host and the device, so a CPU and a GPU pack the same bits (the CUDA
// intrinsics would disagree on NaN: __float2bfloat16 gives the canonical 0x7FFF). On every
// non-NaN input the results equal torch's `(src * scale).to(dtype)` and `src.float() * scale`
// bit for bit: the product is rounded to fp32 first (torch's opmath for fp32 is fp32), then
// cast with round-to-nearest-even; overflow gives +-Inf, subnormals are kept (no FTZ/DAZ:
// the conversions never use float arithmetic, so they do not depend on MXCSR or -ftz).
// NaN stays a quiet NaN with its sign and the top of its payload (what the F16C and
// AVX512-BF16 instructions do); torch's own NaN bits vary with its code path (its AVX2/512
// bf16 cast writes 0xFFFF, its scalar one 0x7FC0), so NaN is compared as NaN, not by bits.
//
// Unpack with norms: out[s] = sum of dst[i]^2 over segment s, bit-identical to what
// segment_sq_norms would return for dst afterwards, on the same device: the CPU kernel runs
// cpu_reduce.h's chunk_sq_sum on each chunk right after writing it (still in L1), the CUDA
// kernel sums what it writes through cuda_common.cuh's chunk_visit_sq (the order of
// segment_sq_norms_cuda.cu's stage 1) and runs the same stage 2.
// Coupling: change those and this together (tests/test_wire.py checks the bits).
#pragma once

#include "common.h"

#if !defined(__CUDACC_RTC__)  // NVRTC compiles only the device side: no memcpy needed there
#include <cstring>
#endif

namespace fastres {

FASTRES_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

FASTRES_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// fp32 -> bf16, round to nearest even (the same as c10::BFloat16's round_to_nearest_even and
// torch's vectorised cast on every non-NaN input); NaN -> quiet NaN, sign kept.
FASTRES_HD uint16_t float_to_bf16_bits(float f) {
  const uint32_t u = float_bits(f);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x0040u;
  return static_cast<uint16_t>((u & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

// fp32 -> fp16, round to nearest even, branch-free (both sides are computed and one is
// selected: the loop vectorises). |f| >= 65520 -> Inf; below 2^-14 the result is subnormal,
// rounded at a variable bit position; at most 2^-25 (a tie with 0) it is +-0.
FASTRES_HD uint16_t float_to_fp16_bits(float f) {
  const uint32_t u = float_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7FFFFFFFu;
  // normal range: rebias the exponent (127 -> 15), round away the low 13 bits; a carry into
  // the exponent is the right result, up to Inf (0x7C00) from 65520 on
  const uint32_t r = a - 0x38000000u;
  uint32_t normal = (r + 0xFFFu + ((r >> 13) & 1u)) >> 13;
  normal = a >= 0x477FF000u ? 0x7C00u : normal;  // 65520 and above (and Inf)
  // subnormal range (a < 2^-14, e <= 112): m * 2^(e - 150) in units of 2^-24 is m >> (126 - e);
  // shifts of 25 and more give 0 (m < 2^24), capped at 31. Computed for every input and selected
  // below only in that range; above it (e > 112) the shift is held at 14, not 126 - e, which
  // wraps for e >= 126 and would make `1u << (sh - 1u)` undefined in C++ (UBSan's shift check)
  const uint32_t e = a >> 23;
  const uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
  const uint32_t sh = e < 95u ? 31u : (e > 112u ? 14u : 126u - e);
  const uint32_t sub = (m + ((1u << (sh - 1u)) - 1u) + ((m >> sh) & 1u)) >> sh;
  const uint32_t nan = 0x7E00u | ((a >> 13) & 0x3FFu);  // quiet, top of the payload
  uint32_t h = a < 0x38800000u ? sub : normal;
  h = a > 0x7F800000u ? nan : h;
  return static_cast<uint16_t>(sign | h);
}

FASTRES_HD float bf16_bits_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

// fp16 -> fp32, exact, branch-free (the loop vectorises); a NaN gets the quiet bit, like
// vcvtph2ps.
FASTRES_HD float fp16_bits_to_float(uint16_t h) {
  const uint32_t x = h;
  const uint32_t em = x & 0x7FFFu;  // exponent and mantissa
  // normal: rebias the exponent (15 -> 127); Inf/NaN (exponent 31): to 255, NaN made quiet
  uint32_t bits = (em << 13) + (em >= 0x7C00u ? (224u << 23) : (112u << 23));
  bits |= em > 0x7C00u ? 0x400000u : 0u;
  // subnormal (0 < em < 0x400): em * 2^-24. em converts to fp32 exactly (em < 2^10), and
  // 2^-24 goes onto the exponent field as an integer, so FTZ/DAZ cannot flush anything. The
  // selects are bit masks: with a ternary, GCC sinks the int -> float conversion behind a
  // branch and, under -ftrapping-math, will not vectorise the loop.
  const uint32_t sub = float_bits(static_cast<float>(static_cast<int32_t>(em))) - (24u << 23);
  const uint32_t is_sub = 0u - static_cast<uint32_t>(em - 1u < 0x3FFu);
  const uint32_t is_normal = 0u - static_cast<uint32_t>(em >= 0x400u);  // Inf, NaN included
  bits = (sub & is_sub) | (bits & is_normal);  // and 0 for +-0
  return bits_float(((x & 0x8000u) << 16) | bits);
}

template <int D>
struct WireType;
template <>
struct WireType<kFloat32> {
  using type = float;
};
template <>
struct WireType<kFloat16> {
  using type = uint16_t;
};
template <>
struct WireType<kBFloat16> {
  using type = uint16_t;
};

template <int D>
FASTRES_HD typename WireType<D>::type to_wire(float x) {
  if constexpr (D == kFloat32) {
    return x;
  } else if constexpr (D == kFloat16) {
    return float_to_fp16_bits(x);
  } else {
    return float_to_bf16_bits(x);
  }
}

template <int D>
FASTRES_HD float from_wire(typename WireType<D>::type h) {
  if constexpr (D == kFloat32) {
    return h;
  } else if constexpr (D == kFloat16) {
    return fp16_bits_to_float(h);
  } else {
    return bf16_bits_to_float(h);
  }
}

// Per-segment sums of squares of unpack's result (segments.h chunk table, on the device that
// runs the kernel). The chunks cover dst[lo, hi) exactly (lo = offsets[0], hi = offsets[S]:
// fastres/kernels/ops.py passes them from SegmentChunks' host copy, so the launcher needs no sync);
// partials: C floats of scratch, out: S floats.
struct WireNorms {
  const int64_t* table = nullptr;  // nullptr: no norms
  int64_t num_segments = 0;
  int64_t num_chunks = 0;
  int64_t lo = 0;
  int64_t hi = 0;
  float* partials = nullptr;
  float* out = nullptr;
};

#if !defined(__CUDACC_RTC__)
// dst (dst_dtype) [0, n) = wire(src[0, n) * scale). src == dst (in place) only for kFloat32.
void wire_pack_cpu(const float* src, void* dst, int dst_dtype, int64_t n, float scale,
                   int num_threads);
// dst [0, n) = float(src (src_dtype) [0, n)) * scale, and the norms when norms.table != 0.
void wire_unpack_cpu(const void* src, int src_dtype, float* dst, int64_t n, float scale,
                     const WireNorms& norms, int num_threads);

#if defined(FASTRES_WITH_CUDA)
void wire_pack_cuda(const float* src, void* dst, int dst_dtype, int64_t n, float scale,
                    int device, uintptr_t stream);
void wire_unpack_cuda(const void* src, int src_dtype, float* dst, int64_t n, float scale,
                      const WireNorms& norms, int device, uintptr_t stream);
#endif
#endif  // !__CUDACC_RTC__

}  // namespace fastres
