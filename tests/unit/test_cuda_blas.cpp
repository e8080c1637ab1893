// The dlopen'ed cuBLAS of the CUDA backend, where no GPU may be: loading
// either works (a GPU and cuBLAS are here) or throws woq::Error naming
// cuBLAS and what failed, never crashes or aborts.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "backend/cuda_blas.h"
#include "runtime/error.h"

TEST(CudaBlas, LoadsOrSaysWhyNot) {
  try {
    woq::CudaBlas blas(nullptr);
    std::printf("cuBLAS loaded and a handle created: this machine has a GPU (the gpu tests use it)\n");
  } catch (const woq::Error& e) {
    std::printf("not loaded: %s\n", e.what());
    EXPECT_NE(std::string(e.what()).find("cuBLAS"), std::string::npos) << e.what();
    EXPECT_TRUE(e.status() == woq::Status::Unsupported || e.status() == woq::Status::Internal) << e.what();
  }
}
