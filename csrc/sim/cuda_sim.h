// cuda_sim.h: what CUDA gives a kernel, for running fastres's .cu sources on the CPU.
//
// fastres/kernels/sim.py compiles each csrc/*_cuda.cu file with the host C++ compiler as NVRTC
// compiles it (kernels only, no standard header: this header defines __CUDACC_RTC__, and
// __CUDA_ARCH__ for the device branches), with this header in front and nothing in the .cu
// files changed. sim_runtime.cpp runs each block's threads as fibers. Defines:
//   __global__, __device__, __host__, __forceinline__, __launch_bounds__   plain C++
//   __shared__        a static in the section fastres_sim_shared: one copy, the running block's
//                     (blocks run one at a time); the runtime fills the section with 0xFF bytes
//                     (a NaN in every float) before each block, so a read before a write shows.
//                     GCC drops the section of a static inside a template: a __shared__ there
//                     is one copy for every block and is not refilled (sim.py refuses to build it)
//   threadIdx, blockIdx, blockDim, gridDim   the running thread's (fastres_sim_now)
//   warpSize          32
//   __syncthreads()   the block barrier: the fiber waits until every live (not exited) thread of
//                     its block has arrived at the same __syncthreads (file, line and count)
//   __shfl_sync, __shfl_up_sync, __shfl_down_sync, __shfl_xor_sync   4- and 8-byte values;
//                     the fiber waits until the 32 lanes of its warp arrive at the same shuffle;
//                     a mask other than 0xffffffff, or a width other than 32, aborts the launch
//   float4, ushort4   with the GPU's alignment (16 and 8 bytes), so that UBSan's alignment check
//                     reports a vector load or store at an address the GPU would fault on
//   make_float4, __float_as_uint, __uint_as_float, sqrtf
//   fastres_sim::Kernel<&kernel>::info(name)   a kernel's entry for the module's table (sim.py
//                     writes the table: one entry per name expression of fastres.kernels.rtc.KERNELS)
#pragma once

#define __CUDACC__ 1
#define __CUDACC_RTC__ 1
#define __CUDA_ARCH__ 900
#define FASTRES_SIM 1

#include "sim/sim_abi.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __shared__ __attribute__((section("fastres_sim_shared"))) static

#define warpSize 32
#define threadIdx (fastres_sim_now.thread)
#define blockIdx (fastres_sim_now.block)
#define blockDim (fastres_sim_now.block_dim)
#define gridDim (fastres_sim_now.grid_dim)

typedef fastres_sim_dim3 uint3;
typedef fastres_sim_dim3 dim3;

struct __attribute__((aligned(16))) float4 {
  float x, y, z, w;
};
struct __attribute__((aligned(8))) ushort4 {
  unsigned short x, y, z, w;
};
static_assert(sizeof(float4) == 16 && alignof(float4) == 16, "float4: 16 bytes, 16-byte aligned");
static_assert(sizeof(ushort4) == 8 && alignof(ushort4) == 8, "ushort4: 8 bytes, 8-byte aligned");

inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

inline unsigned int __float_as_uint(float f) {
  unsigned int u;
  __builtin_memcpy(&u, &f, sizeof u);
  return u;
}

inline float __uint_as_float(unsigned int u) {
  float f;
  __builtin_memcpy(&f, &u, sizeof f);
  return f;
}

extern "C" float sqrtf(float);  // IEEE-rounded, as -prec-sqrt=true gives on the GPU

#define __syncthreads() fastres_sim_syncthreads(__FILE__, __LINE__)
#define __shfl_sync(...) ::fastres_sim::shfl(FASTRES_SIM_SHFL_IDX, __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_up_sync(...) ::fastres_sim::shfl(FASTRES_SIM_SHFL_UP, __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) ::fastres_sim::shfl(FASTRES_SIM_SHFL_DOWN, __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_xor_sync(...) ::fastres_sim::shfl(FASTRES_SIM_SHFL_XOR, __FILE__, __LINE__, __VA_ARGS__)

namespace fastres_sim {

template <typename T>
inline T shfl(int op, const char* file, int line, unsigned int mask, T value, int arg, int width = 32) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "shuffles move 4- or 8-byte values");
  unsigned long long bits = 0;
  __builtin_memcpy(&bits, &value, sizeof value);
  bits = fastres_sim_shfl(op, mask, bits, arg, width, file, line);
  T out;
  __builtin_memcpy(&out, &bits, sizeof out);
  return out;
}

// The type code of a kernel parameter (top-level const and __restrict__ are not part of it).
template <typename T>
struct TypeCode {
  static constexpr int value = FASTRES_SIM_OTHER;
};
template <typename T>
struct TypeCode<T*> {
  static constexpr int value = FASTRES_SIM_PTR;
};
template <>
struct TypeCode<long long> {  // int64_t under __CUDACC_RTC__ (csrc/common.h)
  static constexpr int value = FASTRES_SIM_I64;
};
template <>
struct TypeCode<int> {
  static constexpr int value = FASTRES_SIM_I32;
};
template <>
struct TypeCode<float> {
  static constexpr int value = FASTRES_SIM_F32;
};

template <typename T>
inline T from_bits(unsigned long long bits) {
  if constexpr (TypeCode<T>::value == FASTRES_SIM_PTR) {
    return reinterpret_cast<T>(bits);
  } else if constexpr (TypeCode<T>::value == FASTRES_SIM_I64) {
    return static_cast<long long>(bits);
  } else if constexpr (TypeCode<T>::value == FASTRES_SIM_I32) {
    return static_cast<int>(static_cast<unsigned int>(bits));
  } else {
    static_assert(TypeCode<T>::value == FASTRES_SIM_F32, "kernel parameters: pointers, int64_t, int or float");
    const unsigned int u = static_cast<unsigned int>(bits);
    T f;
    __builtin_memcpy(&f, &u, sizeof f);
    return f;
  }
}

template <unsigned... I>
struct Seq {};
template <unsigned N, unsigned... I>
struct MakeSeq : MakeSeq<N - 1, N - 1, I...> {};
template <unsigned... I>
struct MakeSeq<0, I...> {
  using type = Seq<I...>;
};

template <auto F>
struct Kernel;
template <typename... P, void (*F)(P...)>
struct Kernel<F> {
  static constexpr int types[sizeof...(P) + 1] = {TypeCode<P>::value..., -1};
  template <unsigned... I>
  static void call(const unsigned long long* args, Seq<I...>) {
    F(from_bits<P>(args[I])...);
  }
  static void invoke(const unsigned long long* args) { call(args, typename MakeSeq<sizeof...(P)>::type{}); }
  static constexpr fastres_sim_kernel info(const char* name) {
    return fastres_sim_kernel{name, static_cast<int>(sizeof...(P)), types, &invoke};
  }
};

}  // namespace fastres_sim
