// sim_abi.h: what fastres's CPU executor of CUDA kernels (sim_runtime.cpp) and the kernels
// compiled for it (cuda_sim.h) share. Built-in C types only: the kernel side is compiled the
// way NVRTC compiles it, without a single standard header (csrc/common.h).
//
// Defines:
//   FASTRES_SIM_PTR, _I64, _I32, _F32     type codes of a kernel parameter (fastres/kernels/sim.py
//                                         passes every argument as 64 bits with its code)
//   FASTRES_SIM_SHFL_IDX, _UP, _DOWN, _XOR   the four warp shuffles
//   fastres_sim_dim3, fastres_sim_now     the running thread's threadIdx, blockIdx, blockDim,
//                                         gridDim (the scheduler writes them at every switch)
//   fastres_sim_kernel                    one kernel of a module: name, parameter codes, invoker
//   fastres_sim_syncthreads, fastres_sim_shfl   what __syncthreads and __shfl_*_sync call
#pragma once

#define FASTRES_SIM_PTR 0
#define FASTRES_SIM_I64 1
#define FASTRES_SIM_I32 2
#define FASTRES_SIM_F32 3
#define FASTRES_SIM_OTHER 9

#define FASTRES_SIM_SHFL_IDX 0
#define FASTRES_SIM_SHFL_UP 1
#define FASTRES_SIM_SHFL_DOWN 2
#define FASTRES_SIM_SHFL_XOR 3

extern "C" {

struct fastres_sim_dim3 {
  unsigned int x, y, z;
};

struct fastres_sim_position {
  fastres_sim_dim3 thread, block, block_dim, grid_dim;
};

// The running thread's position. Written by the scheduler before it switches to a fiber; kernel
// code reads it through threadIdx & co. Every switch happens inside a call the compiler cannot
// see into, so no stale copy survives one.
extern fastres_sim_position fastres_sim_now;

struct fastres_sim_kernel {
  const char* name;         // the name expression ("fastres::rtc::pack_kernel<1>")
  int num_params;
  const int* param_types;   // FASTRES_SIM_* code of each parameter
  void (*invoke)(const unsigned long long* args);  // calls the kernel with args[i] as parameter i
};

void fastres_sim_syncthreads(const char* file, int line);
unsigned long long fastres_sim_shfl(int op, unsigned int mask, unsigned long long bits, int arg,
                                    int width, const char* file, int line);

}  // extern "C"
