// wire_cuda.cu: the CUDA kernels of the wire format (see wire.h).
//
// Defines:
//   pack_kernel<D>               grid-stride dst[i] = wire(src[i] * scale)
//   unpack_kernel<D>             grid-stride dst[i] = float(src[i]) * scale, over [begin, end)
//   unpack_chunks_kernel<D>      one block per segment chunk: unpack it and write partials[c]
//                                through cuda_common.cuh's chunk_visit_sq (stage 1's order)
//   segment_partials_sum_kernel  stage 2 (segment_sq_norms_cuda.cuh, the same kernel)
//   wire_pack_cuda, wire_unpack_cuda   host launchers (nvcc only) on the caller's stream, no sync
//
// Loads and stores: groups of 4 elements (a float4 of fp32, 8 bytes of fp16/bf16) from the
// first 16-byte boundary of the fp32 side on; the up to 3 elements before it (head) and after
// the last group (tail) are scalar. The wire side is vectorised too when it is aligned at the
// same element (true for buckets carved from one flat buffer); otherwise it is read or written
// element by element inside the same loop (still coalesced).
//
// unpack_chunks_kernel sums the squares of what it writes through chunk_visit_sq, the traversal
// and order of chunk_sq_sums_kernel, and stage 2 is the same kernel: the norms equal
// segment_sq_norms(dst) on the GPU bit for bit (tests/test_wire.py checks it).
//
// One source for nvcc and NVRTC: under NVRTC (__CUDACC_RTC__) only the kernels are compiled,
// and fastres/kernels/rtc.py launches them with the same grids as the launchers below (coupled).
#include "common.h"
#include "cuda_common.cuh"
#include "segment_sq_norms_cuda.cuh"
#include "segments.h"
#include "wire.h"

namespace fastres {

constexpr int kWireThreads = 256;       // grid-stride kernels
constexpr int64_t kMaxBlocks = 65535;   // grid-stride: enough blocks to fill any GPU

FASTRES_KERNELS_BEGIN

// 4 wire elements: a float4 for fp32, 8 bytes for fp16/bf16.
template <typename W>
struct Vec4;
template <>
struct Vec4<float> {
  using type = float4;
};
template <>
struct Vec4<uint16_t> {
  using type = ushort4;
};

template <int D>
__device__ __forceinline__ void load4(const typename WireType<D>::type* p, bool vec, float (&x)[4]) {
  using W = typename WireType<D>::type;
  if (vec) {
    const auto v = *reinterpret_cast<const typename Vec4<W>::type*>(p);
    x[0] = from_wire<D>(v.x);
    x[1] = from_wire<D>(v.y);
    x[2] = from_wire<D>(v.z);
    x[3] = from_wire<D>(v.w);
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k) x[k] = from_wire<D>(p[k]);
  }
}

template <int D>
__device__ __forceinline__ void store4(typename WireType<D>::type* p, bool vec, const float (&x)[4]) {
  using W = typename WireType<D>::type;
  if (vec) {
    typename Vec4<W>::type v;
    v.x = to_wire<D>(x[0]);
    v.y = to_wire<D>(x[1]);
    v.z = to_wire<D>(x[2]);
    v.w = to_wire<D>(x[3]);
    *reinterpret_cast<typename Vec4<W>::type*>(p) = v;
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k) p[k] = to_wire<D>(x[k]);
  }
}

template <int D>
__global__ void __launch_bounds__(kWireThreads)
pack_kernel(const float* src, typename WireType<D>::type* dst, int64_t n, float scale) {
  using W = typename WireType<D>::type;
  const int64_t head = head_of(src, n);
  const int64_t nvec = (n - head) >> 2;
  const bool vec = aligned_to(dst + head, 4 * sizeof(W));  // uniform over the grid
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  if (tid < head) dst[tid] = to_wire<D>(src[tid] * scale);
  const float4* v = reinterpret_cast<const float4*>(src + head);
  for (int64_t i = tid; i < nvec; i += stride) {
    const float4 a = v[i];  // in place (fp32): read before the write of the same 16 bytes
    const float x[4] = {a.x * scale, a.y * scale, a.z * scale, a.w * scale};
    store4<D>(dst + head + 4 * i, vec, x);
  }
  const int64_t tail = head + 4 * nvec + tid;
  if (tail < n) dst[tail] = to_wire<D>(src[tail] * scale);
}

template <int D>
__global__ void __launch_bounds__(kWireThreads)
unpack_kernel(const typename WireType<D>::type* src, float* dst, int64_t begin, int64_t end,
              float scale) {
  using W = typename WireType<D>::type;
  src += begin;
  dst += begin;
  const int64_t n = end - begin;
  const int64_t head = head_of(dst, n);
  const int64_t nvec = (n - head) >> 2;
  const bool vec = aligned_to(src + head, 4 * sizeof(W));
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  if (tid < head) dst[tid] = from_wire<D>(src[tid]) * scale;
  float4* v = reinterpret_cast<float4*>(dst + head);
  for (int64_t i = tid; i < nvec; i += stride) {
    float x[4];
    load4<D>(src + head + 4 * i, vec, x);
    v[i] = make_float4(x[0] * scale, x[1] * scale, x[2] * scale, x[3] * scale);
  }
  const int64_t tail = head + 4 * nvec + tid;
  if (tail < n) dst[tail] = from_wire<D>(src[tail]) * scale;
}

