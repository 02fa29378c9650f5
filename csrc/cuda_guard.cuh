// cuda_guard.cuh: DeviceGuard, which makes a device current for a launcher's scope.
//
// ops.py already runs launchers under torch.cuda.device(...); this guards other callers and
// restores the caller's device afterwards.
#pragma once

#include <cuda_runtime.h>

#include "common.h"

namespace fastres {

struct DeviceGuard {
  int previous = -1;
  explicit DeviceGuard(int device) {
    CUDA_CHECK(cudaGetDevice(&previous));
    if (previous != device) CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() {
    int current = -1;
    if (cudaGetDevice(&current) == cudaSuccess && current != previous) cudaSetDevice(previous);
  }
};

}  // namespace fastres
