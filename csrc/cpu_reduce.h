// cpu_reduce.h: the one fp32 sum-of-squares order that every CPU kernel shares.
//
// Defines:
//   kLanes                 independent accumulators per chunk (32)
//   FASTRES_CPU_CLONES     AVX2 + baseline clones of a function (GCC, x86-64)
//   chunk_sq_sum(p, n)     sum of p[i]^2 over one chunk, 32 lanes folded pairwise
//
// 32 independent fp32 accumulators: the compiler turns them into SIMD (8 SSE or 4 AVX
// registers, enough independent adds to hide their latency) without -ffast-math, and the order
// of the additions is the same whatever the instruction set, so an AVX2 machine and an SSE2
// one give the same bits (no FMA: neither clone enables it). Coupling: lars_cpu.cpp's
// chunk_update sums the squares of the weights it writes in this same order, so that a norm it
// caches equals a fresh segment_sq_norms bit for bit.
#pragma once

#include <cstdint>

#include "common.h"

namespace fastres {

constexpr int kLanes = 32;

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define FASTRES_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FASTRES_CPU_CLONES
#endif

FASTRES_CPU_CLONES static float chunk_sq_sum(const float* __restrict__ p, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) acc[j] += sq(p[i + j]);
  }
  for (int j = 0; i + j < n; ++j) acc[j] += sq(p[i + j]);
  // fold the lanes pairwise: 16, 8, 4, 2, 1
  for (int w = kLanes / 2; w > 0; w /= 2) {
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  }
  return acc[0];
}

}  // namespace fastres