template <int D>
__global__ void __launch_bounds__(kChunkThreads)
unpack_chunks_kernel(const typename WireType<D>::type* src, float* dst, float scale,
                     const int64_t* __restrict__ table, int64_t S, int64_t C,
                     float* __restrict__ partials) {
  using W = typename WireType<D>::type;
  const SegmentChunks t = segment_chunks_view(table, S, C);
  const int64_t c = blockIdx.x;
  const int64_t begin = t.chunk_begin[c];
  const int n = static_cast<int>(t.chunk_end[c] - begin);  // <= kSegmentChunk
  float* p = dst + begin;
  const W* q = src + begin;
  // chunk_visit_sq splits the chunk at dst's 16-byte boundary (the buffer segment_sq_norms
  // would read); the wire side is vectorised when aligned at the same element
  const bool vec = aligned_to(q + head_of(p, n), 4 * sizeof(W));
  const float acc = chunk_visit_sq(
      p, n,
      [&](int k) {
        float x[4];
        load4<D>(q + k, vec, x);
        const float4 y = make_float4(x[0] * scale, x[1] * scale, x[2] * scale, x[3] * scale);
        *reinterpret_cast<float4*>(p + k) = y;
        return y;
      },
      [&](int k) {
        const float y = from_wire<D>(q[k]) * scale;
        p[k] = y;
        return y;
      });
  const float sum = block_sum_all(acc);
  if (threadIdx.x == 0) partials[c] = sum;
}

FASTRES_KERNELS_END

#if !defined(__CUDACC_RTC__)
namespace {

unsigned grid_for(int64_t n) {
  const int64_t blocks = CEIL_DIV(CEIL_DIV(n, int64_t{4}), int64_t{kWireThreads});
  return static_cast<unsigned>(blocks < kMaxBlocks ? (blocks > 0 ? blocks : 1) : kMaxBlocks);
}

template <int D>
void launch_pack(const float* src, void* dst, int64_t n, float scale, cudaStream_t st) {
  pack_kernel<D><<<grid_for(n), kWireThreads, 0, st>>>(
      src, static_cast<typename WireType<D>::type*>(dst), n, scale);
  CUDA_CHECK_LAUNCH("pack_kernel", st);
}

template <int D>
void launch_unpack(const void* src, float* dst, int64_t n, float scale, const WireNorms& nm,
                   cudaStream_t st) {
  const auto* s = static_cast<const typename WireType<D>::type*>(src);
  const int64_t lo = nm.table ? nm.lo : n;  // without norms everything is a "gap"
  const int64_t hi = nm.table ? nm.hi : n;
  if (lo > 0) {
    unpack_kernel<D><<<grid_for(lo), kWireThreads, 0, st>>>(s, dst, 0, lo, scale);
    CUDA_CHECK_LAUNCH("unpack_kernel", st);
  }
  if (hi < n) {
    unpack_kernel<D><<<grid_for(n - hi), kWireThreads, 0, st>>>(s, dst, hi, n, scale);
    CUDA_CHECK_LAUNCH("unpack_kernel", st);
  }
  if (nm.table == nullptr || nm.num_segments == 0) return;
  const int64_t S = nm.num_segments, C = nm.num_chunks;
  if (C > 0) {
    unpack_chunks_kernel<D><<<static_cast<unsigned>(C), kChunkThreads, 0, st>>>(
        s, dst, scale, nm.table, S, C, nm.partials);
    CUDA_CHECK_LAUNCH("unpack_chunks_kernel", st);
  }
  // Stage 2 reads the partials of stage 1: same stream, so ordered after it.
  segment_partials_sum_kernel<<<static_cast<unsigned>(S), kSegmentThreads, 0, st>>>(
      nm.partials, nm.table, S, C, nm.out);
  CUDA_CHECK_LAUNCH("segment_partials_sum_kernel", st);
}

}  // namespace

void wire_pack_cuda(const float* src, void* dst, int dst_dtype, int64_t n, float scale,
                    int device, uintptr_t stream) {
  check_arg(dst_dtype == kFloat32 || dst_dtype == kFloat16 || dst_dtype == kBFloat16,
            "dst: unknown dtype code " + std::to_string(dst_dtype));
  if (n == 0) return;
  DeviceGuard guard(device);
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  switch (dst_dtype) {
    case kFloat32: return launch_pack<kFloat32>(src, dst, n, scale, st);
    case kFloat16: return launch_pack<kFloat16>(src, dst, n, scale, st);
    default: return launch_pack<kBFloat16>(src, dst, n, scale, st);
  }
}

void wire_unpack_cuda(const void* src, int src_dtype, float* dst, int64_t n, float scale,
                      const WireNorms& norms, int device, uintptr_t stream) {
  check_arg(src_dtype == kFloat32 || src_dtype == kFloat16 || src_dtype == kBFloat16,
            "src: unknown dtype code " + std::to_string(src_dtype));
  check_arg(norms.num_segments < (int64_t{1} << 31) && norms.num_chunks < (int64_t{1} << 31),
            "chunks: too many segments or chunks for one grid");
  if (n == 0 && (norms.table == nullptr || norms.num_segments == 0)) return;
  DeviceGuard guard(device);
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  switch (src_dtype) {
    case kFloat32: return launch_unpack<kFloat32>(src, dst, n, scale, norms, st);
    case kFloat16: return launch_unpack<kFloat16>(src, dst, n, scale, norms, st);
    default: return launch_unpack<kBFloat16>(src, dst, n, scale, norms, st);
  }
}
#endif  // !__CUDACC_RTC__

}  // namespace fastres
