"""fastres.kernels: the native kernels (fastres._C) behind one door, the path each op takes on each device,
and the flat memory layout they run over; the lowest layer: imports nothing of fastres but FastresError.

  ops        the only door to the kernels: checks tensors, picks native CPU/CUDA, run-time compiled or torch
  checks     the argument checks every path of an op shares
  launches   every native call and CUDA launch of the ops, described once (native, rtc and sim read it)
  paths      which implementation an op runs on a device, and why
  rtc        the CUDA kernels compiled at run time (fastres's NVRTC; CuPy loads and launches), for installs without nvcc
  nvrtc      NVRTC through ctypes: CUDA source to PTX and cubins on any machine
  sim        the same CUDA kernels executed on the CPU (threads as fibers, UBSan): the GPU's code tested in CI
  cache      the folder where rtc and sim keep what they build
  torch_ops  every op written with plain torch ops (the torch path, and the tests' second opinion)
  flat       one flat buffer for parameters, gradients and momentum (params and .grad are views)
"""
