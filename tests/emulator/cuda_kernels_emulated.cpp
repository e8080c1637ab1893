// The CUDA kernels and their launchers (kernels/cuda/matmul.cu) compiled as
// host C++ on the warp emulator, for the emulated CUDA backend that
// woq_gpu_tests_emulated links in place of the real one.
#include "tests/emulator/cuda_emulator.h"

// clang-format off
#include "kernels/cuda/matmul.cu"
// clang-format on
