// wire_cpu.cpp: the CPU kernels of the wire format (see wire.h).
//
// One OpenMP loop with a static schedule over blocks of kBlock elements; each block is a
// branch-free loop over the per-element conversion of wire.h, which GCC vectorises (integer
// AVX2 in the avx2 clone, SSE2 in the default one: the same bits, there is no float
// arithmetic in the conversions and no FMA in either clone). Unpack with norms runs one
// iteration per segment chunk instead: it converts the chunk, then sums its squares with
// chunk_sq_sum while the 16 KiB are still in L1, so the norms cost no second pass over memory
// and equal segment_sq_norms_cpu's bit for bit (the same function on the same values);
// elements outside the chunks ([0, lo) and [hi, n)) go through the block loop.
//
// fp16 on x86-64 with F16C (every AVX2 CPU): vcvtps2ph / vcvtph2ps, 8 elements an instruction,
// where the integer version costs ~30 (it is compute-bound at about a third of the copy
// bandwidth). Same bits: both round to nearest even, keep subnormals (vcvtps2ph's DAZ could
// only touch fp32 subnormals, which are +-0 in fp16 either way) and quiet a NaN keeping its sign
// and the top of its payload, as wire.h does. FASTRES_WIRE_NO_F16C=1 in the environment turns
// it off (tests/test_wire.py compares the two paths bit for bit, NaN payloads included).
//
// Numbers (25 MB bucket, 2-core AMD EPYC CI box): bench/README.md, "Wire pack/unpack".
#include <cstdint>

#include "common.h"
#include "cpu_reduce.h"
#include "segments.h"
#include "wire.h"

#if defined(FASTRES_WITH_OPENMP)
#include <omp.h>
#endif

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

#include <cstdlib>
#define FASTRES_WIRE_F16C 1
#endif

namespace fastres {
namespace {

constexpr int64_t kBlock = 1 << 15;        // 128 KiB of fp32 per iteration
constexpr int64_t kParallelMin = 1 << 16;  // below this a parallel region costs more

// No __restrict__: fp32 may run in place (src == dst); element i is read before it is written
// and no other element aliases it, so GCC's runtime alias check picks the vector loop.
template <int D>
FASTRES_CPU_CLONES void pack_block(const float* src, typename WireType<D>::type* dst, int64_t n,
                                   float scale) {
  for (int64_t i = 0; i < n; ++i) dst[i] = to_wire<D>(src[i] * scale);
}

template <int D>
FASTRES_CPU_CLONES void unpack_block(const typename WireType<D>::type* src, float* dst, int64_t n,
                                     float scale) {
  for (int64_t i = 0; i < n; ++i) dst[i] = from_wire<D>(src[i]) * scale;
}

#if defined(FASTRES_WIRE_F16C)
bool use_f16c() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") &&
                          std::getenv("FASTRES_WIRE_NO_F16C") == nullptr;
  return yes;
}

__attribute__((target("avx2,f16c"))) void pack_fp16_f16c(const float* src, uint16_t* dst,
                                                          int64_t n, float scale) {
  const __m256 s = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_mul_ps(_mm256_loadu_ps(src + i), s);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  for (; i < n; ++i) dst[i] = float_to_fp16_bits(src[i] * scale);
}

__attribute__((target("avx2,f16c"))) void unpack_fp16_f16c(const uint16_t* src, float* dst,
                                                            int64_t n, float scale) {
  const __m256 s = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_cvtph_ps(h), s));
  }
  for (; i < n; ++i) dst[i] = fp16_bits_to_float(src[i]) * scale;
}
#endif

// The conversion of one block: the F16C loop for fp16 where the CPU has it, else wire.h's.
template <int D>
void pack_span(const float* src, typename WireType<D>::type* dst, int64_t n, float scale) {
#if defined(FASTRES_WIRE_F16C)
  if (D == kFloat16 && use_f16c()) {
    return pack_fp16_f16c(src, reinterpret_cast<uint16_t*>(dst), n, scale);
  }
#endif
  pack_block<D>(src, dst, n, scale);
}

