// module.cpp: the pybind11 module fastres._C. Reached only through fastres/kernels/ops.py.
//
// Defines (Python names):
//   build_info()                    dict: what this build holds (cuda, cuda_archs, openmp, ...)
//   cuda_device_count()             GPUs the CUDA runtime sees; 0 without CUDA, driver or GPU
//   cuda_driver_version()           CUDA version the driver supports (13000 = 13.0); 0 without
//                                   a driver or without CUDA kernels
//   sync_check(), set_sync_check(on)   FASTRES_SYNC_CHECK: sync and check after every launch
//   SEGMENT_CHUNK                   elements per chunk of the segment chunk table
//   segment_chunk_count, segment_chunk_table_size, fill_segment_chunk_table   (segments.h)
//   segment_sq_norms_cpu, segment_sq_norms_cuda (CUDA builds only)  (segment_sq_norms.h)
//   fused_step_cpu, fused_step_cuda (CUDA builds only)  fused LARS / momentum SGD (lars.h)
//   wire_pack_cpu, wire_unpack_cpu, wire_pack_cuda, wire_unpack_cuda (CUDA builds only)
//                                   fp32 <-> fp32/fp16/bf16 wire format of the all-reduce (wire.h)
//
// Every buffer is passed as an address (Python int, uintptr_t), never as a torch tensor:
// the module does not link libtorch (docs/design.md, decision 1). Errors: std::invalid_argument
// becomes ValueError, std::runtime_error (CUDA_CHECK) becomes RuntimeError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common.h"
#include "lars.h"
#include "segment_sq_norms.h"
#include "segments.h"
#include "wire.h"

#if defined(FASTRES_WITH_OPENMP)
#include <omp.h>
#endif

namespace py = pybind11;
using namespace fastres;

#ifndef FASTRES_VERSION
#define FASTRES_VERSION ""
#endif
#ifndef FASTRES_CXX_COMPILER
#define FASTRES_CXX_COMPILER "unknown"
#endif