template <int D>
void unpack_span(const typename WireType<D>::type* src, float* dst, int64_t n, float scale) {
#if defined(FASTRES_WIRE_F16C)
  if (D == kFloat16 && use_f16c()) {
    return unpack_fp16_f16c(reinterpret_cast<const uint16_t*>(src), dst, n, scale);
  }
#endif
  unpack_block<D>(src, dst, n, scale);
}

template <typename F>
void for_blocks(int64_t begin, int64_t end, int num_threads, F&& body) {
  const int64_t nblocks = CEIL_DIV(end - begin, kBlock);
  (void)num_threads;
#if defined(FASTRES_WITH_OPENMP)
#pragma omp parallel for schedule(static) num_threads(num_threads) if (end - begin >= kParallelMin)
#endif
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t lo = begin + b * kBlock;
    const int64_t hi = end - lo < kBlock ? end : lo + kBlock;
    body(lo, hi - lo);
  }
}

template <int D>
void pack(const float* src, void* dst, int64_t n, float scale, int num_threads) {
  auto* d = static_cast<typename WireType<D>::type*>(dst);
  for_blocks(0, n, num_threads, [&](int64_t i, int64_t len) { pack_span<D>(src + i, d + i, len, scale); });
}

template <int D>
void unpack(const void* src, float* dst, int64_t n, float scale, const WireNorms& nm,
            int num_threads) {
  const auto* s = static_cast<const typename WireType<D>::type*>(src);
  auto plain = [&](int64_t i, int64_t len) { unpack_span<D>(s + i, dst + i, len, scale); };
  if (nm.table == nullptr) {
    for_blocks(0, n, num_threads, plain);
    return;
  }
  const SegmentChunks t = segment_chunks_view(nm.table, nm.num_segments, nm.num_chunks);
  const int64_t C = nm.num_chunks;
  for_blocks(0, nm.lo, num_threads, plain);
  for_blocks(nm.hi, n, num_threads, plain);
  // segment_sq_norms_cpu's stage 1 (same chunks, same chunk_sq_sum) fused with the convert
#if defined(FASTRES_WITH_OPENMP)
#pragma omp parallel for schedule(static) num_threads(num_threads) if (C >= 8)
#endif
  for (int64_t c = 0; c < C; ++c) {
    const int64_t b = t.chunk_begin[c], len = t.chunk_end[c] - b;
    unpack_span<D>(s + b, dst + b, len, scale);
    nm.partials[c] = chunk_sq_sum(dst + b, len);
  }
  // and its stage 2, unchanged
  const int64_t S = nm.num_segments;
#if defined(FASTRES_WITH_OPENMP)
#pragma omp parallel for schedule(static) num_threads(num_threads) if (S > 4096)
#endif
  for (int64_t k = 0; k < S; ++k) {
    float acc = 0.0f;
    for (int64_t c = t.seg_first_chunk[k]; c < t.seg_first_chunk[k + 1]; ++c) acc += nm.partials[c];
    nm.out[k] = acc;
  }
}

}  // namespace

void wire_pack_cpu(const float* src, void* dst, int dst_dtype, int64_t n, float scale,
                   int num_threads) {
  if (num_threads < 1) num_threads = 1;
  switch (dst_dtype) {
    case kFloat32: return pack<kFloat32>(src, dst, n, scale, num_threads);
    case kFloat16: return pack<kFloat16>(src, dst, n, scale, num_threads);
    case kBFloat16: return pack<kBFloat16>(src, dst, n, scale, num_threads);
    default: check_arg(false, "dst: unknown dtype code " + std::to_string(dst_dtype));
  }
}

void wire_unpack_cpu(const void* src, int src_dtype, float* dst, int64_t n, float scale,
                     const WireNorms& norms, int num_threads) {
  if (num_threads < 1) num_threads = 1;
  switch (src_dtype) {
    case kFloat32: return unpack<kFloat32>(src, dst, n, scale, norms, num_threads);
    case kFloat16: return unpack<kFloat16>(src, dst, n, scale, norms, num_threads);
    case kBFloat16: return unpack<kBFloat16>(src, dst, n, scale, norms, num_threads);
    default: check_arg(false, "src: unknown dtype code " + std::to_string(src_dtype));
  }
}

}  // namespace fastres