namespace {

template <typename T>
T* as_ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

std::vector<std::string> split_archs(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : s) {
    if (ch == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(ch);
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

py::dict build_info() {
  py::dict d;
  d["version"] = std::string(FASTRES_VERSION);
  d["compiler"] = std::string(FASTRES_CXX_COMPILER);
  d["segment_chunk"] = kSegmentChunk;
#if defined(FASTRES_WITH_OPENMP)
  d["openmp"] = true;
  d["openmp_version"] = static_cast<int>(_OPENMP);
#else
  d["openmp"] = false;
  d["openmp_version"] = py::none();
#endif
#if defined(FASTRES_WITH_CUDA)
  d["cuda"] = true;
  d["cuda_archs"] = split_archs(FASTRES_CUDA_ARCHS);
  d["cuda_version"] = static_cast<int>(CUDART_VERSION);
  d["cuda_runtime"] = std::string("static");
#else
  d["cuda"] = false;
  d["cuda_archs"] = std::vector<std::string>{};
  d["cuda_version"] = py::none();
  d["cuda_runtime"] = py::none();
#endif
  return d;
}

int cuda_device_count() {
#if defined(FASTRES_WITH_CUDA)
  int n = 0;
  // No driver (cudaErrorInsufficientDriver), no GPU (cudaErrorNoDevice), ...: none usable.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear it, so that it does not surface at a later check
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

int cuda_driver_version() {
#if defined(FASTRES_WITH_CUDA)
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess) {  // 0 (and success) when no driver is installed
    (void)cudaGetLastError();
    return 0;
  }
  return v;
#else
  return 0;
#endif
}

void check_sq_norms_args(int dtype, uintptr_t flat, uintptr_t table, int64_t S, int64_t C,
                         uintptr_t partials, uintptr_t out) {
  check_arg(dtype == kFloat32,
            "flat: dtype code " + std::to_string(dtype) + " is not supported (float32 only)");
  check_arg(S >= 0 && C >= 0, "num_segments and num_chunks must be >= 0");
  check_arg(table != 0, "table: null address");
  check_arg(C == 0 || (flat != 0 && partials != 0), "flat, partials: null address");
  check_arg(S == 0 || out != 0, "out: null address");
  check_arg(flat % alignof(float) == 0, "flat: address is not 4-byte aligned");
}

void check_step_args(uintptr_t w, uintptr_t g, uintptr_t m, uintptr_t table, int64_t S, int64_t C,
                     uintptr_t seg_group, uintptr_t seg_flags, uintptr_t hparams,
                     uintptr_t partials, uintptr_t sq_avg, int mode) {
  check_arg(S >= 0 && C >= 0, "num_segments and num_chunks must be >= 0");
  check_arg(table != 0 && seg_group != 0 && seg_flags != 0 && hparams != 0,
            "table, seg_group, seg_flags, hparams: null address");
  check_arg(C == 0 || (w != 0 && g != 0 && m != 0), "params, grads, momentum: null address");
  check_arg(!(mode & kStepLars) || C == 0 || partials != 0, "partials: null address");
  check_arg(w % 4 == 0 && g % 4 == 0 && m % 4 == 0,
            "params, grads, momentum: addresses must be 4-byte aligned");
  check_arg((mode & ~(kStepLars | kStepLrAfterMomentum | kStepNesterov | kStepWNormCached |
                      kStepRmsprop)) == 0,
            "mode: unknown bits " + std::to_string(mode));
  check_arg(!(mode & kStepRmsprop) || C == 0 || (sq_avg != 0 && sq_avg % 4 == 0),
            "sq_avg: null or unaligned address with STEP_RMSPROP");
}

bool known_dtype(int dtype) { return dtype == kFloat32 || dtype == kFloat16 || dtype == kBFloat16; }

int64_t dtype_size(int dtype) { return dtype == kFloat32 ? 4 : 2; }

// src and dst of n elements: either disjoint, or the same address with an fp32 wire.
void check_wire_args(uintptr_t src, int src_dtype, uintptr_t dst, int dst_dtype, int64_t n) {
  check_arg(n >= 0, "n: must be >= 0, got " + std::to_string(n));
  check_arg(known_dtype(src_dtype), "src: unknown dtype code " + std::to_string(src_dtype));
  check_arg(known_dtype(dst_dtype), "dst: unknown dtype code " + std::to_string(dst_dtype));
  if (n == 0) return;
  check_arg(src != 0, "src: null address");
  check_arg(dst != 0, "dst: null address");
  check_arg(src % dtype_size(src_dtype) == 0, "src: address is not aligned to its dtype");
  check_arg(dst % dtype_size(dst_dtype) == 0, "dst: address is not aligned to its dtype");
  const uintptr_t src_end = src + static_cast<uintptr_t>(n * dtype_size(src_dtype));
  const uintptr_t dst_end = dst + static_cast<uintptr_t>(n * dtype_size(dst_dtype));
  const bool overlap = src < dst_end && dst < src_end;
  check_arg(!overlap || (src == dst && src_dtype == kFloat32 && dst_dtype == kFloat32),
            "dst: overlaps src; only an fp32 wire may run in place (src == dst)");
}

// The norms of wire_unpack: table == 0 means none. On the host (CPU kernel) the chunk table
// is checked against lo/hi; a device table is not read (it would sync).
WireNorms wire_norms(uintptr_t table, int64_t S, int64_t C, int64_t lo, int64_t hi,
                     uintptr_t partials, uintptr_t out, int64_t n, bool host) {
  WireNorms nm;
  if (table == 0) return nm;
  check_arg(S >= 0 && C >= 0, "chunks: num_segments and num_chunks must be >= 0");
  check_arg(0 <= lo && lo <= hi && hi <= n,
            "chunks: covered range [" + std::to_string(lo) + ", " + std::to_string(hi) +
                ") is not inside dst (n = " + std::to_string(n) + ")");
  check_arg(C == 0 || partials != 0, "partials: null address");
  check_arg(S == 0 || out != 0, "out: null address");
  if (host && C > 0) {
    const SegmentChunks t = segment_chunks_view(as_ptr<const int64_t>(table), S, C);
    check_arg(t.chunk_begin[0] == lo && t.chunk_end[C - 1] == hi,
              "chunks: the chunk table does not cover [lo, hi)");
  }
  nm.table = as_ptr<const int64_t>(table);
  nm.num_segments = S;
  nm.num_chunks = C;
  nm.lo = lo;
  nm.hi = hi;
  nm.partials = as_ptr<float>(partials);
  nm.out = as_ptr<float>(out);
  return nm;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastres native kernels (no libtorch): use them through fastres.ops";
  m.attr("SEGMENT_CHUNK") = kSegmentChunk;

  m.def("build_info", &build_info, "What this build of fastres._C holds.");
  m.def("cuda_device_count", &cuda_device_count,
        "Number of GPUs the CUDA runtime sees; 0 when built without CUDA or without a driver.");

  m.def("cuda_driver_version", &cuda_driver_version,
        "CUDA version the installed driver supports (e.g. 13000); 0 without a driver or when built "
        "without CUDA.");
  m.def("sync_check", &sync_check,
        "Whether CUDA launchers synchronise and check after every launch (FASTRES_SYNC_CHECK).");
  m.def("set_sync_check", &set_sync_check, py::arg("on"),
        "Turn the per-launch synchronise-and-check of FASTRES_SYNC_CHECK on or off.");

  m.def(
      "segment_chunk_count",
      [](uintptr_t offsets, int64_t num_segments) {
        check_arg(offsets != 0, "offsets: null address");
        return segment_chunk_count(as_ptr<const int64_t>(offsets), num_segments);
      },
      py::arg("offsets"), py::arg("num_segments"),
      "Chunks of the segments given by host int64 offsets[0..S]; validates the offsets.");
  m.def("segment_chunk_table_size", &segment_chunk_table_size, py::arg("num_segments"),
        py::arg("num_chunks"), "int64 elements of a chunk table (segments.h).");
  m.def(
      "fill_segment_chunk_table",
      [](uintptr_t offsets, int64_t num_segments, int64_t num_chunks, uintptr_t table) {
        check_arg(offsets != 0 && table != 0, "offsets, table: null address");
        fill_segment_chunk_table(as_ptr<const int64_t>(offsets), num_segments, num_chunks,
                                 as_ptr<int64_t>(table));
      },
      py::arg("offsets"), py::arg("num_segments"), py::arg("num_chunks"), py::arg("table"),
      "Writes the chunk table (host memory) for host int64 offsets[0..S].");

  m.def(
      "segment_sq_norms_cpu",
      [](uintptr_t flat, int dtype, uintptr_t table, int64_t S, int64_t C, uintptr_t partials,
         uintptr_t out, int num_threads) {
        check_sq_norms_args(dtype, flat, table, S, C, partials, out);
        segment_sq_norms_cpu(as_ptr<const float>(flat), as_ptr<const int64_t>(table), S, C,
                             as_ptr<float>(partials), as_ptr<float>(out), num_threads);
      },
      py::arg("flat"), py::arg("dtype"), py::arg("table"), py::arg("num_segments"),
      py::arg("num_chunks"), py::arg("partials"), py::arg("out"), py::arg("num_threads"),
      py::call_guard<py::gil_scoped_release>(),
      "out[s] = sum of flat^2 over segment s; all addresses in host memory.");

#if defined(FASTRES_WITH_CUDA)
  m.def(
      "segment_sq_norms_cuda",
      [](uintptr_t flat, int dtype, uintptr_t table, int64_t S, int64_t C, uintptr_t partials,
         uintptr_t out, int device, uintptr_t stream) {
        check_sq_norms_args(dtype, flat, table, S, C, partials, out);
        segment_sq_norms_cuda(as_ptr<const float>(flat), as_ptr<const int64_t>(table), S, C,
                              as_ptr<float>(partials), as_ptr<float>(out), device, stream);
      },
      py::arg("flat"), py::arg("dtype"), py::arg("table"), py::arg("num_segments"),
      py::arg("num_chunks"), py::arg("partials"), py::arg("out"), py::arg("device"),
      py::arg("stream"), py::call_guard<py::gil_scoped_release>(),
      "Same as segment_sq_norms_cpu on `device`, launched on `stream` (a cudaStream_t); "
      "asynchronous: no host sync.");
#endif

  m.attr("STEP_LARS") = static_cast<int>(kStepLars);
  m.attr("STEP_LR_AFTER_MOMENTUM") = static_cast<int>(kStepLrAfterMomentum);
  m.attr("STEP_NESTEROV") = static_cast<int>(kStepNesterov);
  m.attr("STEP_W_NORM_CACHED") = static_cast<int>(kStepWNormCached);
  m.attr("STEP_RMSPROP") = static_cast<int>(kStepRmsprop);
  m.attr("SEG_ADAPT") = static_cast<int>(kSegAdapt);
  m.attr("SEG_DECAY") = static_cast<int>(kSegDecay);
  m.attr("HPARAM_STRIDE") = kHparamStride;
  m.def(
      "fused_step_cpu",
      [](uintptr_t w, uintptr_t g, uintptr_t mom, uintptr_t table, int64_t S, int64_t C,
         uintptr_t seg_group, uintptr_t seg_flags, uintptr_t hparams, uintptr_t found_inf,
         int mode, float eps, uintptr_t partials, uintptr_t wsq_out, uintptr_t sq_avg,
         uintptr_t coefs, int num_threads) {
        check_step_args(w, g, mom, table, S, C, seg_group, seg_flags, hparams, partials, sq_avg,
                        mode);
        check_arg(S == 0 || coefs != 0, "coefs: null address");
        fused_step_cpu(as_ptr<float>(w), as_ptr<const float>(g), as_ptr<float>(mom),
                       as_ptr<const int64_t>(table), S, C, as_ptr<const int32_t>(seg_group),
                       as_ptr<const int32_t>(seg_flags), as_ptr<const float>(hparams),
                       as_ptr<const float>(found_inf), mode, eps, as_ptr<float>(partials),
                       as_ptr<float>(wsq_out), as_ptr<float>(sq_avg), as_ptr<float>(coefs),
                       num_threads);
      },
      py::arg("params"), py::arg("grads"), py::arg("momentum"), py::arg("table"),
      py::arg("num_segments"), py::arg("num_chunks"), py::arg("seg_group"), py::arg("seg_flags"),
      py::arg("hparams"), py::arg("found_inf"), py::arg("mode"), py::arg("eps"),
      py::arg("partials"), py::arg("wsq_out"), py::arg("sq_avg"), py::arg("coefs"),
      py::arg("num_threads"),
      py::call_guard<py::gil_scoped_release>(),
      "Fused LARS / momentum-SGD step (lars.h); all addresses in host memory, found_inf and sq_avg "
      "(RMSprop warm-up, STEP_RMSPROP) may be 0.");

#if defined(FASTRES_WITH_CUDA)
  m.def(
      "fused_step_cuda",
      [](uintptr_t w, uintptr_t g, uintptr_t mom, uintptr_t table, int64_t S, int64_t C,
         uintptr_t seg_group, uintptr_t seg_flags, uintptr_t hparams, uintptr_t found_inf,
         int mode, float eps, uintptr_t partials, uintptr_t wsq_out, uintptr_t sq_avg,
         int device, uintptr_t stream) {
        check_step_args(w, g, mom, table, S, C, seg_group, seg_flags, hparams, partials, sq_avg,
                        mode);
        fused_step_cuda(as_ptr<float>(w), as_ptr<const float>(g), as_ptr<float>(mom),
                        as_ptr<const int64_t>(table), S, C, as_ptr<const int32_t>(seg_group),
                        as_ptr<const int32_t>(seg_flags), as_ptr<const float>(hparams),
                        as_ptr<const float>(found_inf), mode, eps, as_ptr<float>(partials),
                        as_ptr<float>(wsq_out), as_ptr<float>(sq_avg), device, stream);
      },
      py::arg("params"), py::arg("grads"), py::arg("momentum"), py::arg("table"),
      py::arg("num_segments"), py::arg("num_chunks"), py::arg("seg_group"), py::arg("seg_flags"),
      py::arg("hparams"), py::arg("found_inf"), py::arg("mode"), py::arg("eps"),
      py::arg("partials"), py::arg("wsq_out"), py::arg("sq_avg"), py::arg("device"),
      py::arg("stream"),
      py::call_guard<py::gil_scoped_release>(),
      "Same as fused_step_cpu on `device`, launched on `stream`; two launches, no host sync.");
#endif

  m.def(
      "wire_pack_cpu",
      [](uintptr_t src, uintptr_t dst, int dst_dtype, int64_t n, float scale, int num_threads) {
        check_wire_args(src, kFloat32, dst, dst_dtype, n);
        wire_pack_cpu(as_ptr<const float>(src), as_ptr<void>(dst), dst_dtype, n, scale,
                      num_threads);
      },
      py::arg("src"), py::arg("dst"), py::arg("dst_dtype"), py::arg("n"), py::arg("scale"),
      py::arg("num_threads"), py::call_guard<py::gil_scoped_release>(),
      "dst[i] = wire(src[i] * scale) for i < n: fp32 src, dst of dtype code dst_dtype, "
      "round to nearest even; host memory; in place only for an fp32 wire.");
  m.def(
      "wire_unpack_cpu",
      [](uintptr_t src, int src_dtype, uintptr_t dst, int64_t n, float scale, uintptr_t table,
         int64_t S, int64_t C, int64_t lo, int64_t hi, uintptr_t partials, uintptr_t out,
         int num_threads) {
        check_wire_args(src, src_dtype, dst, kFloat32, n);
        const WireNorms nm = wire_norms(table, S, C, lo, hi, partials, out, n, true);
        wire_unpack_cpu(as_ptr<const void>(src), src_dtype, as_ptr<float>(dst), n, scale, nm,
                        num_threads);
      },
      py::arg("src"), py::arg("src_dtype"), py::arg("dst"), py::arg("n"), py::arg("scale"),
      py::arg("table"), py::arg("num_segments"), py::arg("num_chunks"), py::arg("lo"),
      py::arg("hi"), py::arg("partials"), py::arg("out"), py::arg("num_threads"),
      py::call_guard<py::gil_scoped_release>(),
      "dst[i] = float(src[i]) * scale for i < n (fp32 dst); with a chunk table (table != 0, "
      "covering dst[lo, hi)) also out[s] = sum of dst^2 over segment s, bit-identical to "
      "segment_sq_norms_cpu. Host memory.");

#if defined(FASTRES_WITH_CUDA)
  m.def(
      "wire_pack_cuda",
      [](uintptr_t src, uintptr_t dst, int dst_dtype, int64_t n, float scale, int device,
         uintptr_t stream) {
        check_wire_args(src, kFloat32, dst, dst_dtype, n);
        wire_pack_cuda(as_ptr<const float>(src), as_ptr<void>(dst), dst_dtype, n, scale, device,
                       stream);
      },
      py::arg("src"), py::arg("dst"), py::arg("dst_dtype"), py::arg("n"), py::arg("scale"),
      py::arg("device"), py::arg("stream"), py::call_guard<py::gil_scoped_release>(),
      "Same as wire_pack_cpu on `device`, launched on `stream`; asynchronous: no host sync.");
  m.def(
      "wire_unpack_cuda",
      [](uintptr_t src, int src_dtype, uintptr_t dst, int64_t n, float scale, uintptr_t table,
         int64_t S, int64_t C, int64_t lo, int64_t hi, uintptr_t partials, uintptr_t out,
         int device, uintptr_t stream) {
        check_wire_args(src, src_dtype, dst, kFloat32, n);
        const WireNorms nm = wire_norms(table, S, C, lo, hi, partials, out, n, false);
        wire_unpack_cuda(as_ptr<const void>(src), src_dtype, as_ptr<float>(dst), n, scale, nm,
                         device, stream);
      },
      py::arg("src"), py::arg("src_dtype"), py::arg("dst"), py::arg("n"), py::arg("scale"),
      py::arg("table"), py::arg("num_segments"), py::arg("num_chunks"), py::arg("lo"),
      py::arg("hi"), py::arg("partials"), py::arg("out"), py::arg("device"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>(),
      "Same as wire_unpack_cpu on `device`, launched on `stream` (norms bit-identical to "
      "segment_sq_norms_cuda); asynchronous: no host sync.");
#endif
}
